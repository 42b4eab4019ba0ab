"""The onnxruntime runtime: OnnxSession's request checks and the Translator's "onnxruntime" backend,
which must give the torch backend's results (same public API: translate, encode_exemplar, translate_batch).

The styled checkpoint's graphs come from the export cache shared with test_export_onnx.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from lmt_fast import Translator  # noqa: E402
from lmt_fast.export import ContractError, Variant  # noqa: E402
from lmt_fast.translator import ExemplarStyle, TranslatorError  # noqa: E402

SAMPLES = __import__("pathlib").Path(__file__).resolve().parents[1] / "lmt_fast" / "assets" / "samples"
SIZE = 64


@pytest.fixture(scope="module", autouse=True)
def shared_cache(tmp_path_factory):
    """The export cache of this session (the one test_export_onnx.py fills), on one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.getbasetemp() / "lmt_fast_onnx_cache"
        mp.setenv("LMT_FAST_ONNX_CACHE", str(path))
        yield path
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pair(styled_checkpoint):
    """(torch backend, onnxruntime backend) translators of the same checkpoint."""
    return Translator.load(styled_checkpoint), Translator.load(styled_checkpoint, backend="onnxruntime")


def rand_tensor(seed, *shape):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def rel_err(a, b) -> float:
    a, b = torch.as_tensor(np.asarray(a), dtype=torch.float64), torch.as_tensor(np.asarray(b), dtype=torch.float64)
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


# -- the Translator backend -----------------------------------------------------------------------------

def test_backend_is_onnxruntime_with_the_same_config(pair):
    eager, onnx_rt = pair
    assert onnx_rt.backend == "onnxruntime" and onnx_rt.config == eager.config
    assert "CPUExecutionProvider" in repr(onnx_rt.generator)


def test_translate_matches_the_torch_backend(pair):
    eager, onnx_rt = pair
    x, e = rand_tensor(0, 3, SIZE, SIZE), rand_tensor(1, 3, SIZE, SIZE)
    a, b = eager.translate(x, e), onnx_rt.translate(x, e)
    assert b.image.shape == x.shape and b.image.dtype == x.dtype
    for got, want in ((b.image, a.image), (b.input_mask, a.input_mask), (b.exemplar_mask, a.exemplar_mask)):
        assert rel_err(got, want) <= 1e-4


def test_translate_sample_files_matches_the_torch_backend(pair):
    eager, onnx_rt = pair
    args = (SAMPLES / "input.png", SAMPLES / "exemplar.png")
    a, b = eager.translate(*args), onnx_rt.translate(*args)
    assert a.notes == b.notes and b.image.size == (128, 128)
    assert np.abs(np.asarray(a.image, int) - np.asarray(b.image, int)).max() <= 1   # uint8 rounding at most


def test_user_masks_match_the_torch_backend(pair):
    eager, onnx_rt = pair
    kwargs = dict(input_mask=SAMPLES / "input_hair_mask.png", exemplar_mask=np.full((128, 128), 0.7, np.float32))
    x = torch.from_numpy(np.asarray(Image.open(SAMPLES / "input.png"), np.float32)).permute(2, 0, 1) / 127.5 - 1
    e = torch.from_numpy(np.asarray(Image.open(SAMPLES / "exemplar.png"), np.float32)).permute(2, 0, 1) / 127.5 - 1
    a, b = eager.translate(x, e, **kwargs), onnx_rt.translate(x, e, **kwargs)
    assert rel_err(b.image, a.image) <= 1e-4 and rel_err(b.input_mask, a.input_mask) <= 1e-6


def test_encode_exemplar_and_translate_batch_match_the_torch_backend(pair):
    eager, onnx_rt = pair
    e = rand_tensor(2, 3, SIZE, SIZE)
    inputs = [rand_tensor(10 + i, 3, SIZE, SIZE) for i in range(3)]
    sa, sb = eager.encode_exemplar(e), onnx_rt.encode_exemplar(e)
    assert isinstance(sb, ExemplarStyle)
    assert rel_err(sb.code.style_fg, sa.code.style_fg) <= 1e-4
    assert rel_err(sb.code.attention, sa.code.attention) <= 1e-4 and rel_err(sb.mask, sa.mask) <= 1e-4
    assert sb.code.content.shape == (1, 0, 1, 1)   # the graph does not return the content code
    ra, rb = eager.translate_batch(inputs, sa, batch_size=2), onnx_rt.translate_batch(inputs, sb, batch_size=2)
    assert len(rb) == 3
    for a, b in zip(ra, rb):
        assert rel_err(b.image, a.image) <= 1e-4 and rel_err(b.input_mask, a.input_mask) <= 1e-4
    # an exemplar encoded by the torch backend serves the onnxruntime one, and the other way round
    assert rel_err(onnx_rt.translate(inputs[0], sa).image, ra[0].image) <= 1e-4
    assert rel_err(eager.translate(inputs[0], sb).image, ra[0].image) <= 1e-4


def test_bfloat16_is_not_an_onnx_dtype(styled_checkpoint):
    with pytest.raises(TranslatorError, match="float32 or float16"):
        Translator.load(styled_checkpoint, backend="onnxruntime", dtype="bfloat16")


# -- loading exported files -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def export_dir(styled_checkpoint, tmp_path_factory, shared_cache):
    """`lmt-fast export` output: model.onnx beside the exemplar-cached pair, from the shared cache."""
    from lmt_fast.export.onnx import export_files
    from lmt_fast.io import load_checkpoint

    folder = tmp_path_factory.mktemp("onnx_export")
    generator = load_checkpoint(styled_checkpoint).generator
    export_files(generator, folder / "model.onnx", cache=True)
    export_files(generator, folder, exemplar_cached=True, cache=True)
    return folder


def test_load_an_export_directory_and_a_single_file(export_dir, pair):
    eager, _ = pair
    t = Translator.load(export_dir)                      # backend "auto" picks onnxruntime for ONNX
    assert t.backend == "onnxruntime" and t.config == eager.config and t.dtype == torch.float32
    x, e = rand_tensor(3, 3, SIZE, SIZE), rand_tensor(4, 3, SIZE, SIZE)
    assert rel_err(t.translate(x, e).image, eager.translate(x, e).image) <= 1e-4
    style = t.encode_exemplar(e)
    assert rel_err(t.translate_batch([x], style)[0].image, eager.translate(x, eager.encode_exemplar(e)).image) <= 1e-4
    single = Translator.load(export_dir / "model.onnx", backend="onnxruntime")
    assert rel_err(single.translate(x, e).image, eager.translate(x, e).image) <= 1e-4
    with pytest.raises(ValueError, match="has no style_encoder graph.*--exemplar-cached"):
        single.encode_exemplar(e)


@pytest.mark.parametrize("kwargs, message", [
    (dict(backend="eager"), "runs with backend 'onnxruntime'"),
    (dict(dtype="float16"), "holds float32 graphs"),
    (dict(compat="official"), "exported with compat='paper'"),
])
def test_loading_an_export_with_options_it_cannot_honour(export_dir, kwargs, message):
    with pytest.raises(TranslatorError, match=message):
        Translator.load(export_dir / "model.onnx", **kwargs)


def test_a_file_without_lmt_fast_metadata_is_refused(tmp_path):
    import onnx

    h = onnx.helper
    graph = h.make_graph([h.make_node("Identity", ["x"], ["y"])], "g",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(h.make_model(graph), tmp_path / "other.onnx")
    with pytest.raises(TranslatorError, match="no lmt_fast metadata"):
        Translator.load(tmp_path / "other.onnx")


# -- OnnxSession checks requests against the contract ----------------------------------------------------

def test_session_checks_requests_before_running(export_dir):
    from lmt_fast.runtime.onnxruntime import OnnxSession, providers_for

    assert providers_for("cpu") == ["CPUExecutionProvider"]
    session = OnnxSession(export_dir / "translate.onnx")
    assert session.variant == Variant("translate")
    c = session.contract.dims
    good = {"input": np.zeros((2, 3, 32, 48), np.float32),
            "exemplar_attention": np.full((2, c.content_dim, 1, 1), 0.5, np.float32),
            "exemplar_style": np.zeros((2, c.style_dim), np.float32)}
    out = session.run(good)
    assert out["image"].shape == (2, 3, 32, 48) and out["input_mask"].shape == (2, 1, 8, 12)
    bad = [
        ({"input": good["input"].astype(np.float64)}, "input must be float32, got float64"),
        ({"input": np.zeros((2, 3, 30, 48), np.float32)}, "height 30 .*not a multiple of 16"),
        ({"exemplar_style": np.zeros((3, c.style_dim), np.float32)}, "exemplar_style axis 0 \\(batch\\) is 3"),
        ({"input": np.zeros((2, 32, 48, 3), np.float32)}, "input must have shape \\(batch, 3, height, width\\)"),
    ]
    for change, message in bad:
        with pytest.raises(ContractError, match=message):
            session.run({**good, **change})
    with pytest.raises(ContractError, match="missing input\\(s\\) \\['exemplar_style'\\]"):
        session.run({k: v for k, v in good.items() if k != "exemplar_style"})


# -- execution providers: CUDA when asked for, or one clear error (never a silent CPU fallback) ----------------

HAS_CUDA_PROVIDER = "CUDAExecutionProvider" in ort.get_available_providers()


def test_provider_lists(monkeypatch):
    from lmt_fast.runtime.onnxruntime import ExecutionProviderError, provider_names, providers_for

    assert providers_for("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert providers_for("cuda") == [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert providers_for(torch.device("cuda", 1))[0] == ("CUDAExecutionProvider", {"device_id": 1})
    assert provider_names(providers_for("cuda:1")) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(ExecutionProviderError, match="runs on 'cpu' or 'cuda\\[:N\\]', not 'meta'"):
        providers_for("meta")


@pytest.mark.skipif(HAS_CUDA_PROVIDER, reason="this onnxruntime has CUDAExecutionProvider")
def test_cuda_without_the_cuda_provider_is_one_clear_error(export_dir):
    from lmt_fast.runtime.onnxruntime import ExecutionProviderError, OnnxRuntimeGenerator, providers_for

    with pytest.raises(ExecutionProviderError) as err:
        providers_for("cuda")
    text = str(err.value)
    assert "device 'cuda' needs onnxruntime's CUDAExecutionProvider" in text
    assert str(ort.get_available_providers()) in text and "onnxruntime-gpu" in text
    with pytest.raises(ExecutionProviderError, match="CUDAExecutionProvider"):
        OnnxRuntimeGenerator.from_onnx(export_dir / "model.onnx", device="cuda:0")


@pytest.mark.skipif(HAS_CUDA_PROVIDER, reason="this onnxruntime has CUDAExecutionProvider")
@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider names")
def test_a_provider_that_does_not_start_is_an_error(export_dir, monkeypatch):
    """onnxruntime itself only warns and runs on the CPU when a requested provider cannot start."""
    from lmt_fast.runtime.onnxruntime import ExecutionProviderError, OnnxSession

    cuda = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    with pytest.raises(ExecutionProviderError, match="has no \\['CUDAExecutionProvider'\\].*onnxruntime-gpu"):
        OnnxSession(export_dir / "translate.onnx", cuda)
    # listed as available (as onnxruntime-gpu lists it) but failing to start, e.g. without cuDNN
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(ExecutionProviderError, match="could not start \\['CUDAExecutionProvider'\\].*would run on "
                                                     "\\['CPUExecutionProvider'\\]"):
        OnnxSession(export_dir / "translate.onnx", cuda)


@pytest.mark.skipif(not HAS_CUDA_PROVIDER, reason="this onnxruntime has no CUDAExecutionProvider "
                                                  "(install onnxruntime-gpu)")
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU (or PyTorch without CUDA)")
def test_cuda_provider_matches_the_cpu(export_dir, pair):
    from lmt_fast.runtime.onnxruntime import OnnxRuntimeGenerator

    eager, _ = pair
    gpu = Translator.load(export_dir / "model.onnx", device="cuda")
    assert isinstance(gpu.generator, OnnxRuntimeGenerator) and "CUDAExecutionProvider" in repr(gpu.generator)
    session = gpu.generator.session(Variant("full"))
    assert session.session.get_providers()[0] == "CUDAExecutionProvider"
    x, e = rand_tensor(5, 3, SIZE, SIZE), rand_tensor(6, 3, SIZE, SIZE)
    got = gpu.translate(x.cuda(), e.cuda())
    assert got.image.is_cuda
    assert rel_err(got.image.cpu(), eager.translate(x, e).image) <= 1e-3
