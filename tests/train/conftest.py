"""Training tests run tiny networks: one thread each is faster than two fighting over a shared CPU."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
