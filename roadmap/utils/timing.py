"""The one timer of the house (benchmark and depthwise autotuner): ``torch.utils.benchmark.Timer``, which
synchronises CUDA around every measurement, at the process's own thread count (its default is one thread)."""
from __future__ import annotations

import logging
import statistics
from collections.abc import Callable

import torch

# torch.utils.benchmark imports torch.utils.cpp_extension, which warns "No CUDA runtime is found, using CUDA_HOME=..."
# on a machine without CUDA: advice for building CUDA extensions, which nothing here does
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def median_seconds(*fns: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Median seconds per call of each ``fn`` over ``repeats`` timed calls after ``warmup`` untimed ones; several
    ``fns`` are timed in turn, so drift of a busy machine hits them alike."""
    from torch.utils.benchmark import Timer  # imported when used: it imports torch's extension builder


    timers = [Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()) for fn in fns]
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for timer, fn_times in zip(timers, times):
            fn_times.append(timer.timeit(1).median)
    return [statistics.median(t) for t in times]


def stable_seconds(fn: Callable[[], object], *, threshold: float, min_run_time: float,
                   max_run_time: float, block_s: float = 1e-3) -> tuple[float, float, int]:
    """(median, interquartile range, number of timed blocks) in seconds per call of ``fn``: after one untimed
    call, ``Timer.timeit`` blocks of enough calls for ``block_s`` each (a timer's overhead is microseconds), at
    least 5 of them and ``min_run_time`` seconds, until their IQR is under ``threshold`` × the median or
    ``max_run_time`` seconds have passed. (``Timer.adaptive_autorange`` sizes its blocks for a 1e-4 overhead,
    100 ms each for a 1 ms call: seconds per path for nothing.)"""
    from torch.utils.benchmark import Timer

    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    first = timer.timeit(1).median  # warm-up, and the size of a block
    number = max(1, round(block_s / max(first, 1e-9)))
    times, spent = [], first
    while True:
        times.append(timer.timeit(number).median)
        spent += times[-1] * number
        quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [0.0, times[0], 0.0]
        iqr, median = quartiles[2] - quartiles[0], statistics.median(times)
        if (len(times) >= 5 and spent >= min_run_time and iqr <= threshold * median) or spent >= max_run_time:
            return median, iqr, len(times)
