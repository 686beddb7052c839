"""Depthwise convolution at the cost its arithmetic implies, for every kernel size.

:class:`DepthwiseConv2d` is an ``nn.Conv2d`` (same parameters, same state-dict keys) whose three computations
— forward, input gradient, weight gradient — each run on whichever *path* is fastest for the device, dtype,
memory layouts, shape, kernel, stride and padding, measured:

* ``native``  PyTorch's own kernel on the tensors as they come (``nn.Conv2d``);
* ``switch``  the same kernel in the other memory layout (NCHW ↔ channels_last), converting in and out;
* ``crop``    (a kernel wider than twice the input) without the taps that only ever meet the zero padding;
* ``flip``    (input gradient, stride 1) a forward convolution of the output gradient with the flipped kernel;
* ``fft``     (weight gradient) the correlation of input and output gradient, summed over the batch in the
  frequency domain: its cost does not grow with the kernel;
* ``triton``  (CUDA, Triton installed) channels-last Triton kernels (``roadmap.models.triton_depthwise``).

``impl="auto"`` (the default) makes the choice on the first call of each such case (:func:`measure`): every
path runs on seeded inputs of the case's shapes and strides, never the live tensors; a path whose result is
off ``native``'s by more than the dtype's tolerance is rejected; the others are timed by
:func:`roadmap.utils.timing.stable_seconds` to a stable median; the fastest wins unless within 2% of one listed
above it. The choice, with every path's median, IQR and error and its margin, is stored in ``$ROADMAP_CACHE_DIR/depthwise.json``
(default ``~/.cache/convnext-roadmap``) under a key that carries a digest of this code (:func:`paths_version`),
so a change to a path re-measures. ``python -m roadmap.depthwise_report`` shows a step's choices and
``--retune`` measures them again; a checkpoint keeps its run's paths, so a resumed run takes them again.
Any path name forces that path where it is available, else ``native``. The three ops are ``torch.library``
custom ops, so ``torch.compile`` keeps them whole and ``FlopCounterMode`` counts them.
"""
from __future__ import annotations

import collections
import functools
import hashlib
import importlib.metadata
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import conv_flop_count, register_flop_formula

from roadmap.errors import ConfigError
from roadmap.models.depthwise_paths import IMPLS, layout, memory_format_of, out_size
from roadmap.utils.cpu_allocator import retain_freed_memory
from roadmap.utils.devices import device_name
from roadmap.utils.files import write_text
from roadmap.utils.timing import stable_seconds



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


def _padding_only_taps(shape: torch.Size, k: int, stride: int, padding: int) -> int:
    """How many kernel rows and columns on every side only ever meet the zero padding (a kernel wider than
    twice the input): they add nothing, so the ``crop`` paths run the kernel without them."""
    taps = k
    for size in shape[2:]:
        last = stride * (out_size(size, k, stride, padding) - 1)  # where the last output's window starts, padded
        taps = min(taps, max(0, padding - last), max(0, k - size - padding))
    return taps


def _cropped(w: Tensor, taps: int) -> Tensor:
    return w[..., taps:w.shape[-2] - taps, taps:w.shape[-1] - taps].contiguous(memory_format=memory_format_of(w))


def _forward_crop(x, w, b, stride, padding):
    taps = _padding_only_taps(x.shape, w.shape[-1], stride, padding)
    return _forward_native(x, _cropped(w, taps), b, stride, padding - taps)


def _grad_input_crop(g, x, w, stride, padding):
    taps = _padding_only_taps(x.shape, w.shape[-1], stride, padding)
    return _grad_input_native(g, x, _cropped(w, taps), stride, padding - taps)


def _grad_weight_crop(g, x, w, stride, padding):
    taps = _padding_only_taps(x.shape, w.shape[-1], stride, padding)
    return F.pad(_grad_weight_native(g, x, _cropped(w, taps), stride, padding - taps), (taps,) * 4)


def _grad_input_flip(g, x, w, stride, padding):
    """At stride 1 the input gradient is a forward convolution of the output gradient with the flipped kernel
    (padding k - 1 - p), which oneDNN often runs faster than its backward-data kernel."""
    return _forward_native(g, w.flip(-2, -1), None, 1, w.shape[-1] - 1 - padding)


@functools.cache
def _fft_len(n: int) -> int:
    """The smallest even length >= ``n`` with no prime factor above 11: the real FFTs PyTorch's CPU backend
    (MKL) runs fastest (on 1536 planes, 66² took 0.75× the time of 72², SciPy's 5-smooth choice; 62² 4.5× 64²)."""
    def smooth(m: int) -> bool:
        for p in (2, 3, 5, 7, 11):
            while m % p == 0:
                m //= p
        return m == 1

    return next(m for m in range(n + n % 2, 2 * n + 2, 2) if smooth(m))


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
    size = (_fft_len(xp.shape[-2]), _fft_len(xp.shape[-1]))
    spectrum = (torch.fft.rfft2(xp, s=size) * torch.fft.rfft2(g.to(dtype), s=size).conj()).sum(0)
    out = torch.fft.irfft2(spectrum, s=size)[:, :k, :k].unsqueeze(1)
    return out.to(w.dtype)


def _triton():
    try:
        from roadmap.models import triton_depthwise
    except ImportError:  # Triton missing or unusable on this platform
        return None
    return triton_depthwise


def _candidates(op: str, args: tuple, impl: str = "auto") -> dict[str, Callable]:
    """The paths of ``op`` that can run on ``args``, in order of preference on a tie. Triton's kernels run on
    CUDA, or on CPU tensors under its interpreter (``TRITON_INTERPRET=1``) when ``impl`` forces them."""
    table = {"forward": {"native": _forward_native, "switch": _forward_switch},
             "grad_input": {"native": _grad_input_native, "switch": _grad_input_switch},
             "grad_weight": {"native": _grad_weight_native, "switch": _grad_weight_switch}}[op]
    x, w = args[:2] if op == "forward" else args[1:3]
    stride, padding = args[-2:]
    if _padding_only_taps(x.shape, w.shape[-1], stride, padding):
        table["crop"] = {"forward": _forward_crop, "grad_input": _grad_input_crop, "grad_weight": _grad_weight_crop}[op]
    if op == "grad_input" and stride == 1 and padding < w.shape[-1]:
        table["flip"] = _grad_input_flip
    if op == "grad_weight":
        table["fft"] = _grad_weight_fft
    if x.device.type == "cuda" or impl == "triton":
        triton_ops = _triton()
        if triton_ops is not None:
            table["triton"] = getattr(triton_ops, op)
    return table


# ------------------------------------------------------------------------------------------ autotune
_RTOL = {torch.float32: 1e-3, torch.float64: 1e-6, torch.bfloat16: 2e-2, torch.float16: 5e-3}
# per path: blocks of calls until their IQR is under 10% of the median (Timer's default) or the time is up
_TIMING = dict(threshold=0.1, min_run_time=0.02, max_run_time=0.5)
_TIE = 0.02  # a path must beat every earlier one (native first) by more than this to be chosen over it
_SOURCES = ("depthwise.py", "depthwise_paths.py", "triton_depthwise.py")


@functools.cache
def paths_version() -> str:
    """A digest of the paths' code (this module, the path rules, the Triton kernels) and of torch's and
    Triton's versions: a stored choice is reused only by the code that measured it."""
    digest = hashlib.sha256(torch.__version__.encode())
    try:
        digest.update(importlib.metadata.version("triton").encode())
    except importlib.metadata.PackageNotFoundError:
        pass
    for name in _SOURCES:
        digest.update(Path(__file__).with_name(name).read_bytes())
    return digest.hexdigest()[:12]


def cache_file() -> Path:
    root = os.environ.get("ROADMAP_CACHE_DIR") or Path.home() / ".cache" / "convnext-roadmap"
    return Path(root) / "depthwise.json"


def measurement_inputs(args: tuple, seed: int = 0) -> tuple:
    """Seeded standard-normal tensors with the shapes, dtypes, devices and layouts of ``args`` (the weight
    scaled by 1/k, so every output is of order one), other arguments as they are: what a path is timed and
    checked on, never the live tensors (which may be uninitialised, huge or not finite)."""
    gen = torch.Generator(device=args[0].device).manual_seed(seed)
    made = []
    for a in args:
        if isinstance(a, Tensor):
            values = torch.randn(a.shape, dtype=a.dtype, device=a.device, generator=gen)
            if a.dim() == 4 and a.shape[1] == 1:  # the depthwise weight (C, 1, k, k)
                values /= a.shape[-1]
            a = torch.empty_like(a).copy_(values)  # a's strides where they are dense (expanded ones are not)
        made.append(a)
    return tuple(made)


def measure(candidates: dict[str, Callable], args: tuple) -> dict:
    """Every candidate on ``args``: its error against ``native`` (off by more than the dtype's relative
    tolerance × max|native|, NaN included: rejected), then the median and IQR of its time. The chosen path is
    the fastest, unless within ``_TIE`` of one earlier in ``candidates``; ``margin``: the runner-up's time
    over the chosen one's, minus 1. Timed with the allocator settings every entry point uses
    (:mod:`roadmap.utils.cpu_allocator`), so that a time is the kernel's, not the page faults' of its output."""
    retain_freed_memory()
    reference = candidates["native"](*args)
    if not torch.isfinite(reference).all():
        raise RuntimeError(f"the native depthwise conv gave non-finite values on seeded inputs of shapes "
                           f"{[tuple(a.shape) for a in args if isinstance(a, Tensor)]}: no path can be checked")
    tolerance = _RTOL.get(reference.dtype, 1e-3) * max(reference.abs().max().item(), 1e-30)
    ms, iqr_ms, errors = {}, {}, {}
    for name, fn in candidates.items():
        try:
            out = reference if name == "native" else fn(*args)
            errors[name] = (out.float() - reference.float()).abs().max().item()
            if not errors[name] <= tolerance:  # NaN is not <=
                continue
            median, iqr, _ = stable_seconds(lambda: fn(*args), **_TIMING)
            ms[name], iqr_ms[name] = round(median * 1e3, 4), round(iqr * 1e3, 4)
        except Exception as error:  # a path that cannot run this case (e.g. Triton compile) is skipped
            errors[name] = repr(error)[:200]
    fastest = min(ms, key=ms.get)
    path = next(name for name in ms if ms[name] <= ms[fastest] * (1 + _TIE))
    others = [t for name, t in ms.items() if name != path]
    return {"path": path, "ms": ms, "iqr_ms": iqr_ms, "margin": round(min(others) / ms[path] - 1, 4) if others
            else None, "max_abs_error": errors, "tolerance": tolerance}


class Autotuner:
    """The path per key, measured once per machine and code version (:func:`measure`) and kept in
    :func:`cache_file`; ``retune`` measures each key once more in this process. Pinned paths (a checkpoint's,
    :meth:`pin`) outrank the file, so a resumed run takes its first attempt's paths."""

    def __init__(self, retune: bool = False):
        self.retune = retune
        self.choices: dict[str, dict] | None = None
        self.pinned: dict[str, str] = {}
        self.measured: set[str] = set()
        self.calls: collections.Counter[str] = collections.Counter()

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
        """The path for ``key``: pinned, stored, or measured on :func:`measurement_inputs` like ``args``."""
        self.calls[key] += 1
        if self.pinned.get(key) in candidates:
            return self.pinned[key]
        choices = self._load()
        stored = choices.get(key, {}).get("path")
        if stored in candidates and (not self.retune or key in self.measured):
            return stored
        if args[0].device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return "native"  # no timing inside a CUDA graph capture
        choices[key] = measure(candidates, measurement_inputs(args))
        self.measured.add(key)
        self._save(key, choices[key])
        return choices[key]["path"]

    def used(self) -> dict[str, str]:
        """The path of every key this process has run (what a checkpoint pins)."""
        choices = self._load()
        return {key: self.pinned.get(key) or choices[key]["path"] for key in self.calls
                if key in self.pinned or key in choices}

    def pin(self, paths: dict[str, str]) -> None:
        self.pinned.update(paths)


AUTOTUNER = Autotuner()


def op_key(op: str, args: tuple) -> str:
    """op | device | dtype | layouts of the 4-d tensors but the weight | input shape | k | stride | padding |
    :func:`paths_version`."""
    x, w = args[:2] if op == "forward" else args[1:3]
    stride, padding = args[-2:]
    return "|".join([op, device_name(str(x.device)), str(x.dtype).removeprefix("torch."),
                     "/".join(layout(a) for a in args if isinstance(a, Tensor) and a.dim() == 4 and a is not w),
                     "x".join(map(str, x.shape)), f"k{w.shape[-1]}", f"s{stride}", f"p{padding}", paths_version()])


def _run(op: str, impl: str, args: tuple) -> Tensor:
    """Run ``op`` on ``args`` (tensors, then stride and padding) on the path ``impl`` names, or on the chosen
    one for ``auto``."""
    candidates = _candidates(op, args, impl)
    if impl != "auto":
        return candidates.get(impl, candidates["native"])(*args)
    return candidates[AUTOTUNER.choose(op_key(op, args), candidates, args)](*args)


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
