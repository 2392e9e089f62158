"""Shared test settings."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models on one CPU thread: their microsecond-sized ops only wait for each other on two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def empty_compile_cache():
    """Each test starts with dynamo's compile cache empty: compiled graphs outlive `remove_ras` (a later
    attachment with the same shapes reuses them and counts none), so one test's graphs would change the
    graph counts another test asserts."""
    yield
    torch._dynamo.reset()
