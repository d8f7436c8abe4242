"""Helpers shared by the benchmarks."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch


def one_thread(body: Callable[[bool], dict]) -> Callable[..., dict]:
    """``run(quick=False)`` that times ``body(quick)`` with one torch thread (small kernels: one thread is the
    fastest and far the least noisy on a shared 2-core machine), the caller's thread count restored afterwards."""

    @functools.wraps(body)
    def run(quick: bool = False) -> dict:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return body(quick)
        finally:
            torch.set_num_threads(threads)

    return run
