"""The part of Triton Inference Server's ``ModelConfig`` message that lmt_fast writes, as a protobuf schema.

Transcribed (names, types, field numbers, enum values) from triton-inference-server/common
``protobuf/model_config.proto`` (commit 83adf7cf88a2, 2026-07-23; re-checked field by field against it),
so that a written ``config.pbtxt`` is checked by protobuf's own text-format parser:
an unknown field, a wrong type or an unknown enum value fails as it would in the server. Needs only
``protobuf`` (which onnx depends on), not tritonclient.
"""
from __future__ import annotations

from functools import lru_cache

_T = {"string": 9, "int32": 5, "int64": 3, "uint64": 4, "bool": 8, "message": 11, "enum": 14}
_OPTIONAL, _REPEATED = 1, 3

# message -> [(field, number, type, label, type_name)]
_MESSAGES = {
    "ModelTensorReshape": [("shape", 1, "int64", _REPEATED, None)],
    "ModelInput": [
        ("name", 1, "string", _OPTIONAL, None), ("data_type", 2, "enum", _OPTIONAL, ".inference.DataType"),
        ("format", 3, "enum", _OPTIONAL, ".inference.ModelInput.Format"), ("dims", 4, "int64", _REPEATED, None),
        ("reshape", 5, "message", _OPTIONAL, ".inference.ModelTensorReshape"),
        ("is_shape_tensor", 6, "bool", _OPTIONAL, None), ("allow_ragged_batch", 7, "bool", _OPTIONAL, None),
        ("optional", 8, "bool", _OPTIONAL, None)],
    "ModelOutput": [
        ("name", 1, "string", _OPTIONAL, None), ("data_type", 2, "enum", _OPTIONAL, ".inference.DataType"),
        ("dims", 3, "int64", _REPEATED, None), ("label_filename", 4, "string", _OPTIONAL, None),
        ("reshape", 5, "message", _OPTIONAL, ".inference.ModelTensorReshape"),
        ("is_shape_tensor", 6, "bool", _OPTIONAL, None)],
    "ModelInstanceGroup": [
        ("name", 1, "string", _OPTIONAL, None), ("count", 2, "int32", _OPTIONAL, None),
        ("gpus", 3, "int32", _REPEATED, None), ("kind", 4, "enum", _OPTIONAL, ".inference.ModelInstanceGroup.Kind"),
        ("profile", 5, "string", _REPEATED, None)],
    "ModelDynamicBatching": [
        ("preferred_batch_size", 1, "int32", _REPEATED, None),
        ("max_queue_delay_microseconds", 2, "uint64", _OPTIONAL, None),
        ("preserve_ordering", 3, "bool", _OPTIONAL, None)],
    "ModelParameter": [("string_value", 1, "string", _OPTIONAL, None)],
    "ModelConfig": [
        ("name", 1, "string", _OPTIONAL, None), ("platform", 2, "string", _OPTIONAL, None),
        ("max_batch_size", 4, "int32", _OPTIONAL, None),
        ("input", 5, "message", _REPEATED, ".inference.ModelInput"),
        ("output", 6, "message", _REPEATED, ".inference.ModelOutput"),
        ("instance_group", 7, "message", _REPEATED, ".inference.ModelInstanceGroup"),
        ("default_model_filename", 8, "string", _OPTIONAL, None),
        ("dynamic_batching", 11, "message", _OPTIONAL, ".inference.ModelDynamicBatching"),
        ("parameters", 14, "message", _REPEATED, ".inference.ModelConfig.ParametersEntry"),
        ("backend", 17, "string", _OPTIONAL, None)],
}
_ENUMS = {
    "DataType": ["TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64",
                 "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64",
                 "TYPE_STRING", "TYPE_BF16"],
}
_NESTED_ENUMS = {
    "ModelInput": {"Format": ["FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW"]},
    "ModelInstanceGroup": {"Kind": ["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"]},
}


@lru_cache(maxsize=1)
def model_config_class():
    """The generated message class of inference.ModelConfig (the subset above)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FileDescriptorProto(name="lmt_fast_triton_model_config.proto", package="inference",
                                           syntax="proto3")
    for name, values in _ENUMS.items():
        enum = f.enum_type.add(name=name)
        for number, value in enumerate(values):
            enum.value.add(name=value, number=number)
    for name, fields in _MESSAGES.items():
        message = f.message_type.add(name=name)
        for enum_name, values in _NESTED_ENUMS.get(name, {}).items():
            enum = message.enum_type.add(name=enum_name)
            for number, value in enumerate(values):
                enum.value.add(name=value, number=number)
        for field_name, number, kind, label, type_name in fields:
            field = message.field.add(name=field_name, number=number, type=_T[kind], label=label)
            if type_name:
                field.type_name = type_name
        if name == "ModelConfig":  # map<string, ModelParameter> parameters
            entry = message.nested_type.add(name="ParametersEntry")
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, type=_T["string"], label=_OPTIONAL)
            entry.field.add(name="value", number=2, type=_T["message"], label=_OPTIONAL,
                            type_name=".inference.ModelParameter")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


def parse_config(text: str):
    """Parse config.pbtxt text into an inference.ModelConfig message; raises ValueError on format errors."""
    from google.protobuf import text_format

    message = model_config_class()()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ValueError(f"not a valid Triton model config: {exc}") from None
    return message
