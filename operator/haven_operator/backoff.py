"""Retry delays: exponential from `base`, bounded by `cap`, with jitter so that many objects
failing together (an apiserver restart) do not retry in lockstep."""

from __future__ import annotations

import random

BASE, CAP = 1.0, 60.0


def delay(failures: int, base: float = BASE, cap: float = CAP, rand=random.random) -> float:
    """Seconds to wait after `failures` consecutive failures (0: none, no wait)."""
    if failures <= 0:
        return 0.0
    step = min(cap, base * 2 ** min(failures - 1, 32))
    return step * (0.8 + 0.4 * rand()) if step < cap else cap * (0.9 + 0.1 * rand())


def jittered(interval: float, rand=random.random, spread: float = 0.2) -> float:
    """`interval` give or take `spread` of it."""
    return interval * (1 - spread + 2 * spread * rand())
