"""The one timer of the house (benchmark and depthwise autotuner): ``torch.utils.benchmark.Timer``, which
synchronises CUDA around every measurement, at the process's own thread count (its default is one thread)."""
from __future__ import annotations

import statistics
from collections.abc import Callable

import torch


def median_seconds(*fns: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Median seconds per call of each ``fn`` over ``repeats`` timed calls after ``warmup`` untimed ones; several
    ``fns`` are timed in turn, so drift of a busy machine hits them alike."""
    from torch.utils.benchmark import Timer  # imported when used: its import warns about CUDA_HOME on CPU machines

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
                   max_run_time: float) -> tuple[float, float, int]:
    """(median, interquartile range, number of timed blocks) in seconds per call of ``fn``, from
    ``Timer.adaptive_autorange``: blocks of calls are timed until their IQR is under ``threshold`` × the median
    (after at least ``min_run_time`` seconds) or ``max_run_time`` seconds have passed."""
    from torch.utils.benchmark import Timer

    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    measurement = timer.adaptive_autorange(threshold, min_run_time=min_run_time, max_run_time=max_run_time)
    return measurement.median, measurement.iqr, len(measurement.times)
