"""Raw slabs of slices from the host volume to the compute device, each uploaded once.

The volume stays on the host in its stored dtype (int16 CT: 2 bytes a voxel); each batch
of slices travels as stored and is normalised on the device. On CUDA a slab is copied
into one of two pinned buffers and uploaded on a side stream while the previous batch
computes (``prefetch`` before waiting for a batch's results); on the CPU a contiguous
slab is used in place (``torch.from_numpy`` shares the memory).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# numpy dtypes torch cannot hold (or holds with few ops) -> the smallest exact stand-in
_STAND_INS = {np.dtype(np.uint16): np.int32, np.dtype(np.uint32): np.int64,
              np.dtype(np.uint64): np.float64, np.dtype(np.float16): np.float32,
              np.dtype(np.bool_): np.uint8}


def torch_ready_dtype(dtype: np.dtype) -> np.dtype:
    """The native-byte-order dtype a slab of ``dtype`` is copied to before torch sees it."""
    dtype = np.dtype(dtype).newbyteorder("=")
    return np.dtype(_STAND_INS.get(dtype, dtype))


def batches(indices: np.ndarray, batch: int) -> list[slice | np.ndarray]:
    """Index groups of at most ``batch`` slices; runs of consecutive slices as slices (views)."""
    groups = []
    for start in range(0, len(indices), batch):
        idx = indices[start : start + batch]
        run = idx[-1] - idx[0] == len(idx) - 1
        groups.append(slice(int(idx[0]), int(idx[-1]) + 1) if run else idx)
    return groups


def neighbours(idx: np.ndarray, k: int, n: int) -> np.ndarray:
    """(len(idx), 2k+1): each slice's ``k`` neighbours either side and itself, nearest first
    to last, the end slices repeated at the edges of a stack of ``n``."""
    return np.clip(np.asarray(idx)[:, None] + np.arange(-k, k + 1), 0, n - 1)


def context_rows(group, k: int, n: int) -> tuple[slice | np.ndarray, np.ndarray]:
    """What to load for ``group`` of a stack of ``n`` slices when each slice goes in with
    ``k`` neighbours either side, and per slice the rows of that load that make its input,
    nearest first to last (edges repeat the end slice, as training's
    :func:`~napari_unet.training.data.with_context`)."""
    idx = np.arange(group.start, group.stop) if isinstance(group, slice) else np.asarray(group)
    want = neighbours(idx, k, n)
    if isinstance(group, slice):
        lo = int(want[0, 0])
        return slice(lo, int(want[-1, -1]) + 1), want - lo
    load, rows = np.unique(want, return_inverse=True)
    return load, rows.reshape(want.shape)


class SlabLoader:
    """``get(k)`` gives batch ``k`` of ``stack`` on ``device``; ``prefetch(k)`` starts it."""

    def __init__(self, stack: np.ndarray, groups: Sequence, device: torch.device):
        self.stack, self.groups, self.device = stack, list(groups), device
        self.dtype = torch_ready_dtype(stack.dtype)
        self.cuda = device.type == "cuda"
        self._ready: dict[int, tuple[torch.Tensor, object]] = {}
        if self.cuda:
            most = max((group_size(g) for g in self.groups), default=0)
            shape = (most, *stack.shape[1:])
            self._pinned = [torch.empty(shape, dtype=_torch_dtype(self.dtype)).pin_memory()
                            for _ in range(2)]
            self._freed = [None, None]  # events: the last upload from each buffer is done
            self._stream = torch.cuda.Stream(device)

    def __len__(self) -> int:
        return len(self.groups)

    def prefetch(self, k: int) -> None:
        """Start moving batch ``k`` to the device (no-op on the CPU or past the end)."""
        if not self.cuda or k >= len(self.groups) or k in self._ready:
            return
        slot = k % 2
        if self._freed[slot] is not None:
            self._freed[slot].synchronize()  # the buffer's previous upload has finished
        host = self._pinned[slot][: group_size(self.groups[k])]
        host.numpy()[...] = self.stack[self.groups[k]]
        with torch.cuda.stream(self._stream):
            dev = host.to(self.device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self._stream)
        self._freed[slot] = done
        self._ready[k] = (dev, done)

    def get(self, k: int) -> torch.Tensor:
        """Batch ``k`` (B, H, W[, C]) on the device, in the stored dtype (or a stand-in)."""
        if not self.cuda:
            raw = np.ascontiguousarray(self.stack[self.groups[k]], dtype=self.dtype)
            if min(raw.strides, default=0) < 0:  # one slice of a flipped array stays a view
                raw = raw.copy()
            return torch.from_numpy(raw)
        self.prefetch(k)
        dev, done = self._ready.pop(k)
        current = torch.cuda.current_stream(self.device)
        current.wait_event(done)
        dev.record_stream(current)  # the caching allocator must not reuse it too early
        return dev


def group_size(group) -> int:
    """Slices in one group made by :func:`batches`."""
    return group.stop - group.start if isinstance(group, slice) else len(group)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype)).dtype
