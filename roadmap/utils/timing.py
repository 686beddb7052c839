"""The one timer of the house (benchmark, compare_models and the depthwise autotuner): calls timed with
``time.perf_counter``, the garbage collector off and CUDA synchronised around them, as ``torch.utils.benchmark.Timer``
times them. Not that Timer itself: its ``timeit(n)`` first makes max(n // 100, 2) untimed calls, so one timed call of
a model cost three (measured: ``Timer(...).timeit(1)`` calls its function 3 times, ``timeit(50)`` 52 times)."""
from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

import torch


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def call_seconds(fn: Callable[[], object], number: int = 1) -> float:
    """Seconds per call over ``number`` calls of ``fn`` in a row (no untimed call before them)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        _synchronize()
        start = time.perf_counter()
        for _ in range(number):
            fn()
        _synchronize()
        return (time.perf_counter() - start) / number
    finally:
        if collecting:
            gc.enable()


def median_seconds(*fns: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Median seconds per call of each ``fn`` over ``repeats`` timed calls after ``warmup`` untimed ones; several
    ``fns`` are timed in turn, so drift of a busy machine hits them alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, fn_times in zip(fns, times):
            fn_times.append(call_seconds(fn))
    return [statistics.median(t) for t in times]


def stable_seconds(fn: Callable[[], object], *, threshold: float, min_run_time: float,
                   max_run_time: float, block_s: float = 1e-3) -> tuple[float, float, int]:
    """(median, interquartile range, number of timed blocks) in seconds per call of ``fn``: after one call (a
    warm-up, and the size of a block), blocks of enough calls for ``block_s`` each (a timer's overhead is
    microseconds), at least 5 of them and ``min_run_time`` seconds, until their IQR is under ``threshold`` × the
    median or ``max_run_time`` seconds have passed. (``Timer.adaptive_autorange`` sizes its blocks for a 1e-4
    overhead, 100 ms each for a 1 ms call: seconds per path for nothing.)"""
    first = call_seconds(fn)
    number = max(1, round(block_s / max(first, 1e-9)))
    times, spent = [], first
    while True:
        times.append(call_seconds(fn, number))
        spent += times[-1] * number
        quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [0.0, times[0], 0.0]
        iqr, median = quartiles[2] - quartiles[0], statistics.median(times)
        if (len(times) >= 5 and spent >= min_run_time and iqr <= threshold * median) or spent >= max_run_time:
            return median, iqr, len(times)
