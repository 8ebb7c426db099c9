"""Which device a test means: the CPU always, CUDA where this machine has a GPU.

Tests that hold on every device take ``@pytest.mark.parametrize("device", DEVICES)``;
the CUDA case is skipped (and shown as skipped) on machines without a GPU, so CI on the
CPU and a run on a GPU machine execute the same test code.
"""

from __future__ import annotations

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


def prob_atol(device: str) -> float:
    """Tolerance for float32 probabilities against the caller's net run on the CPU.

    CPU: the same oneDNN kernels up to summation order. CUDA with ``precision="float32"``
    (TF32 off): cuDNN picks other algorithms (Winograd, FFT, implicit GEMM), whose float32
    rounding differs by about 1e-6 relative per layer; 2e-4 bounds that through the
    18 convolutions of a UNet with room to spare, and still fails on any real error.
    """
    return 1e-5 if device == "cpu" else 2e-4
