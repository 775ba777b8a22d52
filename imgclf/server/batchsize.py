"""Each version's most efficient batch size, measured when it loads.

Bigger batches are not always faster per image. Past a size that depends on the CPU
(its caches and cores) and on the image size, a ResNet-50 call runs slower per image:
on the 2-core AVX2 machine of docs/BENCHMARKS.md, 224 px images ran 16-18 images/s at
batch 4-8 against 14 at 32. A batcher that fills batches to `max_batch_size` there loses
throughput exactly when load is highest.
TF Serving leaves this to the operator (`allowed_batch_sizes`); here the server times
the version's own batch call at 1, 2, 4, ... images up to `max_batch_size` and, where
the largest size is clearly slower per image, caps its batches at the knee.
"""

from __future__ import annotations

import time
from collections.abc import Callable

_KEEP = 0.9  # the largest size stays unless its rate is below this fraction of the best
_WITHIN = 0.95  # else the cap is the smallest size at least this fraction of the best rate
_PAST_KNEE = 0.85  # a size below this fraction of the best so far ends the measurement
_MIN_CALLS = 2  # timed calls per size (after one untimed call)
_MAX_CALLS = 6
_MIN_SECONDS = 0.05  # and on to at least this long (small batches are quick and noisy)


def candidate_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, ... below max_batch_size, then max_batch_size itself."""
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch_size]


def measure_rates(
    run: Callable[[int], object],
    max_batch_size: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[int, float]:
    """Images per second of `run(n)` for each candidate size n.

    Each size gets one untimed call first (the first call at a new shape builds its
    kernels, which a served batch of that size then finds ready), then the fastest of
    its timed calls counts: interference only ever makes a call slower. Sizes past the
    knee are slower and cost the most, so the measurement stops at the first one that
    runs below `_PAST_KNEE` of the best rate so far.
    """
    rates: dict[int, float] = {}
    for size in candidate_sizes(max_batch_size):
        run(size)
        fastest, calls, spent = float("inf"), 0, 0.0
        while calls < _MIN_CALLS or (spent < _MIN_SECONDS and calls < _MAX_CALLS):
            started = clock()
            run(size)
            took = clock() - started
            fastest, calls, spent = min(fastest, took), calls + 1, spent + took
        rates[size] = size / max(fastest, 1e-9)
        if rates[size] < _PAST_KNEE * max(rates.values()):
            break
    return rates


def choose_limit(rates: dict[int, float]) -> int:
    """The largest size measured, unless it is clearly slower than the best (below
    `_KEEP` of its rate); then the smallest size within `_WITHIN` of the best.

    Between sizes whose rates differ by a few percent the timings cannot tell which is
    faster (at 64 px the load-time measurement saw batch 32 3% ahead of 16 where the
    in-process benchmark saw 9%, and a cap of 16 against 32 served 32 clients at the
    same rate); a clear knee (224 px: batch 32 at 0.81 of batch 8) is worth a cap.
    """
    best, largest = max(rates.values()), max(rates)
    if rates[largest] >= _KEEP * best:
        return largest
    return min(size for size, rate in rates.items() if rate >= _WITHIN * best)


def describe(rates: dict[int, float]) -> str:
    """'1: 37, 2: 61, ...' images/s by batch size, for the log."""
    return ", ".join(f"{size}: {rate:.3g}" for size, rate in sorted(rates.items()))
