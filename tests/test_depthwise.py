"""Every depthwise path gives nn.Conv2d's outputs and gradients; auto measures on seeded inputs, picks only
correct paths, keeps its choices per code version and re-measures on request."""
from __future__ import annotations

import importlib
import json
import math

import pytest
import torch
from torch import nn

from roadmap.models import depthwise
from roadmap.models.depthwise import DepthwiseConv2d, depthwise_conv

KERNELS = (3, 5, 7, 9, 11)
# The Triton kernels on CPU run in the interpreter (seconds per case): the smallest, the adopted and the largest size
# there, every size on a GPU
TRITON_KERNELS = KERNELS if torch.cuda.is_available() else (3, 7, 11)


@pytest.fixture(autouse=True)
def autotune_cache(tmp_path, monkeypatch):
    """Each test measures into its own cache file."""
    monkeypatch.setenv("ROADMAP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(depthwise, "AUTOTUNER", depthwise.Autotuner())
    return tmp_path / "cache" / "depthwise.json"


def _case(k: int, stride: int, size: int, channels_last: bool, dtype=torch.float64):
    """A DepthwiseConv2d, the nn.Conv2d with its weights, and an input (odd or even ``size``)."""
    gen = torch.Generator().manual_seed(k * 100 + stride * 10 + size)
    ours = DepthwiseConv2d(6, k, stride).to(dtype)
    reference = nn.Conv2d(6, 6, k, stride, k // 2, groups=6).to(dtype)
    with torch.no_grad():
        ours.weight.copy_(torch.randn(ours.weight.shape, generator=gen, dtype=dtype))
        ours.bias.copy_(torch.randn(6, generator=gen, dtype=dtype))
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(2, 6, size, size + 1, generator=gen, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return ours, reference, x


def _outputs_and_grads(module: nn.Module, x: torch.Tensor):
    x = x.detach().clone().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    y = module(x)
    upstream = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    (y * upstream).sum().backward()
    return y, x.grad, module.weight.grad, module.bias.grad


@pytest.mark.parametrize("k", KERNELS)
@pytest.mark.parametrize("stride", (1, 2))
@pytest.mark.parametrize("impl", ("native", "switch", "crop", "flip", "fft"))
def test_paths_match_conv2d(k, stride, impl):
    """Each forced path (``native`` where it does not apply: ``crop`` needs a kernel wider than twice the input,
    ``flip`` stride 1), inputs of odd and even sizes, small enough for ``crop`` and not, in both layouts."""
    for size in (3, 4, 7, 8):
        for channels_last in (False, True):
            ours, reference, x = _case(k, stride, size, channels_last)
            ours.impl = impl
            got, want = _outputs_and_grads(ours, x), _outputs_and_grads(reference, x)
            for name, a, b in zip(("output", "input grad", "weight grad", "bias grad"), got, want):
                assert a.shape == b.shape, (name, size, channels_last)
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=f"{impl} {name} k={k} s={stride} "
                                                                        f"size={size} cl={channels_last}")
            assert got[0].is_contiguous(memory_format=torch.channels_last if channels_last else
                                        torch.contiguous_format)


def test_crop_and_flip_apply_where_they_should():
    """``crop`` is a candidate exactly when some taps only meet padding (k=11 on 4×4: 2 each side, on 7×7:
    none); ``flip`` only at stride 1."""
    x, w = torch.empty(1, 2, 4, 4), torch.empty(2, 1, 11, 11)
    assert depthwise._padding_only_taps(x.shape, 11, 1, 5) == 2
    assert depthwise._padding_only_taps(torch.Size([1, 2, 7, 7]), 11, 1, 5) == 0
    assert "crop" in depthwise._candidates("forward", (x, w, None, 1, 5))
    assert "crop" not in depthwise._candidates("forward", (torch.empty(1, 2, 7, 7), w, None, 1, 5))
    g = torch.empty(1, 2, 4, 4)
    assert "flip" in depthwise._candidates("grad_input", (g, x, w, 1, 5))
    assert "flip" not in depthwise._candidates("grad_input", (torch.empty(1, 2, 2, 2), x, w, 2, 5))


def test_float32_paths_within_tolerance():
    """float32 (the CPU training dtype): the FFT weight gradient agrees to float32 rounding."""
    for k in (7, 11):
        ours, reference, x = _case(k, 1, 12, False, torch.float32)
        ours.impl = "fft"
        for a, b in zip(_outputs_and_grads(ours, x), _outputs_and_grads(reference, x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_auto_picks_only_correct_paths_and_keeps_the_choice(autotune_cache, monkeypatch):
    """A path that is fastest but wrong is measured as wrong and never chosen; the choice, with every path's
    time, IQR and error and its margin, is stored and reused by a fresh process (a new Autotuner) without
    measuring again; auto's result equals nn.Conv2d's."""
    real = depthwise._candidates

    def with_a_wrong_path(op, args, impl="auto"):
        table = real(op, args, impl)
        table["wrong"] = lambda *args: table["native"](*args) * 1.01  # instant would win a race; wrong anyway
        return table

    monkeypatch.setattr(depthwise, "_candidates", with_a_wrong_path)
    ours, reference, x = _case(9, 1, 8, False, torch.float32)
    for a, b in zip(_outputs_and_grads(ours, x), _outputs_and_grads(reference, x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    saved = json.loads(autotune_cache.read_text())
    assert {key.split("|")[0] for key in saved} == {"forward", "grad_input", "grad_weight"}
    for key, entry in saved.items():
        assert key.endswith("|" + depthwise.paths_version())
        assert entry["path"] != "wrong" and "wrong" not in entry["ms"]
        assert entry["max_abs_error"]["wrong"] > entry["tolerance"] > 0
        assert set(entry["iqr_ms"]) == set(entry["ms"]) and entry["margin"] >= -depthwise._TIE
    grad_weight = next(e for key, e in saved.items() if key.startswith("grad_weight"))
    assert set(grad_weight["ms"]) == {"native", "switch", "fft"}

    fresh = depthwise.Autotuner()
    monkeypatch.setattr(depthwise, "AUTOTUNER", fresh)
    monkeypatch.setattr(depthwise, "measure", lambda *a: pytest.fail("measured again"))
    _outputs_and_grads(ours, x)
    assert {k: v["path"] for k, v in fresh.choices.items()} == {k: v["path"] for k, v in saved.items()}


@pytest.fixture
def counted_measurements(monkeypatch):
    """Every measurement made (op keys), each with a quick stand-in timer (all paths tie: native is chosen)."""
    measured = []
    real = depthwise.measure
    monkeypatch.setattr(depthwise, "stable_seconds", lambda fn, **timing: (fn(), (1e-3, 1e-5, 4))[1])

    def counting(candidates, args):
        measured.append(tuple(a.shape for a in args if isinstance(a, torch.Tensor)))
        return real(candidates, args)

    monkeypatch.setattr(depthwise, "measure", counting)
    return measured


@pytest.mark.parametrize("bad", (float("nan"), float("inf")))
def test_a_non_finite_input_never_yields_a_stored_choice(bad, autotune_cache):
    """Live tensors full of NaN or inf: the output is what nn.Conv2d gives, and the choices are made on seeded
    inputs: every stored tolerance and every chosen path's error is finite."""
    ours, reference, x = _case(7, 1, 8, False, torch.float32)
    x = torch.full_like(x, bad)
    got, want = _outputs_and_grads(ours, x), _outputs_and_grads(reference, x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, equal_nan=True)
    saved = json.loads(autotune_cache.read_text())
    assert len(saved) == 3
    for entry in saved.values():
        assert math.isfinite(entry["tolerance"]) and entry["tolerance"] > 0
        assert math.isfinite(entry["max_abs_error"][entry["path"]])


def test_a_non_finite_reference_is_an_error_never_a_choice(autotune_cache, monkeypatch):
    monkeypatch.setattr(depthwise, "_forward_native", lambda x, w, b, s, p: torch.full(x.shape, float("nan")))
    ours, _, x = _case(7, 1, 8, False, torch.float32)
    with pytest.raises(RuntimeError, match="non-finite values on seeded inputs"):
        ours(x)
    assert not autotune_cache.exists()


def test_a_choice_of_another_code_version_is_measured_again(autotune_cache, counted_measurements, monkeypatch):
    ours, _, x = _case(5, 2, 7, True, torch.float32)
    _outputs_and_grads(ours, x)
    assert len(counted_measurements) == 3
    monkeypatch.setattr(depthwise, "AUTOTUNER", depthwise.Autotuner())  # a fresh process ...
    _outputs_and_grads(ours, x)
    assert len(counted_measurements) == 3  # ... of the same code reads the store
    monkeypatch.setattr(depthwise, "paths_version", lambda: "0ther0code00")
    monkeypatch.setattr(depthwise, "AUTOTUNER", depthwise.Autotuner())  # ... of other code measures again
    _outputs_and_grads(ours, x)
    assert len(counted_measurements) == 6
    assert len(json.loads(autotune_cache.read_text())) == 6  # both versions' choices stay side by side


def test_retune_measures_each_case_once_more_and_pinned_paths_outrank_the_store(autotune_cache,
                                                                                counted_measurements, monkeypatch):
    ours, _, x = _case(7, 1, 6, False, torch.float32)
    _outputs_and_grads(ours, x)
    retuning = depthwise.Autotuner(retune=True)
    monkeypatch.setattr(depthwise, "AUTOTUNER", retuning)
    _outputs_and_grads(ours, x)
    _outputs_and_grads(ours, x)
    assert len(counted_measurements) == 6  # 3 cases, each measured again once
    assert set(retuning.used().values()) == {"native"}
    pinned = depthwise.Autotuner()
    pinned.pin({key: "switch" for key in retuning.used()})  # a checkpoint's paths
    monkeypatch.setattr(depthwise, "AUTOTUNER", pinned)
    monkeypatch.setattr(depthwise, "_forward_switch", lambda *args: torch.full((2, 6, 6, 7), 7.0))
    assert (ours(x) == 7).all()  # the pinned path ran, not the stored native
    assert len(counted_measurements) == 6


def test_custom_op_registration_and_compile():
    """Fake (meta) kernel, autograd and schema pass torch.library.opcheck; torch.compile keeps the op whole."""
    x = torch.randn(2, 4, 9, 8, requires_grad=True)
    w = torch.randn(4, 1, 5, 5, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    torch.library.opcheck(depthwise_conv, (x, w, b, 2, 2, "switch"))
    x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    torch.library.opcheck(depthwise_conv, (x_cl, w, None, 1, 2, "switch"))  # output layout as the fake kernel says
    module = DepthwiseConv2d(4, 5)
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x.detach()), module(x.detach()))


@pytest.mark.parametrize("impl", ("native", "switch", "crop", "flip", "fft"))
def test_autocast_follows_conv2d(impl):
    """Under autocast every path computes in the autocast dtype, as nn.Conv2d does (bf16 on GPU in training), and
    is as accurate as nn.Conv2d there: its error against float32 at most twice nn.Conv2d's plus bf16's unit roundoff (the
    paths round differently: switch's input gradient is up to ~2% of the largest value off nn.Conv2d's)."""
    ours, reference, x = _case(7, 1, 8, False, torch.float32)
    ours.impl = impl
    exact = _outputs_and_grads(reference, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = _outputs_and_grads(ours, x.bfloat16()), _outputs_and_grads(reference, x.bfloat16())

    def error(y, truth):
        return ((y.float() - truth).abs().max() / truth.abs().max()).item()

    assert got[0].dtype == torch.bfloat16
    for a, b, truth in zip(got, want, exact):
        assert a.dtype == b.dtype
        assert error(a, truth) <= 2 * (error(b, truth) + torch.finfo(torch.bfloat16).eps / 2)


def test_unknown_impl_is_one_line():
    with pytest.raises(depthwise.ConfigError, match="unknown depthwise implementation 'cudnn'; allowed: auto"):
        DepthwiseConv2d(4, 3).impl = "cudnn"


@pytest.fixture
def triton_kernels():
    """roadmap.models.triton_depthwise on the GPU, or interpreted on CPU tensors (tests/conftest.py), on ``device``."""
    triton = pytest.importorskip("triton")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not triton.knobs.runtime.interpret:
        pytest.skip("no GPU and Triton not in interpreter mode (TRITON_INTERPRET=1 before triton's import)")
    return importlib.import_module("roadmap.models.triton_depthwise"), torch.device(device)


@pytest.mark.parametrize("k", TRITON_KERNELS)
def test_triton_kernels_match_conv2d(triton_kernels, k):
    """Forward, input and weight gradients of the Triton kernels equal PyTorch's, for stride 1 and 2 on a 5×6
    input (odd and even sizes) in channels_last, the layout they serve, and in NCHW (read through strides) for
    the smallest kernel."""
    kernels, device = triton_kernels
    layouts = (True, False) if k == KERNELS[0] else (True,)
    for stride in (1, 2):
        for channels_last in layouts:
            _, reference, x = _case(k, stride, 5, channels_last, torch.float32)
            reference, x = reference.to(device), x.to(device)
            w, b = reference.weight.detach(), reference.bias.detach()
            want_y = reference(x).detach()
            g = torch.randn(want_y.shape).to(device).contiguous(memory_format=torch.channels_last if channels_last
                                                                else torch.contiguous_format)
            want_dx, want_dw = depthwise._backward(g, x, w, stride, k // 2, [True, True, False])[:2]
            where = f"k={k} s={stride} cl={channels_last}"
            y = kernels.forward(x, w, b, stride, k // 2)
            torch.testing.assert_close(y, want_y, rtol=1e-5, atol=1e-5, msg=where)
            assert y.stride() == want_y.stride(), where
            torch.testing.assert_close(kernels.grad_input(g, x, w, stride, k // 2), want_dx,
                                       rtol=1e-5, atol=1e-5, msg=where)
            torch.testing.assert_close(kernels.grad_weight(g, x, w, stride, k // 2), want_dw,
                                       rtol=1e-4, atol=1e-4, msg=where)


def test_triton_path_through_the_module(triton_kernels):
    """``impl=triton`` runs the kernels behind DepthwiseConv2d's autograd."""
    _, device = triton_kernels
    ours, reference, x = _case(7, 2, 6, True, torch.float32)
    ours.impl = "triton"
    ours, reference, x = ours.to(device), reference.to(device), x.to(device)
    for a, b in zip(_outputs_and_grads(ours, x), _outputs_and_grads(reference, x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_counting_flops_runs_no_depthwise_kernel(autotune_cache, monkeypatch):
    """GFLOPs and the input-size check run on meta tensors: nothing is measured, stored or run."""
    from roadmap.config.steps import build_model
    from roadmap.models.shapes import check_input_size, count_gflops

    monkeypatch.setattr(depthwise, "_run", lambda *a: pytest.fail("a depthwise kernel ran"))
    model = build_model("kernel_11", "r50")
    assert count_gflops(model, 224) == pytest.approx(4.29, abs=0.01)  # Table 10
    check_input_size(model, 32)
    assert not depthwise.AUTOTUNER.calls and not autotune_cache.exists()
