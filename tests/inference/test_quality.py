"""The quality score: the model's own Dice estimate from its class probabilities, discounted
on scans unlike its training scans; flags, reasons and per-slice scores."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_unet.inference import quality as Q
from napari_unet.inference.predictor import predict
from napari_unet.io.volume import Volume
from napari_unet.model.intensity_profile import profile_of
from support.tiny_models import constant_model, scan, tiny_model


def _profiled(model, volume, labels=None):
    """``model`` recording ``volume`` as its one training scan."""
    norm = model.meta.normalization
    n = model.task.n_labels if labels is not None else 0
    prof = profile_of([volume.array], norm, None if labels is None else [labels], n)
    model.meta = replace(model.meta, intensity_profile=prof)
    return model


def _dice_estimate(probs: np.ndarray, labels: np.ndarray, classes) -> float:
    """The formula by hand: 2 sum(p_c [y = c]) / (sum p_c + #[y = c]), mean over classes."""
    out = []
    for c in classes:
        hard = labels == c
        out.append(2 * probs[..., c][hard].sum() / (probs[..., c].sum() + hard.sum()))
    return float(np.mean(out))


def test_the_estimate_is_the_dice_the_probabilities_expect():
    model, vol = tiny_model("segment", n_classes=3), scan((12, 20, 24))
    pred = predict(vol, model, axis=0, probabilities=True)
    expected = _dice_estimate(pred.probabilities, pred.labels, (1, 2))
    assert Q.estimated_dice(pred.class_sums) == pytest.approx(expected, rel=1e-5)
    # per slice, the same within the slice: the classes it labels there, and one it
    # labels nowhere there if it expected it over a tenth of the largest one's size
    p, y = pred.probabilities[5], pred.labels[5]
    size = {c: (p[..., c].sum() + (y == c).sum()) / 2 for c in (1, 2) if (y == c).any()}
    assert size, "the scan should give slice 5 some foreground"
    counted = [c for c in (1, 2) if c in size or p[..., c].sum() >= 0.1 * max(size.values())]
    dice = [2 * p[..., c][y == c].sum() / (p[..., c].sum() + (y == c).sum()) for c in counted]
    assert Q.slice_scores(pred.class_sums)[5] == pytest.approx(np.mean(dice), rel=1e-5)


def test_all_planes_estimate_from_the_averaged_probabilities():
    model, vol = tiny_model("segment", n_classes=3), scan((16, 18, 20))
    pred = predict(vol, model, axis=1, planes="all", probabilities=True, slices=[4, 9])
    expected = _dice_estimate(pred.probabilities[:, [4, 9]], pred.labels[:, [4, 9]], (1, 2))
    assert Q.estimated_dice(pred.class_sums) == pytest.approx(expected, rel=1e-5)
    scores = Q.slice_scores(pred.class_sums)
    assert scores.shape == (18,) and np.isfinite(scores[[4, 9]]).all()
    assert np.isnan(np.delete(scores, [4, 9])).all()  # not predicted: not scored


def test_binary_models_estimate_their_one_class():
    model, vol = constant_model(0.7, n_classes=1), scan((8, 20, 24))
    pred = predict(vol, model, axis=0, probabilities=True)
    p, y = pred.probabilities[..., 0], pred.labels == 1
    assert y.all()  # p = 0.7 > 0.5 everywhere
    expected = 2 * p[y].sum() / (p.sum() + y.sum())
    assert Q.estimated_dice(pred.class_sums) == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(2 * 0.7 / 1.7, abs=0.01)  # bf16 may round p
    nothing = predict(vol, constant_model(0.2, n_classes=1), axis=0)
    assert not nothing.labels.any() and Q.estimated_dice(nothing.class_sums) is None


def test_a_confident_model_on_a_scan_like_its_training_scans_needs_no_review():
    vol = scan((8, 24, 24))
    model = _profiled(constant_model(0.99), vol)
    q = Q.assess(vol, model, predict(vol, model, axis=0))
    assert q.estimated_dice == pytest.approx(2 * 0.99 / 1.99, abs=1e-3)
    assert q.distance == pytest.approx(0.0, abs=1e-6)
    assert q.score == pytest.approx(q.estimated_dice) and not q.review and not q.reasons
    assert "no need to review" in q.summary()


def test_an_unsure_model_is_flagged_with_its_uncertain_slices():
    vol = scan((8, 24, 24))
    model = _profiled(constant_model(0.6), vol)
    q = Q.assess(vol, model, predict(vol, model, axis=0))
    assert q.score == pytest.approx(2 * 0.6 / 1.6, abs=1e-3) and q.review
    assert q.uncertain_slices == tuple(range(8))
    assert q.reasons == ("uncertain in 8 slices (estimated Dice 0.75)",)
    assert q.summary().startswith("quality 0.75: review, uncertain in 8 slices")


def _two_tissues(core: float = 900.0, ring: float = 600.0) -> Volume:
    """A head-like phantom: a bright core inside a darker ring, air around."""
    z, y, x = np.mgrid[:8, :32, :32].astype(np.float32)
    r2 = (y - 16) ** 2 + (x - 16) ** 2
    rng = np.random.default_rng(0)
    a = np.where(r2 < 64, core, np.where(r2 < 196, ring, 0.0)) + rng.normal(0, 10, r2.shape)
    return Volume(a.astype(np.float32), name="phantom")


def test_a_scan_unlike_the_training_scans_is_flagged_whatever_the_model_says():
    model = _profiled(constant_model(0.99), _two_tissues())
    inverted = _two_tissues(core=300.0, ring=900.0)  # the contrast reversed
    q = Q.assess(inverted, model, predict(inverted, model, axis=0))
    assert q.distance > Q.UNLIKE and q.score == 0.0 and q.review
    assert q.reasons == (f"unlike the scans this model learned from (intensity distance "
                         f"{q.distance:.2f})",)


@pytest.mark.parametrize("blank", ["constant", "a few voxels"])
def test_a_scan_with_too_little_signal_to_compare_is_flagged(blank):
    """A blank scan (a failed export, an empty series) is nothing like a head: the model
    finding nothing there is no reason to trust it."""
    model = _profiled(constant_model(0.99), _two_tissues())
    array = (np.full((8, 32, 32), 500.0, np.float32) if blank == "constant"
             else _two_tissues().array[:2, :3, :3])
    vol = Volume(array, name="blank")
    q = Q.assess(vol, model, predict(vol, model, axis=0, planes="one"))
    assert q.distance is None and q.score == 0.0 and q.review
    assert q.reasons[0].startswith("too little signal to compare with the scans this model")


def test_likeness_falls_linearly_between_the_documented_distances():
    assert Q.likeness(None) == Q.likeness(0.0) == Q.likeness(Q.LIKE) == 1.0
    assert Q.likeness((Q.LIKE + Q.UNLIKE) / 2) == pytest.approx(0.5)
    assert Q.likeness(Q.UNLIKE) == Q.likeness(1.0) == 0.0


def test_a_model_without_a_profile_is_scored_on_its_uncertainty_alone():
    vol = scan((8, 24, 24))
    model = constant_model(0.99)
    q = Q.assess(vol, model, predict(vol, model, axis=0))
    assert q.distance is None and q.score == pytest.approx(q.estimated_dice)
    assert any("records no training intensities" in n for n in q.notes)


def test_slices_with_little_foreground_are_not_scored():
    sums = np.zeros((4, 1, 3))
    sums[:, 0] = [[90, 100, 100], [45, 50, 50], [0.5, 2, 1], [np.nan] * 3]
    scores = Q.slice_scores(sums)
    assert scores[:2] == pytest.approx([0.9, 0.9])
    assert np.isnan(scores[2]) and np.isnan(scores[3])  # 1.5 < 10% of the median 75


def test_a_slice_scores_each_class_it_holds_not_only_the_largest():
    # a large confident class and a small unsure one: the slice's score is their mean
    sums = np.array([[[990.0, 1000.0, 1000.0], [30.0, 60.0, 60.0]]])
    assert Q.slice_scores(sums)[0] == pytest.approx((0.99 + 0.5) / 2)


def test_report_record_is_plain_json():
    import json

    vol = scan((8, 24, 24))
    model = _profiled(constant_model(0.6), vol)
    d = Q.assess(vol, model, predict(vol, model, axis=0)).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["review"] is True and d["uncertain_slices"] == list(range(8))


def _noisy(vol: Volume, share: float, seed: int = 1) -> tuple[Volume, float]:
    """``vol`` with Gaussian noise of ``share`` x its 0.5..99.5 percentile range, and that
    noise's sigma on the noisy scan's own normalised scale (what the model sees)."""
    a = np.asarray(vol.array, np.float32)
    lo, hi = np.percentile(a, [0.5, 99.5])
    rng = np.random.default_rng(seed)
    noisy = a + share * (hi - lo) * rng.standard_normal(a.shape)
    lo2, hi2 = np.percentile(noisy, [0.5, 99.5])
    return Volume(noisy.astype(np.float32), name="noisy"), share * (hi - lo) / (hi2 - lo2)


def _smooth_scan() -> Volume:
    z, y, x = np.mgrid[:12, :48, :48].astype(np.float32)
    inside = ((y - 24) ** 2 + (x - 24) ** 2) < 400
    return Volume((inside * (600 + 4 * x + 3 * y + z)).astype(np.float32), name="smooth")


def test_a_denoiser_flags_noise_far_above_what_it_learned():
    clean = _smooth_scan()
    model = tiny_model("denoise")
    prof = profile_of([clean.array], model.meta.normalization, noise_added=(0.02, 0.05),
                      noise_kind="gaussian")
    model.meta = replace(model.meta, intensity_profile=prof)
    learned = prof.noise_learned
    assert learned == pytest.approx(_noisy(clean, 0.05)[1], rel=0.15)  # 5% added
    within, sigma = _noisy(clean, 0.04)
    q = Q.assess(within, model, predict(within, model, axis=0))
    assert q.noise == pytest.approx(sigma, rel=0.15) and not q.review
    far, _ = _noisy(clean, 0.15)
    q = Q.assess(far, model, predict(far, model, axis=0))
    assert q.noise > Q.NOISE_FAR * learned and q.review
    assert any(r.startswith("noise far above what it learned") for r in q.reasons)


def test_noise_fit_crosses_the_threshold_at_noise_far():
    assert Q.noise_fit(0.5) == Q.noise_fit(1.0) == 1.0
    assert Q.noise_fit(Q.NOISE_FAR) == pytest.approx(Q.REVIEW_BELOW)
    assert Q.noise_fit(100.0) == 0.0


def test_a_class_labelled_nowhere_counts_only_when_the_model_expected_it():
    # class 1 labelled and sure; class 2 labelled nowhere, its probability spread thinly
    absent = np.array([[[95.0, 100.0, 100.0], [0.0, 0.5, 0.0]]])
    assert Q.estimated_dice(absent) == pytest.approx(2 * 95 / 200)
    # class 2 expected over 30 voxels (a third of class 1), labelled nowhere: missed
    missed = np.array([[[95.0, 100.0, 100.0], [0.0, 30.0, 0.0]]])
    assert Q.estimated_dice(missed) == pytest.approx((2 * 95 / 200 + 0.0) / 2)
    assert Q.estimated_dice(np.array([[[0.0, 3.0, 0.0]]])) is None  # found nothing
