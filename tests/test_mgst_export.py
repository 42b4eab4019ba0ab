"""ONNX export of the MGST generator: checked graph, dynamic sizes, onnxruntime vs PyTorch."""
import onnx
import pytest
import torch

from lmt_fast.export.mgst import (
    CONFIG_KEY, check_mgst_onnx, example_inputs, export_mgst_onnx, read_mgst_metadata, run_onnx,
)
from lmt_fast.export.onnx import ExportError
from lmt_fast.models.mgst import MGSTConfig, MGSTGenerator


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(2)
    g = MGSTGenerator(MGSTConfig.small(base_dim=8)).eval()
    x, m = example_inputs(g.config, batch=2, seed=7)
    with torch.no_grad():
        g.set_stored_style(g.style_from_image(x, m), 2)
    return g


def test_stored_style_graph_matches_pytorch(generator, tmp_path):
    path = tmp_path / "purifier.onnx"
    proto = export_mgst_onnx(generator, path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    names = [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]) for i in proto.graph.input]
    assert names == [("image", ["batch", 3, "height", "width"]), ("mask", ["batch", 1, "height", "width"])]
    assert {n.op_type for n in proto.graph.node} >= {"InstanceNormalization", "ReduceSum", "Sqrt"}
    assert check_mgst_onnx(generator, path) < 1e-4
    # another batch and size than traced (dynamic axes), soft mask
    x = torch.rand(1, 3, 48, 80) * 2 - 1
    m = torch.rand(1, 1, 48, 80)
    generator.set_backend("reference")
    with torch.no_grad():
        expected = generator(x, m)
    torch.testing.assert_close(run_onnx(path, (x, m)), expected, atol=1e-4, rtol=0)
    config, contract = read_mgst_metadata(path)
    assert config == generator.config.to_dict() and contract["style"] == "stored"
    assert any(p.key == CONFIG_KEY for p in proto.metadata_props)


def test_style_image_graph_matches_pytorch(generator, tmp_path):
    path = tmp_path / "styled.onnx"
    proto = export_mgst_onnx(generator, path, style="image", dynamic=False)
    assert [i.name for i in proto.graph.input] == ["image", "mask", "style_image", "style_mask"]
    inputs = example_inputs(generator.config, "image", batch=2, seed=3)
    assert check_mgst_onnx(generator, path, style="image", inputs=inputs) < 1e-4
    with pytest.raises(ExportError, match="differ by"):  # the check can fail: another model's weights
        other = MGSTGenerator(generator.config).eval()
        check_mgst_onnx(other, path, style="image", inputs=inputs)
    with pytest.raises(ValueError, match="style must be one of"):
        export_mgst_onnx(generator, style="both")
