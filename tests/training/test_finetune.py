"""Fine-tuning from corrections: only trusted labels count, the input model never changes,
unchecked slices hold the model to its own predictions, and bad input says what is wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.errors import Cancelled, TaskError
from napari_unet.training import finetune, train
from napari_unet.training.finetune import ANCHOR_WEIGHT
from support.synthetic import TINY, blobs, falls

FT = dict(patch_size=(32, 32), batch_size=4, seed=3)
# bit-for-bit comparisons of two runs mean the CPU (CUDA repeats only in deterministic mode)
EXACT = dict(FT, device="cpu")


def trained_on_one_thread(iterations: int):
    """A tiny model trained on blobs with one torch thread (the same weights everywhere)."""
    img, lab = blobs(10)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(img, lab, iterations=iterations, **TINY).model
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base_model():
    return trained_on_one_thread(15)


def _weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.net.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_untrusted_slices_have_no_influence(base_model):
    img, lab = blobs(11)
    trusted = np.array([True, False, True, False, False, False])
    garbage = [lab.copy(), lab.copy()]
    garbage[0][~trusted] = 2
    garbage[1][~trusted] = 77  # not even a valid class: untrusted labels are never read
    runs = [finetune(base_model, img, g, trusted, iterations=6, **EXACT) for g in garbage]
    assert _same(_weights(runs[0].model), _weights(runs[1].model))
    honest = finetune(base_model, img, lab, np.ones(6, bool), iterations=6, **EXACT)
    assert not _same(_weights(runs[0].model), _weights(honest.model))


def test_untrusted_voxels_have_no_influence(base_model):
    img, lab = blobs(12)
    trusted = np.zeros(lab.shape, bool)
    trusted[:, :, :24] = True  # the left half of every slice was checked
    a, b = lab.copy(), lab.copy()
    a[~trusted] = 0
    b[~trusted] = 1
    runs = [finetune(base_model, img, g, trusted, iterations=6, **EXACT) for g in (a, b)]
    assert _same(_weights(runs[0].model), _weights(runs[1].model))


def test_returns_a_new_model_and_leaves_the_input_alone(base_model):
    img, lab = blobs(13)
    before = _weights(base_model)
    parent_hash = base_model.hash
    trusted = np.array([True, True, False, False, True, False])
    seen = []
    res = finetune(base_model, img, lab, trusted, iterations=30, lr=1e-3,
                   progress=lambda d, t: seen.append((d, t)), **FT)
    assert _same(before, _weights(base_model)) and base_model.hash == parent_hash
    assert res.model is not base_model and res.model.net is not base_model.net
    prov = res.model.meta.provenance
    assert prov["parent"] == {"name": base_model.name, "hash": parent_hash}
    assert prov["corrected_slices"] == 3 and prov["finetune"]["iterations"] == 30
    assert res.model.hash != parent_hash
    assert falls(res.losses)
    assert set(res.metrics) == {"trusted_dice_before", "trusted_dice", "parent_trust"}
    assert seen[-1] == (30, 30)


def test_time_budget_and_cancel(base_model):
    img, lab = blobs(14)
    res = finetune(base_model, img, lab, np.ones(6, bool), time_budget=0.5, **FT)
    assert res.stopped_by == "time_budget" and res.iterations >= 1
    with pytest.raises(Cancelled):
        finetune(base_model, img, lab, np.ones(6, bool), iterations=20, cancel=lambda: True,
                 **FT)


def test_bad_trust_and_tasks_are_refused(base_model):
    img, lab = blobs(15)
    with pytest.raises(TaskError, match="nothing is marked"):
        finetune(base_model, img, lab, np.zeros(6, bool), iterations=1)
    with pytest.raises(TaskError, match="checked slices has 5 entries but the labels have 6"):
        finetune(base_model, img, lab, np.ones(5, bool), iterations=1)
    bad = lab.copy()
    bad[0, 0, 0] = 9
    with pytest.raises(TaskError, match="label 9 on slice 0 is not one of the model's classes"):
        finetune(base_model, img, bad, np.ones(6, bool), iterations=1)
    half = lab.astype(np.float32)
    half[0, 0, 0] = 0.5
    with pytest.raises(TaskError, match="labels must be integers"):
        finetune(base_model, img, half, np.ones(6, bool), iterations=1)
    den = train(img, task="denoise", iterations=1, **TINY).model
    with pytest.raises(TaskError, match="segmentation model"):
        finetune(den, img, lab, np.ones(6, bool), iterations=1)


def test_mismatched_labels_say_which_has_how_many_slices(base_model, tmp_path):
    import nibabel as nib

    img, lab = blobs(16, shape=(12, 48, 48))
    short = lab[:5]
    with pytest.raises(TaskError) as err:
        finetune(base_model, img, short, np.ones(5, bool), iterations=1)
    text = str(err.value)
    assert "the labels have 5 slices along axis 0" in text
    assert "the scan has 12 slices along axis 0" in text
    path = tmp_path / "corrections_labels.nii.gz"  # files are named in the message
    nib.save(nib.Nifti1Image(short.transpose(2, 1, 0), np.eye(4)), path)
    with pytest.raises(TaskError, match=r"the labels 'corrections_labels.nii.gz' and the "
                                        r"scan have different shapes"):
        finetune(base_model, img, path, np.ones(5, bool), iterations=1)


def _changed_on(model, other, img, rows) -> float:
    """Fraction of voxels of ``rows`` where two models' labels differ."""
    from napari_unet.inference.predictor import predict_slices

    a = predict_slices(img, model, rows, axis=0, device="cpu").labels[rows]
    b = predict_slices(img, other, rows, axis=0, device="cpu").labels[rows]
    return float((a != b).mean())


@pytest.fixture(scope="module")
def good_model():
    """A parent worth anchoring to (80 iterations: most of each disc found)."""
    return trained_on_one_thread(80)


def test_unchecked_slices_anchor_the_model_to_its_own_predictions(good_model):
    """A 'correction' that erases one slice: without the anchor the model forgets the
    other slices' tissue, with it the other slices keep (nearly) what the model said."""
    img, lab = blobs(17)
    erased = lab.copy()
    erased[2] = 0
    trusted = np.zeros(6, bool)
    trusted[2] = True
    others = [0, 1, 3, 4, 5]
    kw = dict(iterations=25, lr=3e-3, freeze_norm=True, **FT)
    free = finetune(good_model, img, erased, trusted, anchor=0.0, **kw).model
    held = finetune(good_model, img, erased, trusted, anchor=ANCHOR_WEIGHT, **kw).model
    drift_free = _changed_on(free, good_model, img, others)
    drift_held = _changed_on(held, good_model, img, others)
    assert drift_held < 0.25 * drift_free, (drift_held, drift_free)
    prov = held.meta.provenance["finetune"]
    assert prov["anchor"] == ANCHOR_WEIGHT and prov["freeze_norm"] is True


def test_batchnorm_statistics_stay_the_parents_unless_asked(base_model):
    img, lab = blobs(18)
    trusted = np.array([True, False, False, True, False, False])

    def stats(model):
        return {k: v for k, v in _weights(model).items() if "running_" in k}

    frozen = finetune(base_model, img, lab, trusted, iterations=5, freeze_norm=True,
                      **FT).model
    moving = finetune(base_model, img, lab, trusted, iterations=5, freeze_norm=False,
                      **FT).model
    assert stats(frozen) and _same(stats(frozen), stats(base_model))
    assert not _same(stats(moving), stats(base_model))


def test_settings_refuse_a_negative_anchor_or_learning_rate():
    from napari_unet.errors import SettingsError
    from napari_unet.training import FinetuneSettings

    with pytest.raises(SettingsError, match="anchor"):
        FinetuneSettings(anchor=-1)
    with pytest.raises(SettingsError, match="learning rate"):
        FinetuneSettings(lr=0)


def test_a_model_that_agrees_with_the_corrections_moves_little():
    """Step size and anchor follow the parent's Dice on the checked voxels."""
    from napari_unet.training.finetune import LR_RANGE, parent_trust, step_size

    assert parent_trust(0.3) == 0.0 and parent_trust(0.99) == 1.0 and parent_trust(None) == 1
    assert 0 < parent_trust(0.9) < 1
    assert step_size(0.0) == LR_RANGE[1] and step_size(1.0) == pytest.approx(LR_RANGE[0])
    assert LR_RANGE[0] < step_size(0.5) < LR_RANGE[1]


def test_learning_rate_and_anchor_come_from_the_agreement_unless_given(base_model):
    img, lab = blobs(19)
    trusted = np.array([True, False, False, False, True, False])
    auto = finetune(base_model, img, lab, trusted, iterations=2, **FT)
    trust = auto.metrics["parent_trust"]
    prov = auto.model.meta.provenance["finetune"]
    from napari_unet.training.finetune import step_size

    assert prov["lr"] == pytest.approx(step_size(trust), rel=1e-3)
    assert prov["anchor"] == pytest.approx(ANCHOR_WEIGHT * trust, abs=1e-3)
    assert prov["freeze_norm"] is (trust >= 0.5)
    fixed = finetune(base_model, img, lab, trusted, iterations=2, lr=3e-3, anchor=0.5, **FT)
    prov = fixed.model.meta.provenance["finetune"]
    assert prov["lr"] == 3e-3 and prov["anchor"] == 0.5


def test_iterations_follow_the_trust_and_the_encoder_can_stay_the_parents(good_model,
                                                                         base_model):
    """ITERATIONS[0] at full trust, more below it; with ``freeze_encoder`` only the decoder
    learns."""
    from napari_unet.inference.predictor import predict
    from napari_unet.training.finetune import ITERATIONS

    img, lab = blobs(20)
    own = predict(img, good_model, axis=0, device="cpu").labels  # corrections it agrees with
    trusted = np.array([True, False, True, False, False, False])
    sure = finetune(good_model, img, own, trusted, freeze_encoder=True, **FT)
    prov = sure.model.meta.provenance["finetune"]
    assert sure.metrics["parent_trust"] == 1.0
    assert sure.iterations == prov["iterations"] == ITERATIONS[0]
    assert prov["freeze_encoder"] is True and prov["freeze_norm"] is True
    encoder = ("inc.", "down1.", "down2.", "down3.", "down4.")
    before, after = _weights(good_model), _weights(sure.model)
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(encoder))
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("up"))
    swapped = np.where(lab > 0, 3 - lab, 0)  # the classes the other way round: it disagrees
    weak = finetune(base_model, img, swapped, trusted, iterations=None, **FT)
    trust = weak.metrics["parent_trust"]
    assert trust < 1.0 and weak.model.meta.provenance["finetune"]["freeze_encoder"] is False
    want = round(ITERATIONS[0] + (ITERATIONS[1] - ITERATIONS[0]) * (1 - trust))
    assert weak.iterations == want > ITERATIONS[0]


def test_the_anchor_in_the_corrections_forward_pass_gives_the_same_loss(good_model):
    """With every BatchNorm in eval mode, the anchor's patches in one batch with the
    corrections' give the loss of two separate passes (float32, same patches)."""
    import copy

    from napari_unet.training.anchor import Anchor, anchored, anchored_together
    from napari_unet.training.losses import make_loss

    img = np.random.default_rng(0).random((6, 1, 48, 48), dtype=np.float32)
    net = copy.deepcopy(good_model.net).eval()
    patch = (32, 32)

    def anchor():
        return Anchor(good_model.net, good_model.task, img, [1, 2, 3], patch, 2, 0,
                      torch.device("cpu"), precision="float32")

    x = torch.rand(2, 1, 32, 32)
    target = torch.randint(0, 3, (2, 1, 32, 32))
    loss_fn = make_loss(good_model.task)
    separate = anchored(loss_fn, anchor(), net, 2.0)(net(x), target, None)
    batch, together = anchored_together(lambda: (x, target, None), loss_fn, anchor(), 2.0)
    xb, tb, mb = batch()
    assert xb.shape[0] == 4
    assert torch.allclose(together(net(xb), tb, mb), separate, rtol=1e-4, atol=1e-5)


def test_fine_tuning_precision_is_checked_and_float32_is_honoured(base_model):
    from napari_unet.errors import SettingsError
    from napari_unet.training import FinetuneSettings

    with pytest.raises(SettingsError, match="precision"):
        FinetuneSettings(precision="half")
    img, lab = blobs(21)
    res = finetune(base_model, img, lab, np.array([True, False] * 3), iterations=3,
                   precision="float32", **EXACT)
    assert res.iterations == 3
