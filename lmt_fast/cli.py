"""`lmt-fast`: translate images, inspect the installation, make and convert checkpoints.

User errors (a missing or corrupt image, a bad checkpoint, a mask of the wrong size...) end with one line
on stderr naming the problem and exit code 2; no traceback.
"""
from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
from pathlib import Path

EXIT_USER_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USER_ERROR
    from lmt_fast.export.contract import ContractError
    from lmt_fast.io import CheckpointError, ImageError
    from lmt_fast.translator import TranslatorError

    try:
        return args.run(args) or 0
    except (CheckpointError, ImageError, TranslatorError, ContractError, FileNotFoundError, IsADirectoryError,
            PermissionError) as exc:
        print(f"lmt-fast: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmt-fast", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(title="commands")

    p = sub.add_parser("translate", help="apply an exemplar's local style to an input image")
    p.add_argument("input", help="input image file")
    p.add_argument("exemplar", help="exemplar image file (its style is applied where the mask says)")
    p.add_argument("-o", "--output", required=True, help="output image file (.png, .jpg, ...)")
    p.add_argument("--checkpoint", help="checkpoint directory or .safetensors file, exported .onnx, or TensorRT "
                                        ".plan (default: the embedded model)")
    p.add_argument("--input-mask", help="grayscale PNG at the input's size; replaces the learned input mask")
    p.add_argument("--exemplar-mask", help="grayscale PNG at the exemplar's size; replaces the learned mask")
    p.add_argument("--save-masks", metavar="DIR", help="write input_mask.png and exemplar_mask.png here")
    _add_runtime_options(p)
    p.set_defaults(run=_translate)

    p = sub.add_parser("demo", help="translate the bundled sample portraits into one PNG grid")
    p.add_argument("-o", "--output", default="lmt_fast_demo.png", help="grid image to write (default: %(default)s)")
    p.add_argument("--checkpoint", help="checkpoint directory or .safetensors file (default: the embedded model)")
    p.add_argument("--inputs", nargs="+", help="input images (default: bundled portraits)")
    p.add_argument("--exemplars", nargs="+", help="exemplar images (default: bundled portraits)")
    _add_runtime_options(p)
    p.set_defaults(run=_demo)

    p = sub.add_parser("purify", help="purify a real eye image with MGST (region-wise synthetic style)",
                       description="Make a real eye image look like the synthetic training domain (MGST): "
                                   "the attention region (iris + pupil, white in the mask) and the rest get "
                                   "their own style, the stored synthetic-domain style unless a style image "
                                   "is given.")
    p.add_argument("image", help="eye image file")
    p.add_argument("--mask", help="grayscale PNG at the image's size: iris + pupil white, the rest black "
                                  "(required by region-wise models)")
    p.add_argument("-o", "--output", required=True, help="output image file (.png, .jpg, ...)")
    p.add_argument("--checkpoint", help="MGST checkpoint directory or .safetensors file (default: the embedded model)")
    p.add_argument("--style-image", help="take the region styles from this image instead of the stored style")
    p.add_argument("--style-mask", help="the style image's mask (required with --style-image)")
    _add_runtime_options(p)
    p.set_defaults(run=_purify)

    p = sub.add_parser("info", help="versions, devices and available backends")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_info)

    p = sub.add_parser("init-checkpoint", help="write a freshly initialised (untrained) checkpoint")
    p.add_argument("output", help="checkpoint directory or .safetensors file to write")
    p.add_argument("--preset", choices=("tiny", "paper"), default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compat", choices=("paper", "official"), default="paper")
    p.set_defaults(run=_init_checkpoint)

    p = sub.add_parser("convert-official", help="convert official LOMIT .pth weights to an lmt_fast checkpoint")
    p.add_argument("generator", help="official G_exemplar_*.pth (a state dict)")
    p.add_argument("-o", "--output", required=True, help="checkpoint directory or .safetensors file to write")
    p.add_argument("--discriminator", help="official D_exemplar_*.pth, kept for fine-tuning")
    p.add_argument("--attributes", help="comma-separated attribute names (default: the official hair/smile four)")
    p.add_argument("--image-size", type=int, help="training size when no discriminator is given (default 128)")
    p.add_argument("--compat", choices=("official", "paper"), default="official",
                   help="official: reproduce the official outputs (default); paper: the paper's HAdaIN")
    p.set_defaults(run=_convert_official)

    p = sub.add_parser("export", help="export a checkpoint to ONNX (and a Triton model repository)",
                       description="Export the generator to ONNX with lmt_fast's I/O contract "
                                   "(see lmt_fast/export/contract.py): dynamic batch and image size.")
    p.add_argument("checkpoint", help="checkpoint directory or .safetensors file")
    p.add_argument("-o", "--output", help="the .onnx file to write (a directory with --exemplar-cached)")
    p.add_argument("--with-masks", nargs="?", const="both", choices=("input", "exemplar", "both"),
                   help="add mask inputs that replace the learned masks (default when given: both)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"),
                   help="float16: an FP16-typed graph with float32 normalisation statistics")
    p.add_argument("--io", default="float", choices=("float", "uint8"),
                   help="uint8: images in and out as uint8 NHWC RGB, converted inside the graph")
    p.add_argument("--exemplar-cached", action="store_true",
                   help="write style_encoder.onnx and translate.onnx (encode an exemplar once) into -o DIR")
    p.add_argument("--custom-ops", action="store_true",
                   help="highway AdaIN as one lmt::RegionAdaIN node (needs the TensorRT plugin to run)")
    p.add_argument("--compat", choices=("paper", "official"), help="override the checkpoint's compat mode")
    p.add_argument("--opset", type=int, help="ONNX opset (default 18; TensorRT 10 reads 9-20)")
    p.add_argument("--cache", action="store_true",
                   help="reuse / keep the graphs in the export cache ($LMT_FAST_ONNX_CACHE or ~/.cache/lmt_fast/onnx)")
    _add_triton_options(p)
    p.add_argument("--plan", help="with --triton-repo: serve this TensorRT engine (tensorrt_plan) instead of the ONNX")
    p.set_defaults(run=_export)

    p = sub.add_parser("build-engine", help="build a TensorRT engine from an exported ONNX graph",
                       description="Build a TensorRT engine with the TensorRT Python builder. Equivalent "
                                   "trtexec line: --print-trtexec.")
    p.add_argument("onnx", help="a .onnx file written by lmt-fast export")
    p.add_argument("-o", "--output", required=True, help="the engine (.plan) to write")
    p.add_argument("--profile", action="append", default=[], metavar="NAME:MIN:OPT:MAX",
                   help="shape range of one input, shapes like 1x3x128x128 (repeat per input; the others "
                        "follow the sizes they share). Default: batch 1..--max-batch at the model's image size")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch of the default profile (default 8)")
    p.add_argument("--workspace", type=int, metavar="MIB", help="builder workspace limit in MiB")
    p.add_argument("--fp16", action="store_true",
                   help="TensorRT 10 only: FP16 kernels for a float32 graph (TensorRT 11 is strongly typed: "
                        "export with --dtype float16 instead)")
    p.add_argument("--plugin", action="append", default=[], metavar="LIB.so",
                   help="TensorRT plugin library to load (graphs exported with --custom-ops; build it with "
                        "lmt-fast build-plugin)")
    p.add_argument("--serialize-plugins", action="store_true",
                   help="store the --plugin libraries in the plan (trtexec --setPluginsToSerialize)")
    p.add_argument("--static-plugin", action="append", default=[], metavar="LIB.so",
                   help="with --print-trtexec: a static-registration library (liblmt_trt_plugin_static.so), "
                        "printed as --staticPlugins")
    p.add_argument("--print-trtexec", action="store_true", help="print the equivalent trtexec command and exit")
    p.add_argument("--verbose", action="store_true", help="TensorRT's verbose log")
    _add_triton_options(p)
    p.set_defaults(run=_build_engine)

    p = sub.add_parser("build-plugin", help="build the TensorRT plugin library for --custom-ops exports",
                       description="Compile csrc/cuda and csrc/trt (a source checkout) with nvcc and g++ into "
                                   "liblmt_trt_plugin.so, the TensorRT plugin for lmt::RegionAdaIN nodes. Needs "
                                   "TensorRT's C++ headers, not its libraries.")
    p.add_argument("-o", "--output", default="build/trt", help="directory for the library (default: %(default)s)")
    p.add_argument("--tensorrt-include", metavar="DIR",
                   help="TensorRT include directory (default: $TENSORRT_INCLUDE_DIR, $TENSORRT_ROOT/include, the "
                        "tensorrt package, /usr/include)")
    p.add_argument("--tensorrt-lib", metavar="DIR", help="directory with libnvinfer.so (--static-registration only)")
    p.add_argument("--arch", action="append", metavar="SM",
                   help="GPU architecture, repeatable (default: 80 and 90, i.e. A100 and H100)")
    p.add_argument("--static-registration", action="store_true",
                   help="register while loading, for trtexec --staticPlugins (links libnvinfer)")
    p.add_argument("--jobs", type=int, default=1, help="compilers run at once (default 1)")
    p.add_argument("--verbose", action="store_true", help="print the compiler commands")
    p.set_defaults(run=_build_plugin)
    return parser


def _add_triton_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--triton-repo", metavar="DIR", help="also write a Triton Inference Server model repository")
    p.add_argument("--model-name", default="lomit", help="Triton model name (default: lomit)")
    p.add_argument("--max-batch-size", type=int, default=8, help="Triton max_batch_size (default 8)")


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"),
                   help="default: float32 for checkpoints, the file's own dtype for .onnx exports and engines")
    p.add_argument("--backend", default="auto",
                   help="auto (fused where a fused op backend runs, else eager), fused, eager, onnxruntime, "
                        "tensorrt, or an op backend listed by `lmt-fast info`")
    p.add_argument("--resize", default="model", choices=("model", "none"),
                   help="model: resize to the model's size and back (default); none: run at the image's size")
    p.add_argument("--plugin", action="append", default=None, metavar="LIB.so",
                   help="TensorRT plugin library for a --checkpoint engine with custom ops (default: "
                        "$LMT_FAST_TRT_PLUGINS)")


def _user_error(exc: Exception) -> int:
    print(f"lmt-fast: error: {exc}", file=sys.stderr)
    return EXIT_USER_ERROR


def _reporting(user_errors):
    """A command whose exceptions of the classes `user_errors()` returns are the user's to fix: one line on
    stderr and exit code 2. The classes are looked up only when something fails (their modules can be
    heavy, e.g. the export stack)."""
    def decorate(run):
        @functools.wraps(run)
        def command(args) -> int:
            try:
                return run(args)
            except user_errors() as exc:
                return _user_error(exc)
        return command
    return decorate


def _translator(args):
    from lmt_fast.translator import Translator

    options = dict(device=args.device, dtype=args.dtype, backend=args.backend, resize=args.resize)
    if args.plugin:
        options["plugins"] = args.plugin
    if args.checkpoint:
        return Translator.load(args.checkpoint, **options)
    return Translator.from_pretrained(**options)


def _translate(args) -> int:
    from lmt_fast.io import ImageError, check_image_path, save_image

    # Check where the results go before spending time on the translation.
    output = check_image_path(args.output)
    if args.save_masks:
        folder = Path(args.save_masks)
        if folder.exists() and not folder.is_dir():
            raise ImageError(f"--save-masks {folder} is a file, not a directory")
        check_image_path(folder / "input_mask.png")
    translator = _translator(args)
    result = translator.translate(args.input, args.exemplar, input_mask=args.input_mask,
                                  exemplar_mask=args.exemplar_mask)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    save_image(result.image, output)
    print(f"wrote {output} ({result.image.width}x{result.image.height})")
    if args.save_masks:
        save_image(result.input_mask, folder / "input_mask.png")
        save_image(result.exemplar_mask, folder / "exemplar_mask.png")
        print(f"wrote {folder / 'input_mask.png'} and {folder / 'exemplar_mask.png'}")
    return 0


def _demo(args) -> int:
    from lmt_fast.demo import demo_grid
    from lmt_fast.io import check_image_path, load_image, save_image

    output = check_image_path(args.output)
    for path in (args.inputs or []) + (args.exemplars or []):
        load_image(path)  # one clear error for a bad file before any work
    grid = demo_grid(_translator(args), args.inputs, args.exemplars)
    save_image(grid, output)
    print(f"wrote {output}: rows = inputs (translation above, learned input mask below), columns = exemplars")
    return 0


def _purifier_errors():
    from lmt_fast.purifier import PurifierError

    return PurifierError


@_reporting(_purifier_errors)
def _purify(args) -> int:
    from lmt_fast.io import check_image_path, save_image
    from lmt_fast.purifier import Purifier, PurifierError

    output = check_image_path(args.output)  # before any work
    if (args.style_image is None) != (args.style_mask is None):
        raise PurifierError("--style-image and --style-mask go together (the style's regions come from its mask)")
    options = dict(device=args.device, dtype=args.dtype or "float32", backend=args.backend, resize=args.resize)
    purifier = Purifier.load(args.checkpoint, **options) if args.checkpoint else Purifier.from_pretrained(**options)
    style = purifier.encode_style(args.style_image, args.style_mask) if args.style_image else None
    result = purifier.purify(args.image, args.mask, style=style)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    save_image(result.image, output)
    source = "the style image" if style is not None else "the stored synthetic style"
    print(f"wrote {output} ({result.image.width}x{result.image.height}, region styles from {source})")
    return 0


def _init_checkpoint(args) -> int:
    import torch

    from lmt_fast.io import save_checkpoint
    from lmt_fast.models import LOMITConfig, LOMITGenerator

    torch.manual_seed(args.seed)
    preset = LOMITConfig.paper if args.preset == "paper" else LOMITConfig.tiny
    generator = LOMITGenerator(preset(compat=args.compat))
    path = save_checkpoint(generator, args.output, extra={"note": f"untrained, seed {args.seed}"})
    print(f"wrote untrained {args.preset} checkpoint to {path}")
    return 0


def _read_official(path: str) -> dict:
    """An official .pth state dict, read with torch's weights-only unpickler (no code runs)."""
    import pickle

    import torch

    from lmt_fast.io import CheckpointError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"official checkpoint not found: {path}") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{path} is not a readable weights-only PyTorch state dict ({exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return state


def _convert_official(args) -> int:
    from lmt_fast.io import CheckpointError, save_checkpoint
    from lmt_fast.models import LOMITDiscriminator, LOMITGenerator
    from lmt_fast.models.official import convert_official_state_dict, infer_official_config

    g_state = _read_official(args.generator)
    d_state = _read_official(args.discriminator) if args.discriminator else None
    attributes = [a.strip() for a in args.attributes.split(",") if a.strip()] if args.attributes else None
    try:
        cfg = infer_official_config(g_state, d_state, attributes, args.image_size, args.compat)
        ours_g, ours_d = convert_official_state_dict(g_state, cfg, d_state)
        generator = LOMITGenerator(cfg)
        generator.load_state_dict(ours_g)
        discriminator = None
        if ours_d is not None:
            discriminator = LOMITDiscriminator(cfg)
            discriminator.load_state_dict(ours_d)
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot convert {args.generator}: {exc}") from None
    path = save_checkpoint(generator, args.output, discriminator,
                           extra={"converted_from": str(Path(args.generator).name)})
    print(f"wrote {path} (compat={cfg.compat}, image_size={cfg.image_size}, base_dim={cfg.base_dim})")
    return 0


def _export_user_errors():
    """Errors of export / build-engine that are the user's to fix (one line, exit code 2)."""
    from lmt_fast.export.contract import ContractError
    from lmt_fast.export.coverage import UnsupportedOpsError
    from lmt_fast.export.onnx import ExportError
    from lmt_fast.export.tensorrt import EngineBuildError, TensorRTUnavailableError
    from lmt_fast.runtime.tensorrt import PluginLoadError

    return (ContractError, UnsupportedOpsError, ExportError, EngineBuildError, TensorRTUnavailableError,
            PluginLoadError, ValueError)


@_reporting(_export_user_errors)
def _export(args) -> int:
    import tempfile

    from lmt_fast.export.contract import FILE_NAMES, IOContract, Variant
    from lmt_fast.export.onnx import DEFAULT_OPSET, export_files
    from lmt_fast.io import load_checkpoint

    if not args.output and not args.triton_repo:
        raise ValueError("give -o/--output, --triton-repo, or both")
    if args.plan and not args.triton_repo:
        raise ValueError("--plan is for --triton-repo")
    if args.plan and args.exemplar_cached:
        raise ValueError("--plan serves one engine; an exemplar-cached export needs one engine per graph "
                         "(build each with lmt-fast build-engine --triton-repo)")
    checkpoint = load_checkpoint(args.checkpoint, config_overrides={"compat": args.compat} if args.compat else None)
    masks = {None: (), "both": ("input", "exemplar")}.get(args.with_masks, (args.with_masks,))
    options = dict(exemplar_cached=args.exemplar_cached, masks=masks, dtype=args.dtype, io=args.io,
                   custom_ops=args.custom_ops, opset=args.opset or DEFAULT_OPSET, cache=args.cache,
                   workers=2 if args.exemplar_cached else 1)
    with tempfile.TemporaryDirectory(prefix="lmt_fast_export_") as staging:
        written = []
        if args.output or not args.plan:  # a Triton repository of ONNX models needs them exported too
            default = Path(staging) if args.exemplar_cached else Path(staging) / FILE_NAMES["full"]
            written = export_files(checkpoint.generator, args.output or default, **options)
        if args.output:
            for path in written:
                print(f"wrote {path} ({_coverage_summary(path, args.custom_ops)})")
        if args.triton_repo:
            from lmt_fast.export.triton_repo import write_triton_repo

            files, contracts = written, {}
            if args.plan:
                plan = Path(args.plan)
                variant = Variant("full", masks, args.dtype, args.io, args.custom_ops)
                contracts = {plan: (IOContract.build(checkpoint.config, variant), checkpoint.config.to_dict())}
                files = [plan]
            for folder in write_triton_repo(args.triton_repo, files, args.model_name, contracts=contracts,
                                            max_batch_size=args.max_batch_size):
                print(f"wrote Triton model {folder}")
    return 0


def _coverage_summary(path, custom_ops: bool) -> str:
    from lmt_fast.export.coverage import check_tensorrt_coverage

    report = check_tensorrt_coverage(path, plugins=("lmt::RegionAdaIN",) if custom_ops else (), raise_error=False)
    text = "TensorRT parser coverage ok" if report.ok else "TensorRT coverage problems: " + "; ".join(report.problems)
    if report.plugins:
        text += f"; plugin nodes {report.plugins} need the TensorRT plugin"
    return text


@_reporting(_export_user_errors)
def _build_engine(args) -> int:
    from lmt_fast.export.coverage import check_tensorrt_coverage
    from lmt_fast.export.onnx import read_metadata
    from lmt_fast.export.profiles import build_profile
    from lmt_fast.export.tensorrt import TensorRTUnavailableError, build_engine, trtexec_command

    onnx_path = Path(args.onnx)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    contract, config, _ = read_metadata(onnx_path)
    profile = build_profile(contract, args.profile, default_size=config.get("image_size"), max_batch=args.max_batch)
    command = trtexec_command(onnx_path, args.output, profile, args.workspace, args.fp16, args.plugin,
                              args.static_plugin, args.serialize_plugins)
    if args.print_trtexec:
        print(command)
        return 0
    check_tensorrt_coverage(onnx_path, plugins=("lmt::RegionAdaIN",) if args.plugin else ())
    try:
        plan = build_engine(onnx_path, args.output, [profile], contract=contract, config=config,
                            workspace_mib=args.workspace, fp16=args.fp16, plugins=args.plugin,
                            serialize_plugins=args.serialize_plugins, verbose=args.verbose)
    except TensorRTUnavailableError as exc:
        raise TensorRTUnavailableError(f"{exc}. Without it, build the same engine with: {command}") from None
    print(f"wrote {plan} (profile {profile.text()}); the same engine with trtexec: {command}")
    if args.triton_repo:
        from lmt_fast.export.triton_repo import write_triton_repo

        for folder in write_triton_repo(args.triton_repo, [plan], args.model_name, max_batch_size=args.max_batch_size):
            print(f"wrote Triton model {folder}")
    return 0


def _build_plugin(args) -> int:
    from lmt_fast.export.plugin_build import DEFAULT_ARCHS, PluginBuildError, build_plugin
    from lmt_fast.runtime.tensorrt import PLUGINS_ENV

    try:
        library = build_plugin(args.output, args.tensorrt_include, args.tensorrt_lib,
                               tuple(args.arch) if args.arch else DEFAULT_ARCHS,
                               static_registration=args.static_registration, jobs=args.jobs, verbose=args.verbose)
    except PluginBuildError as exc:
        return _user_error(exc)
    flag = "--staticPlugins" if args.static_registration else "--dynamicPlugins"
    print(f"wrote {library}\n  lmt-fast build-engine MODEL.onnx -o MODEL.plan --plugin {library}\n"
          f"  trtexec --onnx=MODEL.onnx --saveEngine=MODEL.plan {flag}={library}\n"
          f"  {PLUGINS_ENV}={library} (read by Translator.load / EngineRunner)")
    return 0


def _translator_auto(device: str) -> dict:
    """What Translator(backend="auto") runs on `device`: "fused", or "eager" and the reason."""
    import torch

    from lmt_fast.runtime.fused import fused_unavailable_reason

    reason = fused_unavailable_reason(device, torch.float32)
    return {"backend": "fused" if reason is None else "eager", "reason": reason}


def collect_info() -> dict:
    """What this installation can do: versions, devices, op backends and why others are missing."""
    import importlib

    import torch

    import lmt_fast
    from lmt_fast import _extension, ops
    from lmt_fast.translator import DEFAULT_MODEL

    versions = {"lmt_fast": lmt_fast.__version__, "python": platform.python_version(), "torch": torch.__version__}
    for name in ("numpy", "PIL", "safetensors", "onnx", "onnxruntime", "triton", "tensorrt"):
        try:
            versions[name] = getattr(importlib.import_module(name), "__version__", "installed")
        except ImportError:
            versions[name] = None
    devices = {"cpu": platform.processor() or platform.machine(), "cuda_available": torch.cuda.is_available(),
               "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
    from lmt_fast.ops.backends import unavailable as backend_problems

    unavailable = dict(backend_problems)
    if _extension.extension is None:
        unavailable["compiled extension"] = _extension.unavailable_reason
    if versions["triton"] is None:
        unavailable["triton"] = "triton is not installed (pip install 'lmt_fast[triton]')"
    return {
        "versions": versions,
        "devices": devices,
        "op_backends": {"registered": ops.available_backends(), "auto_on_cpu": ops.resolve_backend("auto", "cpu"),
                        "unavailable": unavailable},
        "translator_auto_on_cpu": _translator_auto("cpu"),
        "default_model": str(DEFAULT_MODEL) if (DEFAULT_MODEL / "config.json").is_file() else None,
    }


def _info(args) -> int:
    info = collect_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print("versions:")
    for name, version in info["versions"].items():
        print(f"  {name:12s} {version or 'not installed'}")
    dev = info["devices"]
    print(f"devices:\n  cpu          {dev['cpu']}\n  cuda         "
          + (", ".join(dev["cuda_devices"]) if dev["cuda_available"] else "not available"))
    backends = info["op_backends"]
    print(f"op backends:\n  registered   {', '.join(backends['registered'])}\n  auto on cpu  {backends['auto_on_cpu']}")
    auto = info["translator_auto_on_cpu"]
    print(f"translator auto on cpu: {auto['backend']}" + (f" ({auto['reason']})" if auto["reason"] else ""))
    for name, why in backends["unavailable"].items():
        print(f"  {name}: {why}")
    print(f"default model: {info['default_model'] or 'not shipped yet'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
