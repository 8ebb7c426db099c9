"""Shared pytest configuration: keep torch to few threads so tests behave on 2 cores."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
