"""Shared pytest configuration.

Tests use tiny models: one torch thread is fastest for them and avoids two threads
spinning against each other on a 2-core CI machine.
"""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads; one thread avoids spinning on busy cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
