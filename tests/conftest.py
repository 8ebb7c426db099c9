"""Shared pytest configuration.

Tests use tiny models: one torch thread is fastest for them and avoids two threads
spinning against each other on a 2-core CI machine.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)
