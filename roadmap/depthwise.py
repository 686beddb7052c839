"""Depthwise convolution at the cost its arithmetic implies, for every kernel size.

PyTorch's depthwise kernels fall off a cliff at large kernels: on CPU, k=11 in NCHW leaves oneDNN for a
slow reference loop and the weight gradient costs 5-15× the forward; on an H100 in channels_last bf16,
cuDNN's k=9/11 kernels are 7-10× slower than k=7 for 1.65-2.5× the work. :class:`DepthwiseConv2d` is an
``nn.Conv2d`` (same parameters, same state-dict keys) whose three computations — forward, input gradient,
weight gradient — each run on whichever *path* is fastest for the device, dtype, memory layout, shape and
kernel, measured:

* ``native``  PyTorch's own kernel on the tensors as they come;
* ``switch``  the same kernel in the other memory layout (NCHW ↔ channels_last), converting in and out;
* ``fft``     (weight gradient) the correlation of input and output gradient, summed over the batch in the
  frequency domain: its cost does not grow with the kernel;
* ``triton``  (CUDA, Triton installed) channels-last Triton kernels (``roadmap.triton_depthwise``).

``impl="auto"`` (the default) times every available path on the first call of each (op, device, dtype,
layout, shape, kernel, stride), keeps the fastest whose result matches ``native`` (a path that disagrees
is never picked), and stores the choice in ``$ROADMAP_CACHE_DIR/depthwise.json`` (default
``~/.cache/convnext-roadmap``) so that a resumed run picks what the first attempt picked. Any path name
forces that path where it is available, ``native`` is plain ``nn.Conv2d``. The three ops are
``torch.library`` custom ops, so ``torch.compile`` keeps them whole and ``FlopCounterMode`` counts them.
"""
from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import conv_flop_count, register_flop_formula

from roadmap.depthwise_paths import IMPLS, layout, memory_format_of, out_size
from roadmap.devices import device_name
from roadmap.errors import ConfigError
from roadmap.files import write_text
from roadmap.timing import median_seconds

_REPEATS = {"cpu": 3, "cuda": 10}
_RTOL = {torch.float32: 1e-3, torch.float64: 1e-6, torch.bfloat16: 2e-2, torch.float16: 5e-3}


# ---------------------------------------------------------------------------------------------- paths
def _other(t: Tensor) -> Tensor:
    other = torch.contiguous_format if layout(t) == "cl" else torch.channels_last
    return t.contiguous(memory_format=other)


def _backward(g: Tensor, x: Tensor, w: Tensor, stride: int, padding: int, mask: list[bool]):
    return torch.ops.aten.convolution_backward(g, x, w, None, [stride] * 2, [padding] * 2, [1, 1], False,
                                               [0, 0], w.shape[0], mask)


def _forward_native(x, w, b, stride, padding):
    return F.conv2d(x, w, b, stride, padding, 1, w.shape[0])


def _forward_switch(x, w, b, stride, padding):
    out = F.conv2d(_other(x), _other(w), b, stride, padding, 1, w.shape[0])
    return out.contiguous(memory_format=memory_format_of(x))


def _grad_input_native(g, x, w, stride, padding):
    return _backward(g, x, w, stride, padding, [True, False, False])[0]


def _grad_input_switch(g, x, w, stride, padding):
    out = _backward(_other(g), _other(x), _other(w), stride, padding, [True, False, False])[0]
    return out.contiguous(memory_format=memory_format_of(x))


def _grad_weight_native(g, x, w, stride, padding):
    return _backward(g, x, w, stride, padding, [False, True, False])[1]


def _grad_weight_switch(g, x, w, stride, padding):
    return _backward(_other(g), _other(x), _other(w), stride, padding, [False, True, False])[1]


@functools.cache
def _fast_len(n: int) -> int:
    import scipy.fft

    return scipy.fft.next_fast_len(n, real=True)


def _grad_weight_fft(g, x, w, stride, padding):
    """∂L/∂w[c,i,j] = Σ_{n,h,w} g[n,c,h,w] · x_pad[n,c,s·h+i,s·w+j]: one real FFT of the padded input and of
    the (stride-dilated) output gradient, their product summed over the batch, one inverse FFT per channel.
    The FFT size is at least the padded input, so the circular correlation equals the linear one at the
    k×k lags read back."""
    k, dtype = w.shape[-1], torch.promote_types(x.dtype, torch.float32)  # bf16/fp16 FFTs in float32
    xp = F.pad(x.to(dtype), (padding,) * 4)
    if stride > 1:  # output gradient back on the input grid, zeros between
        dilated = g.new_zeros((*g.shape[:2], (g.shape[2] - 1) * stride + 1, (g.shape[3] - 1) * stride + 1),
                              dtype=dtype)
        dilated[..., ::stride, ::stride] = g
        g = dilated
    size = (_fast_len(xp.shape[-2]), _fast_len(xp.shape[-1]))
    spectrum = (torch.fft.rfft2(xp, s=size) * torch.fft.rfft2(g.to(dtype), s=size).conj()).sum(0)
    out = torch.fft.irfft2(spectrum, s=size)[:, :k, :k].unsqueeze(1)
    return out.to(w.dtype)


def _triton():
    try:
        from roadmap import triton_depthwise
    except ImportError:  # Triton missing or unusable on this platform
        return None
    return triton_depthwise


def _candidates(op: str, device: torch.device, impl: str = "auto") -> dict[str, Callable]:
    """The paths of ``op`` that can run on ``device``, in order of preference on a tie. Triton's kernels run on
    CUDA, or on CPU tensors under its interpreter (``TRITON_INTERPRET=1``) when ``impl`` forces them."""
    table = {"forward": {"native": _forward_native, "switch": _forward_switch},
             "grad_input": {"native": _grad_input_native, "switch": _grad_input_switch},
             "grad_weight": {"native": _grad_weight_native, "switch": _grad_weight_switch,
                             "fft": _grad_weight_fft}}[op]
    if device.type == "cuda" or impl == "triton":
        triton_ops = _triton()
        if triton_ops is not None:
            table["triton"] = getattr(triton_ops, op)
    return table


# ------------------------------------------------------------------------------------------ autotune
def cache_file() -> Path:
    root = os.environ.get("ROADMAP_CACHE_DIR") or Path.home() / ".cache" / "convnext-roadmap"
    return Path(root) / "depthwise.json"


class Autotuner:
    """The fastest correct path per key, measured once per machine and kept in :func:`cache_file`."""

    def __init__(self):
        self.choices: dict[str, dict] | None = None

    def _load(self) -> dict[str, dict]:
        if self.choices is None:
            try:
                self.choices = json.loads(cache_file().read_text())
            except (OSError, ValueError):  # none yet, or unreadable: measure again
                self.choices = {}
        return self.choices

    def _save(self, key: str, entry: dict) -> None:
        path = cache_file()
        try:
            on_disk = json.loads(path.read_text())
        except (OSError, ValueError):
            on_disk = {}
        on_disk[key] = entry  # merge: other processes may have added keys meanwhile
        try:
            write_text(path, json.dumps(on_disk, indent=1, sort_keys=True))
        except OSError:  # read-only home: the choice lives for this process only
            pass

    def choose(self, key: str, candidates: dict[str, Callable], args: tuple) -> str:
        """The stored choice for ``key``, or measure every candidate on ``args`` and store the fastest correct."""
        choices = self._load()
        if key in choices and choices[key]["path"] in candidates:
            return choices[key]["path"]
        device = args[0].device
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return "native"  # no timing inside a CUDA graph capture
        reference = candidates["native"](*args)
        tol = _RTOL.get(reference.dtype, 1e-3) * max(reference.abs().max().item(), 1e-12)
        times, errors = {}, {}
        for name, fn in candidates.items():
            try:
                out = reference if name == "native" else fn(*args)
                errors[name] = (out.float() - reference.float()).abs().max().item()
                if errors[name] > tol:
                    continue
                times[name] = median_seconds(lambda: fn(*args), warmup=1, repeats=_REPEATS.get(device.type, 3))[0]
            except Exception as error:  # a path that cannot run this case (e.g. Triton compile) is skipped
                errors[name] = repr(error)[:200]
        best = min(times, key=times.get)
        entry = {"path": best, "ms": {n: round(t * 1e3, 4) for n, t in times.items()},
                 "max_abs_error": errors, "tolerance": tol}
        choices[key] = entry
        self._save(key, entry)
        return best


AUTOTUNER = Autotuner()


def _run(op: str, impl: str, args: tuple) -> Tensor:
    """Run ``op`` on ``args`` (tensors, then stride and padding) on the path ``impl`` names, or on the measured
    fastest one for ``auto``."""
    candidates = _candidates(op, args[0].device, impl)
    if impl != "auto":
        return candidates.get(impl, candidates["native"])(*args)
    x, w = args[:2] if op == "forward" else args[1:3]
    stride, padding = args[-2:]
    key = "|".join([op, device_name(str(x.device)), str(x.dtype).removeprefix("torch."),
                    "/".join(layout(a) for a in args if isinstance(a, Tensor) and a.dim() == 4 and a is not w),
                    "x".join(map(str, x.shape)), f"k{w.shape[-1]}", f"s{stride}", f"p{padding}"])
    return candidates[AUTOTUNER.choose(key, candidates, args)](*args)


# ---------------------------------------------------------------------------------------- custom ops
@torch.library.custom_op("roadmap::depthwise_conv", mutates_args=())
def depthwise_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: int, padding: int,
                   impl: str) -> Tensor:
    """Depthwise conv2d (``groups = channels``, square kernel, no dilation) on the path ``impl`` picks."""
    out = _run("forward", impl, (x, weight, bias, stride, padding))
    return out.contiguous(memory_format=memory_format_of(x))


@depthwise_conv.register_fake
def _(x, weight, bias, stride, padding, impl):
    size = [out_size(d, weight.shape[-1], stride, padding) for d in x.shape[2:]]
    return torch.empty((*x.shape[:2], *size), dtype=x.dtype, device=x.device, memory_format=memory_format_of(x))


@torch.library.custom_op("roadmap::depthwise_conv_grad_input", mutates_args=())
def depthwise_conv_grad_input(grad: Tensor, x: Tensor, weight: Tensor, stride: int, padding: int,
                              impl: str) -> Tensor:
    out = _run("grad_input", impl, (grad, x, weight, stride, padding))
    return out.contiguous(memory_format=memory_format_of(x))


@depthwise_conv_grad_input.register_fake
def _(grad, x, weight, stride, padding, impl):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format_of(x))


@torch.library.custom_op("roadmap::depthwise_conv_grad_weight", mutates_args=())
def depthwise_conv_grad_weight(grad: Tensor, x: Tensor, weight: Tensor, stride: int, padding: int,
                               impl: str) -> Tensor:
    out = _run("grad_weight", impl, (grad, x, weight, stride, padding))
    return torch.empty_like(weight).copy_(out)


@depthwise_conv_grad_weight.register_fake
def _(grad, x, weight, stride, padding, impl):
    return torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    x, weight, bias, stride, padding, impl = inputs
    ctx.save_for_backward(x, weight)
    ctx.stride, ctx.padding, ctx.impl = stride, padding, impl


def _depthwise_backward(ctx, grad):
    x, weight = ctx.saved_tensors
    args = (grad, x, weight, ctx.stride, ctx.padding, ctx.impl)
    grad_x = depthwise_conv_grad_input(*args) if ctx.needs_input_grad[0] else None
    grad_w = depthwise_conv_grad_weight(*args) if ctx.needs_input_grad[1] else None
    grad_b = grad.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None
    return grad_x, grad_w, grad_b, None, None, None


depthwise_conv.register_autograd(_depthwise_backward, setup_context=_setup_context)


@register_flop_formula(torch.ops.roadmap.depthwise_conv)
def _depthwise_flops(x_shape, w_shape, bias_shape, stride, padding, impl, *, out_shape, **kwargs) -> int:
    return conv_flop_count(list(x_shape), list(w_shape), list(out_shape), transposed=False)


# -------------------------------------------------------------------------------------------- module
class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(dim, dim, k, stride, k // 2, groups=dim)`` whose forward and gradients run on the fastest
    correct path (module docstring). ``impl``: ``auto`` | ``native`` | ``switch`` | ``fft`` | ``triton``."""

    def __init__(self, dim: int, kernel_size: int, stride: int = 1, bias: bool = True, impl: str = "auto"):
        super().__init__(dim, dim, kernel_size, stride, kernel_size // 2, groups=dim, bias=bias)
        self.impl = impl

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, value: str) -> None:
        if value not in IMPLS:
            raise ConfigError(f"unknown depthwise implementation {value!r}; allowed: {', '.join(IMPLS)}")
        self._impl = value

    def forward(self, x: Tensor) -> Tensor:
        if self.impl == "native" or x.device.type == "meta":
            return super().forward(x)
        weight, bias = self.weight, self.bias
        if torch.is_autocast_enabled(x.device.type):  # autocast's rule for convolutions: all in its lower precision
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        return depthwise_conv(x, weight, bias, self.stride[0], self.padding[0], self.impl)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, impl={self.impl}"


def set_depthwise_impl(model: nn.Module, impl: str) -> nn.Module:
    """Set the path of every :class:`DepthwiseConv2d` in ``model`` (``auto`` measures; see the module doc)."""
    for module in model.modules():
        if isinstance(module, DepthwiseConv2d):
            module.impl = impl
    return model
