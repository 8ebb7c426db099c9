"""How a run fits in memory: whole slices or tiles, and how many per batch.

A 2D UNet is fully convolutional, so a whole slice gives the same result as tiles of it
without their seams and without the overlap (9 tiles of 256 x 256 with 25 % overlap cover
a 512 x 512 slice 2.25 times). Whole slices are used whenever one slice's activations fit
the memory budget; tiles of the model's patch size otherwise, or of the ROI a user asks
for. The batch then fills the budget for one forward pass: on the CPU a cache-sized share
(larger batches only evict the cache), on CUDA a quarter of the free GPU memory, capped so
that the peak stays a few GB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

CPU_CACHE_BUDGET = 64 * 2**20  # activations per forward pass on the CPU
CPU_WHOLE_SLICE_BUDGET = 2**30  # one whole slice's activations on the CPU, else tiles
GPU_BUDGET_CAP = 4 * 2**30  # activations per forward pass on a GPU
MAX_BATCH = 64


@dataclass(frozen=True)
class Plan:
    tile: tuple[int, int] | None  # None: whole slices
    batch: int
    item_hw: tuple[int, int]  # what one forward item covers: the slice, or one tile


def activation_bytes(model, hw: Sequence[int], itemsize: int) -> int:
    """Peak activation memory of one (h, w) item through the UNet (padded to 16)."""
    arch = model.meta.architecture
    h, w = (-(-int(v) // 16) * 16 for v in hw)
    per_pixel = itemsize * (6 * arch.base + 2 * arch.in_channels + 3 * arch.out_channels)
    return h * w * per_pixel


def device_budget(device: torch.device) -> int:
    """Bytes of activations one forward pass may take on ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(min(free // 4, GPU_BUDGET_CAP))
    return CPU_CACHE_BUDGET


def whole_slice_budget(device: torch.device) -> int:
    if device.type == "cuda":
        return device_budget(device)
    from ..limits import memory_limit

    return int(min(CPU_WHOLE_SLICE_BUDGET, memory_limit() // 4))


def plan(model, slice_hw: Sequence[int], roi: Sequence[int] | None, batch: int | None,
         device: torch.device, itemsize: int) -> Plan:
    """Whole slices or tiles (``roi`` given: tiles of it) and the batch size."""
    hw = tuple(int(v) for v in slice_hw)
    if roi is None and activation_bytes(model, hw, itemsize) > whole_slice_budget(device):
        roi = model.meta.patch_size
    tile = None if roi is None else (int(roi[0]), int(roi[1]))
    item = hw if tile is None else (min(hw[0], tile[0]), min(hw[1], tile[1]))
    if batch is None:
        per_item = max(1, activation_bytes(model, item, itemsize))
        batch = int(np.clip(device_budget(device) // per_item, 1, MAX_BATCH))
    return Plan(tile, int(batch), item)
