"""Less work, same labels: the net runs only where its answer can differ from background.

Most of a head or body scan is air, and a 2D net's answer there is its answer on air.
Before a run, a cheap foreground mask is made (:func:`foreground`): the volume averaged
in blocks of :data:`BLOCK` voxels, normalised as the model normalises it, thresholded
at half its Otsu threshold (air against everything else); a slice's foreground is that
of its block and the blocks either side. Each slice then goes through the net cropped to
its foreground's bounding box plus :data:`MARGIN` pixels, rounded outwards to whole
16-pixel cells of the grid the UNet pads the whole slice to (:func:`window`), so that
the pooling cells line up and every pixel inside sees the arithmetic of the whole
slice; slices without foreground do not go through the net at all. Everything outside
is the model's own answer on an empty input (``Engine.background``: the net run once
on a constant slice of the scan's background value), not an assumed class 0; and where
the model's answer on the outer ring of a crop is not that (a structure the mask
missed), the slices run whole instead. A crop belongs to its slice alone, so a slice
gets the same answer whichever other slices are predicted with it.

Denoising crops only exactly constant input (the outside of a skull-stripped scan or
of a CT's reconstruction circle): on noisy air, the denoiser's answer is the denoising;
its margin is :data:`DENOISE_MARGIN`.

With three planes (:mod:`.planes`), the second and third planes run only the slices
that hold a voxel where the first plane's answer is unsure (:func:`unsure`); elsewhere
their probabilities are the first plane's.
On the sample brain that is most of them (180 of 233 and 145 of 197 slices): the unsure
voxels (7% of the volume, 2.3% even after two planes) line every tissue border. Cropping
those slices to their unsure voxels instead of their foreground would compute 0.55 of
a plane instead of 0.59 (measured: no faster); the union of 24-pixel squares around them
is still 0.48, and tiles of 32 pixels with their margins 2.4 planes. The three planes
cost 0.65 s each; what is left is the net's work, not the crop's.

Why the margin is not the theoretical receptive field: this UNet's output depends on up
to :func:`~napari_unet.model.unet.receptive_field` = 230 pixels of input (115 either
side), more than a 256-pixel slice, so a crop by it would save nothing. The weight of
that reach falls off fast. On the sample brain, along one plane, crops with 16, 32 and
64 pixels of margin (whole cells) gave labels equal to the whole slices' on 99.95, 99.99
and 99.998 % of voxels; over ``bench/robustness.py``'s ten conditions (three planes, the
held-out slices) the largest change of any Dice was 0.0018, 0.0006 and 0.0003 for 16, 24
and 32 pixels. :data:`MARGIN` is 24 pixels, then whole cells (24 to 39 pixels);
``bench/inference.py`` measures it at the defaults. ``InferenceSettings(crop=False)``
(``--no-crop``) runs every pixel, for parity checks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..model.unet import MULTIPLE

BLOCK = 4  # voxels per side of the blocks the mask is made from
MARGIN = 24  # pixels of context around the foreground (net grid), then whole 16-pixel cells
# a denoiser's answer is an intensity, not a decision: its crops need more context to
# match the whole slice (sample brain, mri-denoise: within 0.1 % of the range on 99.78,
# 99.90, 99.95 % of voxels with 24, 40, 56 pixels, for 2.21, 2.25, 2.33 s)
DENOISE_MARGIN = 56
RING = 2  # pixels at the edge of a crop whose answer must be the background's
SURE = 0.99  # a plane's class probability above which the other planes leave it be


@dataclass(frozen=True)
class Foreground:
    """The scan's foreground, as per-slice boxes along each axis, and its background."""

    mask: np.ndarray  # (Z, Y, X) / BLOCK, True where anything but background may be
    shape: tuple[int, int, int]  # the scan's spatial shape
    value: float  # the background's normalised intensity (what the net sees there)
    # (Z, Y, X) / BLOCK, True where the answer may still change (see ``unsure``): slices
    # without any are not computed; None: every slice with foreground is
    needed: np.ndarray | None = None

    def boxes(self, axis: int) -> np.ndarray:
        """(n_slices, 4) rows ``r0, r1, c0, c1`` (half-open, pixels of the slices along
        ``axis``) of each slice's foreground; ``r0 == r1`` where there is none."""
        mask = _across(np.moveaxis(self.mask, axis, 0))  # in-plane: the margin does it
        n = self.shape[axis]
        h, w = (s for i, s in enumerate(self.shape) if i != axis)
        rows, cols = mask.any(axis=2), mask.any(axis=1)  # (blocks, rows), (blocks, cols)
        need = np.ones(len(mask), bool)
        if self.needed is not None:
            need = _across(np.moveaxis(self.needed, axis, 0)).reshape(len(mask), -1).any(1)
        out = np.zeros((n, 4), np.int64)
        for b in range(len(mask)):
            r, c = np.flatnonzero(rows[b]), np.flatnonzero(cols[b])
            if r.size and need[b]:
                box = (r[0] * BLOCK, min(h, (r[-1] + 1) * BLOCK),
                       c[0] * BLOCK, min(w, (c[-1] + 1) * BLOCK))
                out[b * BLOCK : (b + 1) * BLOCK] = box
        return out

    def computed_share(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0


def foreground(array: np.ndarray, fitted, exact: bool, fill: tuple[float, float] | None
               ) -> Foreground:
    """The foreground of ``array`` (Z, Y, X[, C]) for a model normalising with ``fitted``.

    ``exact``: everything that is not exactly the scan's minimum (for denoising);
    otherwise voxels brighter than half the Otsu threshold of the normalised block means
    (air against the rest).
    """
    means, lows, highs = _blocks(array, fill)
    if exact:
        value = float(lows.min())
        mask = (highs > value) | (lows > value)
        background = _normalised(fitted, value)
    else:
        norm = _normalised(fitted, means)
        threshold = 0.5 * _otsu(norm)
        mask = norm > threshold
        outside = norm[~mask]
        background = float(np.median(outside)) if outside.size else float(norm.min())
    return Foreground(mask, tuple(int(s) for s in array.shape[:3]), background)


def _across(mask: np.ndarray) -> np.ndarray:
    """``mask`` (blocks first) or its neighbour blocks either side along axis 0."""
    if len(mask) < 2:
        return mask
    near = mask.copy()
    near[1:] |= mask[:-1]
    near[:-1] |= mask[1:]
    return near


def unsure(fg: Foreground, probs: np.ndarray, axis: int, own: np.ndarray) -> Foreground:
    """``fg`` for the other planes' passes: only their slices that hold a voxel where the
    first plane (along ``axis``, slices ``own``) is unsure (winning class probability under
    :data:`SURE`) are computed, each cropped to its foreground as the first plane's are
    (a crop through tissue rather than air would change the answer inside it).

    Not a bound (two planes that both disagree could outvote any first answer) but what
    happens: on the sample brain not one voxel the first plane gave 0.9 or more changed
    with the other two planes, and 0.99 leaves a wide berth."""
    need = np.zeros(probs.shape[:3], bool)
    along, p = np.moveaxis(need, axis, 0), np.moveaxis(probs, axis, 0)
    for chunk in np.array_split(own, max(1, len(own) // 16)):
        q = p[chunk]
        sure = np.maximum(q[..., 0], 1 - q[..., 0])
        for c in range(1, q.shape[-1]):  # elementwise: numpy reduces a short last axis slowly
            np.maximum(sure, q[..., c], out=sure)
        along[chunk] = sure < SURE
    z, h, w = need.shape
    nz, nh, nw = (-(-n // BLOCK) for n in (z, h, w))
    padded = np.zeros((nz * BLOCK, nh * BLOCK, nw * BLOCK), bool)
    padded[:z, :h, :w] = need
    needed = padded.reshape(nz, BLOCK, nh, BLOCK, nw, BLOCK).any(axis=(1, 3, 5))
    return replace(fg, needed=needed)


def _blocks(array: np.ndarray, fill) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max of every BLOCK^3 block (the last blocks may be partial), read
    BLOCK slices at a time so that no float copy of the volume is made."""
    z, h, w = array.shape[:3]
    nz, nh, nw = (-(-n // BLOCK) for n in (z, h, w))
    means, lows, highs = (np.empty((nz, nh, nw), np.float32) for _ in range(3))
    for k in range(nz):
        chunk = np.asarray(array[k * BLOCK : (k + 1) * BLOCK], dtype=np.float32)
        if chunk.ndim == 4:  # channels: the strongest one decides
            chunk = chunk.max(axis=-1)
        if fill is not None:
            chunk = np.nan_to_num(chunk, nan=fill[0], neginf=fill[0], posinf=fill[1])
        padded = np.pad(chunk, [(0, BLOCK - len(chunk)), (0, nh * BLOCK - h),
                                (0, nw * BLOCK - w)], mode="edge")
        cells = padded.reshape(BLOCK, nh, BLOCK, nw, BLOCK).transpose(1, 3, 0, 2, 4)
        cells = cells.reshape(nh, nw, -1)
        means[k], lows[k], highs[k] = cells.mean(-1), cells.min(-1), cells.max(-1)
    return means, lows, highs


def _normalised(fitted, values):
    out = np.asarray(fitted.forward(np.asarray(values, np.float32)), np.float32)
    return float(out) if out.ndim == 0 else out


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold (SimpleITK's) of ``values``; 0 for a constant image."""
    if values.size == 0 or float(values.max()) <= float(values.min()):
        return 0.0
    import SimpleITK as sitk

    f = sitk.OtsuThresholdImageFilter()
    f.SetNumberOfHistogramBins(256)
    f.Execute(sitk.GetImageFromArray(np.ascontiguousarray(values, np.float32)))
    return float(f.GetThreshold())


@dataclass(frozen=True)
class Window:
    """Where one slice goes through the net, in the net's grid padded to whole cells."""

    rows: tuple[int, int]  # half-open, in the padded net grid (multiples of MULTIPLE)
    cols: tuple[int, int]
    pad: tuple[int, int, int, int]  # the UNet's own padding of the whole slice: t, b, l, r

    @property
    def empty(self) -> bool:
        return self.rows[0] >= self.rows[1]

    def box(self, hw: tuple[int, int], net_hw: tuple[int, int] | None = None
            ) -> tuple[int, int, int, int]:
        """The slice pixels (r0, r1, c0, c1, half-open) this window computes."""
        t, _, left, _ = self.pad
        net_hw = net_hw or hw
        rows = _back(self.rows[0] - t, self.rows[1] - t, net_hw[0], hw[0])
        cols = _back(self.cols[0] - left, self.cols[1] - left, net_hw[1], hw[1])
        return (*rows, *cols)

    def share(self, hw: tuple[int, int], net_hw: tuple[int, int] | None = None) -> float:
        """The part of the (padded) slice this window computes."""
        t, b, left, right = self.pad
        h, w = net_hw or hw
        area = (self.rows[1] - self.rows[0]) * (self.cols[1] - self.cols[0])
        return area / ((h + t + b) * (w + left + right))


def window(box, hw: tuple[int, int], net_hw: tuple[int, int], margin: int | None = None
           ) -> Window | None:
    """The crop of a slice of ``hw`` pixels (net size ``net_hw``) for its foreground
    ``box`` (r0, r1, c0, c1 in slice pixels): ``None`` for the whole slice, an empty
    window for no foreground."""
    margin = MARGIN if margin is None else int(margin)
    ph, pw = (-net_hw[0]) % MULTIPLE, (-net_hw[1]) % MULTIPLE
    pad = (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
    r0, r1, c0, c1 = (int(v) for v in box)
    if r0 >= r1 or c0 >= c1:
        return Window((0, 0), (0, 0), pad)
    rows = _span(r0, r1, hw[0], net_hw[0], pad[0], net_hw[0] + ph, margin)
    cols = _span(c0, c1, hw[1], net_hw[1], pad[2], net_hw[1] + pw, margin)
    if rows == (0, net_hw[0] + ph) and cols == (0, net_hw[1] + pw):
        return None
    return Window(rows, cols, pad)


def _span(lo: int, hi: int, n: int, m: int, before: int, padded: int, margin: int
          ) -> tuple[int, int]:
    """Pixels lo..hi of n, in a grid of m (corners aligned), grown by ``margin`` and
    rounded outwards to whole cells of the padded grid."""
    scale = (m - 1) / max(n - 1, 1)
    a = int(np.floor(lo * scale)) - margin + before
    b = int(np.ceil((hi - 1) * scale)) + 1 + margin + before
    a = max(0, a // MULTIPLE * MULTIPLE)
    b = min(padded, -(-b // MULTIPLE) * MULTIPLE)
    size = min(padded, ladder(b - a))  # few sizes: kernels made for one are used again
    a = max(0, min(a, padded - size))
    return a, a + size


def ladder(n: int) -> int:
    """``n`` pixels rounded up to the next of a few sizes (multiples of 32 up to 256, of
    64 up to 512, of 128 beyond): every new crop shape costs oneDNN (or cuDNN) a kernel
    made for it, about 30 ms a shape on the CPU, and its cache holds only so many."""
    step = 32 if n <= 256 else 64 if n <= 512 else 128
    return -(-n // step) * step


def _back(a: int, b: int, m: int, n: int) -> tuple[int, int]:
    """Net pixels a..b (half-open) of m, as the slice pixels of n they cover (corners
    aligned), clipped to the slice."""
    scale = (n - 1) / max(m - 1, 1)
    lo = max(0, int(np.ceil(max(a, 0) * scale)))
    hi = min(n, int(np.floor((min(b, m) - 1) * scale)) + 1)
    return lo, max(lo, hi)


def context_boxes(boxes: np.ndarray, k: int) -> np.ndarray:
    """Each slice's box grown to hold its ``k`` neighbours' either side (2.5D models see
    them too)."""
    if not k:
        return boxes
    n = len(boxes)
    out = boxes.copy()
    for i in range(n):
        near = boxes[max(0, i - k) : i + k + 1]
        near = near[near[:, 0] < near[:, 1]]
        if len(near):
            out[i] = (near[:, 0].min(), near[:, 1].max(), near[:, 2].min(), near[:, 3].max())
    return out


def runs(indices: np.ndarray, windows: list | None, batch: int) -> list[tuple]:
    """(group, windows) pairs: groups as :func:`~napari_unet.inference.staging.batches`
    makes them, of consecutive ``indices`` whose crops have one shape (each slice keeps
    its own window, so its answer does not depend on which other slices are predicted
    with it); windows is None for whole slices."""
    from .staging import batches

    if windows is None:
        return [(g, None) for g in batches(indices, batch)]
    out, start = [], 0
    for i in range(1, len(indices) + 1):
        if i == len(indices) or shape_of(windows[i]) != shape_of(windows[start]):
            empty = windows[start] is not None and windows[start].empty
            for g in batches(np.arange(start, i), len(indices) if empty else batch):
                part = range(g.start, g.stop) if isinstance(g, slice) else g
                wins = None if windows[start] is None else [windows[j] for j in part]
                idx = indices[g]
                run = idx[-1] - idx[0] == len(idx) - 1
                out.append((slice(int(idx[0]), int(idx[-1]) + 1) if run else idx, wins))
            start = i
    return out


def shape_of(win: Window | None):
    """What decides which crops may share a batch: the whole slice, nothing, or a size."""
    if win is None:
        return None
    if win.empty:
        return ()
    return (win.rows[1] - win.rows[0], win.cols[1] - win.cols[0])
