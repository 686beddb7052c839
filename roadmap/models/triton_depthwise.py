"""Triton kernels for depthwise conv2d (square odd kernel, any stride, zero padding): forward, input
gradient, weight gradient — one of the paths ``roadmap.models.depthwise`` measures on CUDA.

Each program owns a tile of one output row: ``BLOCK_W`` positions × ``BLOCK_C`` channels, channels being the
contiguous axis in channels_last, so every load is coalesced there (other layouts work through strides, at
their cost). Triton's autotuner picks the tile per shape among :data:`TILES` (the tile does not change the
result: every output sums its taps in the same order). The forward pass and the input gradient are one
kernel (the gradient is the transposed convolution). Accumulation is in float32. The weight gradient sums
over the batch and rows in ``split`` partial sums (one program per channel block × kernel row × split),
added up in PyTorch.
With ``TRITON_INTERPRET=1`` set before this module is imported the kernels run on CPU tensors (tests).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from roadmap.models.depthwise_paths import memory_format_of, out_size

TILES = [triton.Config({"BLOCK_W": w, "BLOCK_C": c}, num_warps=warps)
         for w, c, warps in ((8, 64, 4), (4, 128, 4), (16, 32, 4), (8, 128, 8), (16, 64, 8))]
if triton.knobs.runtime.interpret:  # CPU tests: one tile, nothing to time
    TILES = TILES[:1]
WEIGHT_BLOCK_W, WEIGHT_BLOCK_C, NUM_WARPS = 8, 32, 4


@triton.jit
def _source(pos, tap, size, STRIDE: tl.constexpr, PAD: tl.constexpr, TRANSPOSED: tl.constexpr):
    """Where tap ``tap`` of position ``pos`` reads along one axis of length ``size``, and whether that lands on
    it: a convolution reads ``S·pos - PAD + tap``; its transpose (the input gradient) reads the output that
    tap fed, ``(pos + PAD - tap) / S``, when that divides."""
    if TRANSPOSED:
        shifted = pos + PAD - tap
        src = shifted // STRIDE
        ok = (shifted >= 0) & (shifted % STRIDE == 0) & (src < size)
    else:
        src = pos * STRIDE - PAD + tap
        ok = (src >= 0) & (src < size)
    return src, ok


@triton.autotune(configs=TILES, key=["C", "W_IN", "W_OUT", "K", "STRIDE", "TRANSPOSED"], cache_results=True)
@triton.jit
def _conv_kernel(in_ptr, w_ptr, b_ptr, out_ptr, C, H_IN, W_IN, H_OUT, W_OUT,
                 sin_n, sin_c, sin_h, sin_w, sout_n, sout_c, sout_h, sout_w,
                 STRIDE: tl.constexpr, PAD: tl.constexpr, K: tl.constexpr, HAS_BIAS: tl.constexpr,
                 TRANSPOSED: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    """out[n,c,h,w] = Σ_{i,j} in[n,c,source(h,i),source(w,j)] · w[c,i,j] (+ b[c]): the forward pass, or with
    ``TRANSPOSED`` the input gradient (``in`` = output gradient, ``out`` = input gradient)."""
    row = tl.program_id(0)
    n, h = row // H_OUT, row % H_OUT
    w = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    acc = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    for i in tl.static_range(K):
        src_h, h_ok = _source(h, i, H_IN, STRIDE, PAD, TRANSPOSED)
        for j in tl.static_range(K):
            src_w, w_ok = _source(w, j, W_IN, STRIDE, PAD, TRANSPOSED)
            mask = h_ok & w_ok[:, None] & c_ok[None, :]
            v = tl.load(in_ptr + n * sin_n + src_h * sin_h + src_w[:, None] * sin_w + c[None, :] * sin_c,
                        mask=mask, other=0.0)
            wv = tl.load(w_ptr + c * (K * K) + (i * K + j), mask=c_ok, other=0.0)
            acc += v.to(tl.float32) * wv.to(tl.float32)[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + n * sout_n + h * sout_h + w[:, None] * sout_w + c[None, :] * sout_c,
             acc.to(out_ptr.dtype.element_ty), mask=(w < W_OUT)[:, None] & c_ok[None, :])


@triton.jit
def _grad_weight_kernel(g_ptr, x_ptr, part_ptr, N, C, H, W, HO, WO, SPLIT,
                        sgn, sgc, sgh, sgw, sxn, sxc, sxh, sxw,
                        STRIDE: tl.constexpr, PAD: tl.constexpr, K: tl.constexpr, KP: tl.constexpr,
                        BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    """part[s,c,i,j] = Σ over rows r ≡ s (mod SPLIT) of Σ_wo g[n,c,ho,wo] · x[n,c,S·ho-PAD+i,S·wo-PAD+j]."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    i = tl.program_id(1)
    split = tl.program_id(2)
    j = tl.arange(0, KP)
    c_ok = c < C
    acc = tl.zeros((KP, BLOCK_C), dtype=tl.float32)
    for r in range(split, N * HO, SPLIT):
        n, ho = r // HO, r % HO
        h, h_ok = _source(ho, i, H, STRIDE, PAD, False)
        for w0 in range(0, WO, BLOCK_W):
            wo = w0 + tl.arange(0, BLOCK_W)
            wo_ok = wo < WO
            g_mask = h_ok & wo_ok[:, None] & c_ok[None, :]
            gv = tl.load(g_ptr + n * sgn + ho * sgh + wo[:, None] * sgw + c[None, :] * sgc, mask=g_mask, other=0.0)
            wi, wi_ok = _source(wo[None, :, None], j[:, None, None], W, STRIDE, PAD, False)  # KP × BLOCK_W × 1
            x_mask = h_ok & (j < K)[:, None, None] & wi_ok & wo_ok[None, :, None] & c_ok[None, None, :]
            xv = tl.load(x_ptr + n * sxn + h * sxh + wi * sxw + c[None, None, :] * sxc, mask=x_mask, other=0.0)
            acc += tl.sum(xv.to(tl.float32) * gv.to(tl.float32)[None, :, :], axis=1)
    out = part_ptr + ((split * C + c[None, :]) * K + i) * K + j[:, None]
    tl.store(out, acc, mask=(j < K)[:, None] & c_ok[None, :])


def _launch(inp: Tensor, w: Tensor, b: Tensor | None, out: Tensor, stride: int, padding: int, transposed: bool):
    n, c, h_out, w_out = out.shape
    k = w.shape[-1]
    grid = lambda meta: (n * h_out, triton.cdiv(w_out, meta["BLOCK_W"]), triton.cdiv(c, meta["BLOCK_C"]))
    _conv_kernel[grid](inp, w.reshape(c, k * k).contiguous(), b if b is not None else inp, out, c, inp.shape[2],
                       inp.shape[3], h_out, w_out, *inp.stride(), *out.stride(), STRIDE=stride, PAD=padding, K=k,
                       HAS_BIAS=b is not None, TRANSPOSED=transposed)
    return out


def forward(x: Tensor, w: Tensor, b: Tensor | None, stride: int, padding: int) -> Tensor:
    size = [out_size(d, w.shape[-1], stride, padding) for d in x.shape[2:]]
    y = torch.empty((*x.shape[:2], *size), dtype=x.dtype, device=x.device, memory_format=memory_format_of(x))
    return _launch(x, w, b, y, stride, padding, transposed=False)


def grad_input(g: Tensor, x: Tensor, w: Tensor, stride: int, padding: int) -> Tensor:
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format_of(x))
    return _launch(g, w, None, dx, stride, padding, transposed=True)


def grad_weight(g: Tensor, x: Tensor, w: Tensor, stride: int, padding: int) -> Tensor:
    n, c, h, wd = x.shape
    k = w.shape[-1]
    ho, wo = g.shape[2], g.shape[3]
    c_blocks = triton.cdiv(c, WEIGHT_BLOCK_C)
    split = max(1, min(n * ho, 1024 // (c_blocks * k)))  # enough programs to fill the GPU
    partial = torch.empty((split, c, k, k), dtype=torch.float32, device=x.device)
    _grad_weight_kernel[(c_blocks, k, split)](g, x, partial, n, c, h, wd, ho, wo, split, *g.stride(), *x.stride(),
                                              STRIDE=stride, PAD=padding, K=k, KP=triton.next_power_of_2(k),
                                              BLOCK_W=WEIGHT_BLOCK_W, BLOCK_C=WEIGHT_BLOCK_C, num_warps=NUM_WARPS)
    return partial.sum(0).unsqueeze(1).to(w.dtype)
