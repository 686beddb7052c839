"""Triton kernels for depthwise conv2d (square odd kernel, any stride, zero padding): forward, input
gradient, weight gradient — one of the paths ``roadmap.depthwise`` measures on CUDA.

Each program owns a tile of one output row: ``BLOCK_W`` positions × ``BLOCK_C`` channels, channels being the
contiguous axis in channels_last, so every load is coalesced there (other layouts work through strides, at
their cost). Triton's autotuner picks the tile per shape among :data:`TILES` (the tile does not change the
result: every output sums its taps in the same order). Accumulation is in float32. The weight gradient sums over the batch and rows in ``split``
partial sums (one program per channel block × kernel row × split), added up in PyTorch.
With ``TRITON_INTERPRET=1`` set before this module is imported the kernels run on CPU tensors (tests).
"""
from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor
import torch

TILES = [triton.Config({"BLOCK_W": w, "BLOCK_C": c}, num_warps=warps)
         for w, c, warps in ((8, 64, 4), (4, 128, 4), (16, 32, 4), (8, 128, 8), (16, 64, 8))]
if triton.knobs.runtime.interpret:  # CPU tests: one tile, nothing to time
    TILES = TILES[:1]
WEIGHT_BLOCK_W, WEIGHT_BLOCK_C, NUM_WARPS = 8, 32, 4


@triton.autotune(configs=TILES, key=["C", "W", "WO", "K", "STRIDE"], cache_results=True)
@triton.jit
def _forward_kernel(x_ptr, w_ptr, b_ptr, y_ptr, C, H, W, HO, WO,
                    sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                    STRIDE: tl.constexpr, PAD: tl.constexpr, K: tl.constexpr, HAS_BIAS: tl.constexpr,
                    BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    row = tl.program_id(0)
    n, ho = row // HO, row % HO
    wo = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    acc = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    for i in tl.static_range(K):
        h = ho * STRIDE - PAD + i
        h_ok = (h >= 0) & (h < H)
        for j in tl.static_range(K):
            wi = wo * STRIDE - PAD + j
            mask = h_ok & ((wi >= 0) & (wi < W))[:, None] & c_ok[None, :]
            xv = tl.load(x_ptr + n * sxn + h * sxh + wi[:, None] * sxw + c[None, :] * sxc, mask=mask, other=0.0)
            wv = tl.load(w_ptr + c * (K * K) + (i * K + j), mask=c_ok, other=0.0)
            acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    out_mask = (wo < WO)[:, None] & c_ok[None, :]
    tl.store(y_ptr + n * syn + ho * syh + wo[:, None] * syw + c[None, :] * syc,
             acc.to(y_ptr.dtype.element_ty), mask=out_mask)


@triton.autotune(configs=TILES, key=["C", "W", "WO", "K", "STRIDE"], cache_results=True)
@triton.jit
def _grad_input_kernel(g_ptr, w_ptr, dx_ptr, C, H, W, HO, WO,
                       sgn, sgc, sgh, sgw, sdn, sdc, sdh, sdw,
                       STRIDE: tl.constexpr, PAD: tl.constexpr, K: tl.constexpr,
                       BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    """dx[n,c,h,w] = Σ_{i,j} g[n,c,(h+PAD-i)/S,(w+PAD-j)/S] · w[c,i,j] over the taps that land on the grid."""
    row = tl.program_id(0)
    n, h = row // H, row % H
    wx = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    acc = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    for i in tl.static_range(K):
        th = h + PAD - i
        ho = th // STRIDE
        h_ok = (th >= 0) & (th % STRIDE == 0) & (ho < HO)
        for j in tl.static_range(K):
            tw = wx + PAD - j
            wo = tw // STRIDE
            mask = h_ok & ((tw >= 0) & (tw % STRIDE == 0) & (wo < WO))[:, None] & c_ok[None, :]
            gv = tl.load(g_ptr + n * sgn + ho * sgh + wo[:, None] * sgw + c[None, :] * sgc, mask=mask, other=0.0)
            wv = tl.load(w_ptr + c * (K * K) + (i * K + j), mask=c_ok, other=0.0)
            acc += gv.to(tl.float32) * wv.to(tl.float32)[None, :]
    out_mask = (wx < W)[:, None] & c_ok[None, :]
    tl.store(dx_ptr + n * sdn + h * sdh + wx[:, None] * sdw + c[None, :] * sdc,
             acc.to(dx_ptr.dtype.element_ty), mask=out_mask)


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
        h = ho * STRIDE - PAD + i
        h_ok = (h >= 0) & (h < H)
        for w0 in range(0, WO, BLOCK_W):
            wo = w0 + tl.arange(0, BLOCK_W)
            wo_ok = wo < WO
            g_mask = h_ok & wo_ok[:, None] & c_ok[None, :]
            gv = tl.load(g_ptr + n * sgn + ho * sgh + wo[:, None] * sgw + c[None, :] * sgc, mask=g_mask, other=0.0)
            wi = wo[None, :, None] * STRIDE - PAD + j[:, None, None]  # KP × BLOCK_W × 1
            x_mask = (h_ok & (j < K)[:, None, None] & (wi >= 0) & (wi < W) & wo_ok[None, :, None]
                      & c_ok[None, None, :])
            xv = tl.load(x_ptr + n * sxn + h * sxh + wi * sxw + c[None, None, :] * sxc, mask=x_mask, other=0.0)
            acc += tl.sum(xv.to(tl.float32) * gv.to(tl.float32)[None, :, :], axis=1)
    out = part_ptr + ((split * C + c[None, :]) * K + i) * K + j[:, None]
    tl.store(out, acc, mask=(j < K)[:, None] & c_ok[None, :])


def _out_size(size: int, k: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - k) // stride + 1


def _empty_like_layout(shape, like: Tensor) -> Tensor:
    fmt = torch.channels_last if (not like.is_contiguous()
                                  and like.is_contiguous(memory_format=torch.channels_last)) else torch.contiguous_format
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)


def forward(x: Tensor, w: Tensor, b: Tensor | None, stride: int, padding: int) -> Tensor:
    n, c, h, wd = x.shape
    k = w.shape[-1]
    ho, wo = _out_size(h, k, stride, padding), _out_size(wd, k, stride, padding)
    y = _empty_like_layout((n, c, ho, wo), x)
    grid = lambda meta: (n * ho, triton.cdiv(wo, meta["BLOCK_W"]), triton.cdiv(c, meta["BLOCK_C"]))
    _forward_kernel[grid](x, w.reshape(c, k * k).contiguous(), b if b is not None else x, y, c, h, wd, ho, wo,
                          *x.stride(), *y.stride(), STRIDE=stride, PAD=padding, K=k, HAS_BIAS=b is not None)
    return y


def grad_input(g: Tensor, x: Tensor, w: Tensor, stride: int, padding: int) -> Tensor:
    n, c, h, wd = x.shape
    k = w.shape[-1]
    dx = _empty_like_layout(x.shape, x)
    grid = lambda meta: (n * h, triton.cdiv(wd, meta["BLOCK_W"]), triton.cdiv(c, meta["BLOCK_C"]))
    _grad_input_kernel[grid](g, w.reshape(c, k * k).contiguous(), dx, c, h, wd, g.shape[2], g.shape[3],
                             *g.stride(), *dx.stride(), STRIDE=stride, PAD=padding, K=k)
    return dx


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
