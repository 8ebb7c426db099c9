"""A quality score for every result: how far to trust it, per scan and per slice.

Built only from what the model itself sees, so it needs no reference labels:

- **its own Dice estimate** (segmentation): from the class probabilities behind the
  labels (:func:`~napari_unet.inference.uncertainty.agreement_sums`), the Dice the labels
  would have if the probabilities were right, ``2 sum(p_c [label = c]) / (sum p_c +
  #[label = c])``, pooled over the scan and averaged over the foreground classes; per
  slice, the same within the slice. Confident, agreeing probabilities give
  values near 1; wherever the model hesitates between classes, it falls;
- **how unlike the training scans the scan is**: the 1-Wasserstein distance of its
  normalised intensities to the nearest training scan's
  (:mod:`napari_unet.model.intensity_profile`, recorded in the model file). On a scan
  unlike anything it learned from a net's probabilities are no evidence (a T2 or a CT
  gives a brain-tissue model confident nonsense), so beyond :data:`LIKE` the estimate is
  discounted linearly, to nothing at :data:`UNLIKE`; a scan with too little signal to
  compare (blank, nearly constant, a few voxels) counts as unlike;
- for a denoiser, **the noise it is given** against the most it learned to remove
  (:func:`~napari_unet.model.intensity_profile.noise_level`).

``score = estimated Dice x likeness`` (denoisers: ``likeness x noise fit``); a result is
flagged for review when its score is below :data:`REVIEW_BELOW`, with the reasons in
plain words. The thresholds are fixed and documented (README, model card), measured by
``bench/quality_score.py``, not fitted per scan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

REVIEW_BELOW = 0.90  # a score below this flags the result for review
SLICE_BELOW = 0.90  # a slice's own Dice estimate below this makes it an uncertain slice
LIKE = 0.10  # intensity distance up to which a scan counts as like the training scans
UNLIKE = 0.20  # distance at which the model's own estimate counts for nothing
# a noise reading this many times the noisiest a denoiser learned from is far above it
# (the reading grows more slowly than the noise: 1.3 is about 1.4 times the noise)
NOISE_FAR = 1.3
MISSED_SHARE = 0.1  # a class labelled nowhere but expected over this share of the largest
# labelled class's size was missed (see estimated_dice)
MIN_SLICE_SHARE = 0.1  # slices with less foreground than this share of the median are
# too little of the structures to score (they are reviewed last)


@dataclass
class Quality:
    """A result's quality: ``score`` (0..1, higher is more trustworthy), whether to
    ``review`` it and why (``reasons``, plain words), and the parts behind them."""

    score: float | None
    review: bool
    reasons: tuple[str, ...] = ()
    estimated_dice: float | None = None  # the model's own (segmentation)
    distance: float | None = None  # intensity distance to the nearest training scan
    noise: float | None = None  # the scan's noise reading (denoising), normalised units
    noise_learned: float | None = None
    axis: int = 0
    slice_scores: np.ndarray | None = None  # along ``axis``; NaN: not scored
    uncertain_slices: tuple[int, ...] = ()
    notes: tuple[str, ...] = field(default=())  # facts that did not lower the score

    def to_dict(self) -> dict:
        """For report.json: the figures, rounded, and the reasons."""
        r = (lambda v: None if v is None else round(float(v), 4))  # noqa: E731
        return {"score": r(self.score), "review": self.review, "reasons": list(self.reasons),
                "estimated_dice": r(self.estimated_dice), "intensity_distance": r(
                    self.distance), "noise": r(self.noise), "noise_learned": r(
                    self.noise_learned), "axis": self.axis,
                "uncertain_slices": list(self.uncertain_slices), "notes": list(self.notes)}

    def summary(self) -> str:
        """One line: the score and, when flagged, why."""
        if self.score is None:
            return "quality: not scored" + (f" ({'; '.join(self.notes)})" if self.notes else "")
        text = f"quality {self.score:.2f}"
        if self.review:
            return f"{text}: review, {'; '.join(self.reasons)}"
        return text + " (no need to review)"


def assess(volume, model, pred) -> Quality:
    """The quality of ``pred`` (a :class:`~.predictor.Prediction` of ``model`` on
    ``volume``)."""
    from ..model.intensity_profile import distance, scan_profile

    array = np.asarray(getattr(volume, "array", volume))
    profile = model.meta.intensity_profile
    dist, like = None, 1.0
    notes: list[str] = []
    if profile is None:
        notes.append("the model file records no training intensities to compare with")
    else:
        seen = scan_profile(array, model.meta.normalization)
        if seen is None:  # a blank scan (one value, a handful of voxels): nothing vouches
            like = 0.0
        else:
            dist = distance(profile, seen)
            like = likeness(dist)
    if model.task.kind == "denoise":
        return _denoiser(array, model, pred, dist, like, notes)
    return _segmentation(pred, dist, like, notes)


def likeness(dist: float | None) -> float:
    """1 up to :data:`LIKE`, then down linearly to 0 at :data:`UNLIKE` (None: 1)."""
    if dist is None:
        return 1.0
    return float(np.clip((UNLIKE - dist) / (UNLIKE - LIKE), 0.0, 1.0))


def estimated_dice(sums: np.ndarray) -> float | None:
    """Mean over foreground classes of the pooled Dice estimate; None when the model
    labelled no voxel of any of them.

    A class it labelled nowhere counts only when it expected it somewhere: probabilities
    adding up to at least :data:`MISSED_SHARE` of the largest labelled class's size (a
    structure it hesitated over and missed, Dice 0); a class with a little probability
    spread thinly (no class is ever exactly impossible) is absent, not missed.
    """
    est = _class_mean(np.nansum(sums, axis=0)[None])[0]
    return None if np.isnan(est) else float(est)


def _class_mean(sums: np.ndarray) -> np.ndarray:
    """(S, K, 3) sums -> (S,) mean Dice estimate of the classes that count (see
    :func:`estimated_dice`); NaN where none does."""
    a, s, n = np.moveaxis(sums, -1, 0)
    labelled = n > 0
    size = np.where(labelled, (s + n) / 2, 0.0)
    largest = size.max(axis=1, keepdims=True)
    counted = labelled | ((s >= MISSED_SHARE * largest) & (largest > 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(counted, 2 * a / (s + n), 0.0)
        return np.where(counted.any(axis=1), dice.sum(axis=1) / counted.sum(axis=1), np.nan)


def slice_scores(sums: np.ndarray) -> np.ndarray:
    """Per slice, the Dice estimate as :func:`estimated_dice` makes it for the scan; NaN
    for slices not predicted or with too little foreground to score (less than
    :data:`MIN_SLICE_SHARE` of the median slice's)."""
    size = np.nansum(sums[..., 1] + sums[..., 2], axis=1) / 2
    size[~np.isfinite(sums).all(axis=(1, 2))] = np.nan  # not predicted
    occupied = size[np.isfinite(size) & (size > 0)]
    enough = size >= MIN_SLICE_SHARE * (np.median(occupied) if occupied.size else np.inf)
    est = _class_mean(np.nan_to_num(sums))
    return np.where(enough, est, np.nan)


def prediction_slice_scores(pred) -> np.ndarray | None:
    """:func:`slice_scores` of a Prediction (None for a denoiser's)."""
    sums = getattr(pred, "class_sums", None)
    return None if sums is None else slice_scores(sums)


def _segmentation(pred, dist, like: float, notes: list[str]) -> Quality:
    sums = pred.class_sums
    if sums is None:
        return Quality(None, False, distance=dist, notes=(*notes, "no class probabilities"))
    est = estimated_dice(sums)
    per_slice = slice_scores(sums)
    uncertain = tuple(int(i) for i in np.flatnonzero(per_slice < SLICE_BELOW))
    if est is None:  # nothing found: only a scan like the training ones makes that credible
        notes.append("it found none of its classes")
    score = like * (1.0 if est is None else est)
    review = score < REVIEW_BELOW
    reasons = []
    if review and like < 1.0:
        reasons.append(_unlike_words(dist))
    if review and est is not None and est < REVIEW_BELOW:
        reasons.append(_uncertain_words(est, uncertain))
    return Quality(score, review, tuple(reasons), est, dist, axis=pred.axis,
                   slice_scores=per_slice, uncertain_slices=uncertain, notes=tuple(notes))


def noise_fit(ratio: float) -> float:
    """1 up to the most noise the model learned (ratio 1), then down linearly, through
    :data:`REVIEW_BELOW` at :data:`NOISE_FAR` times it, to 0."""
    if ratio <= 1.0:
        return 1.0
    return float(max(0.0, 1.0 - (1.0 - REVIEW_BELOW) * (ratio - 1.0) / (NOISE_FAR - 1.0)))


def _denoiser(array, model, pred, dist, like: float, notes: list[str]) -> Quality:
    from ..model.intensity_profile import noise_level

    profile = model.meta.intensity_profile
    noise = noise_level(array, model.meta.normalization)
    learned = None if profile is None else profile.noise_learned
    fit = noise_fit(noise / learned) if learned else 1.0
    score = like * fit
    review = score < REVIEW_BELOW
    reasons = []
    if review and like < 1.0:
        reasons.append(_unlike_words(dist))
    if review and fit < 1.0:
        reasons.append(f"noise far above what it learned (reads {noise:.1%} of the "
                       f"intensity range; the noisiest scans it learned from read "
                       f"{learned:.1%})")
    return Quality(score, review, tuple(reasons), None, dist, noise, learned, pred.axis,
                   notes=tuple(notes))


def _unlike_words(dist: float | None) -> str:
    if dist is None:
        return ("too little signal to compare with the scans this model learned from (a "
                "blank or nearly constant scan, or only a few voxels)")
    return f"unlike the scans this model learned from (intensity distance {dist:.2f})"


def _uncertain_words(est: float, uncertain: tuple[int, ...]) -> str:
    if uncertain:
        n = len(uncertain)
        return f"uncertain in {n} slice{'s' if n > 1 else ''} (estimated Dice {est:.2f})"
    return f"uncertain (estimated Dice {est:.2f})"
