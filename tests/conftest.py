"""Suite-wide settings: one torch thread per test process.

`make test` runs pytest-xdist with 2 workers on 2 cores; torch's default of 2 threads each would
oversubscribe the cores and make small tensor ops many times slower.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
