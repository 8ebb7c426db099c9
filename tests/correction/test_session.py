"""The correction loop's core (no Qt): edited slices, learning, the acceptance check, undo,
review, saving; and on a block of the sample brain the two rules of issue 10: a strong
model's uncorrected slices get no worse, a weak model's get much better."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_unet.correction.session import CorrectionSession
from napari_unet.errors import NapariUnetError, TaskError
from napari_unet.inference import InferenceSettings
from napari_unet.inference.predictor import predict_slices
from napari_unet.io import read_volume
from napari_unet.io.volume import Volume
from napari_unet.model.checkpoint import Model, load_model
from napari_unet.model.tasks import make_task
from napari_unet.training import FinetuneSettings
from support.widget_helpers import (
    one_torch_thread,  # noqa: F401 (autouse fixture)
    phantom,
)

FAST = FinetuneSettings(iterations=3, device="cpu", batch_size=2, patch_size=(32, 32))


@pytest.fixture
def session():
    image, _ = phantom()
    volume = Volume(image, spacing=(2.0, 1.0, 1.0), name="phantom")
    model = Model.new(make_task("segment", n_classes=3), base=4, name="tiny",
                      patch_size=(32, 32))
    return CorrectionSession.start(volume, model, InferenceSettings(axis=0, device="cpu"))


def test_edited_slices_follow_the_difference_from_the_model_output(session):
    assert session.edited_slices() == []
    session.labels[2, 5, 5] = (session.output[2, 5, 5] + 1) % 3
    session.labels[6, :4, :4] = 2
    expected = [2] + ([6] if (session.output[6, :4, :4] != 2).any() else [])
    assert session.edited_slices() == expected


def test_update_keeps_edits_repredicts_the_rest_and_undo_restores(session):
    _, truth = phantom()
    session.labels[1] = truth[1]
    session.labels[5] = truth[5]
    edited = {1: truth[1].copy(), 5: truth[5].copy()}
    before = session.labels.copy()
    old_model = session.model
    update = session.compute_update(FAST)
    np.testing.assert_array_equal(session.labels, before)  # a proposal touches nothing
    assert list(update.slices) == [0, 2, 3, 4, 6, 7] and update.n_trusted == 2
    assert update.check["held_out_voxels"] > 0
    assert f"{update.changed_voxels:,} voxels" in update.summary()
    previewed = update.labels != before[update.slices]  # what accepting would change
    assert update.changed_voxels == previewed.sum() == update.changed_per_slice.sum()
    assert update.changed_slices == int((update.changed_per_slice > 0).sum())
    changed = session.apply_update(update)
    assert session.model is update.model is not old_model
    assert changed == [int(i) for i, n in zip(update.slices, update.changed_per_slice,
                                              strict=True) if n]  # the slices that change
    for i, user in edited.items():
        np.testing.assert_array_equal(session.labels[i], user)
    fresh = predict_slices(session.volume, session.model, changed, axis=0, device="cpu")
    np.testing.assert_array_equal(session.labels[changed], fresh.labels[changed])
    assert session.edited_slices() == [1, 5]
    assert session.can_undo
    restored = session.undo()
    assert restored == changed
    np.testing.assert_array_equal(session.labels, before)
    session.apply_update(update)
    session.labels[0] = before[0]  # a slice that changed back, as painted by hand: kept
    assert session.undo() == [i for i in changed if i != 0]
    np.testing.assert_array_equal(session.labels, before)
    session.apply_update(update)
    restored = session.undo()
    np.testing.assert_array_equal(session.labels, before)
    assert session.model is old_model and not session.can_undo
    with pytest.raises(NapariUnetError, match="nothing to undo"):
        session.undo()


def test_edits_made_while_learning_are_never_overwritten(session):
    session.labels[3] = (session.output[3] + 1) % 3
    corrected = session.labels[3].copy()
    update = session.compute_update(FAST)
    session.labels[0] = (session.output[0] + 2) % 3  # the user paints while the model learns
    painted = session.labels[0].copy()
    still = session.still_open(update)  # what a preview now shows, and counts
    assert list(still.slices) == [1, 2, 4, 5, 6, 7]
    assert still.changed_voxels == update.changed_per_slice[1:].sum()
    assert still.changed_slices == int((update.changed_per_slice[1:] > 0).sum())
    changed = session.apply_update(update)
    assert set(changed) <= {1, 2, 4, 5, 6, 7}
    assert changed == [int(i) for i, n in zip(still.slices, still.changed_per_slice,
                                              strict=True) if n]
    np.testing.assert_array_equal(session.labels[0], painted)
    np.testing.assert_array_equal(session.labels[3], corrected)


def test_learning_without_corrections_says_what_to_do(session):
    with pytest.raises(NapariUnetError, match="no corrected slices"):
        session.learn(FAST)


def test_review_next_picks_the_most_uncertain_unreviewed_unedited_slice(session):
    session.slice_scores = None  # a result without quality scores: uncertainty decides
    session.slice_uncertainty = np.array([0.1, 0.9, 0.5, 0.3, 0.8, 0.2, 0.7, 0.6])
    session.labels[4] = (session.output[4] + 1) % 3  # edited: skipped
    order = [session.review_next() for _ in range(7)]
    assert order == [1, 6, 7, 2, 3, 5, 0]
    assert session.review_next() is None
    assert session.reviewed == {0, 1, 2, 3, 5, 6, 7}


def test_review_next_starts_from_the_least_trusted_slices(session):
    """Quality scores first (lowest first); slices too empty to score come last, the
    most uncertain of them first."""
    session.slice_scores = np.array([0.95, np.nan, 0.70, 0.99, 0.60, np.nan, 0.85, 0.91])
    session.slice_uncertainty = np.array([0.1, 0.2, 0.1, 0.9, 0.1, 0.6, 0.1, 0.1])
    session.labels[4] = (session.output[4] + 1) % 3  # edited: skipped
    order = [session.review_next() for _ in range(7)]
    assert order == [2, 6, 7, 0, 3, 5, 1]
    assert session.review_next() is None


def test_slice_scores_follow_updates_and_undo(session):
    """The least trusted slices after learning are the new model's: Accept brings the
    re-predicted slices' scores, Undo takes them back."""
    _, truth = phantom()
    session.labels[2] = truth[2]
    assert session.slice_scores is not None and session.slice_scores.shape == (8,)
    before = session.slice_scores.copy()
    update = session.compute_update(FAST)
    assert update.scores is not None and update.scores.shape == update.slices.shape
    session.apply_update(update)
    np.testing.assert_array_equal(session.slice_scores[update.slices], update.scores)
    np.testing.assert_array_equal(session.slice_scores[2], before[2])  # edited: kept
    session.undo()
    np.testing.assert_array_equal(session.slice_scores, before)


def test_start_gives_per_slice_uncertainty(session):
    unc = session.slice_uncertainty
    assert unc is not None and unc.shape == (8,)
    assert np.all((unc >= 0) & (unc <= 1))


def test_save_model_records_parent_and_corrections(session, tmp_path):
    _, truth = phantom()
    session.labels[[2, 4]] = truth[[2, 4]]
    session.apply_update(session.compute_update(FAST))
    path = session.save_model(tmp_path / "corrected.safetensors")
    loaded = load_model(path, device="cpu")
    prov = loaded.meta.provenance
    assert prov["parent"]["name"] == "tiny"
    assert prov["parent"]["hash"] == session.parent.hash
    assert prov["corrected_slices"] == 2
    assert loaded.hash == session.model.hash


def test_save_labels_writes_nifti_in_the_source_geometry(tmp_path):
    image, truth = phantom((6, 32, 40))
    affine = np.array([[0.0, 0.0, -0.8, 20.0], [0.0, 0.9, 0.0, -10.0],
                       [2.5, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 1.0]])
    src = tmp_path / "scan.nii.gz"
    nib.Nifti1Image(image.transpose(2, 1, 0), affine).to_filename(src)
    volume = read_volume(src)
    model = Model.new(make_task("segment", n_classes=3), base=4, name="tiny")
    sess = CorrectionSession(volume, model, np.zeros(volume.spatial_shape, np.uint8), axis=0)
    sess.labels[:] = truth
    written = sess.save_labels(tmp_path / "out" / "scan_labels.nii.gz")
    assert written == [tmp_path / "out" / "scan_labels.nii.gz"]
    out = nib.load(written[0])
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out.dataobj).transpose(2, 1, 0), truth)
    with pytest.raises(NapariUnetError):
        sess.save_labels(tmp_path / "labels.dcm")  # a DICOM SEG needs a DICOM source


def test_save_labels_adds_a_dicom_seg_for_dicom_scans(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from support.dicom_factory import write_dicom_series

    image, truth = phantom((4, 24, 20))
    write_dicom_series((image * 10).astype(np.int16), tmp_path / "series")
    volume = read_volume(tmp_path / "series")
    from napari_unet.io.class_codes import class_codes_from_texts

    model = Model.new(make_task("segment", n_classes=3, class_names=["bg", "a", "b"]), base=4,
                      name="tiny", class_codes=class_codes_from_texts(["Liver", "Spleen"], 3))
    sess = CorrectionSession(volume, model, np.zeros(volume.spatial_shape, np.uint8), axis=0)
    sess.labels[:] = truth
    (tmp_path / "out_seg.dcm").write_bytes(b"someone's SEG")  # the SEG goes beside it
    written = sess.save_labels(tmp_path / "out.nii.gz")
    assert [p.name for p in written] == ["out.nii.gz", "out_seg-1.dcm"]
    assert (tmp_path / "out_seg.dcm").read_bytes() == b"someone's SEG"
    seg = pydicom.dcmread(written[1])
    assert seg.Modality == "SEG" and seg.SeriesDescription == "tiny segmentation"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["a", "b"]
    assert [s.SegmentedPropertyTypeCodeSequence[0].CodeMeaning
            for s in seg.SegmentSequence] == ["Liver", "Spleen"]  # the model's codes


def test_save_labels_of_a_tilted_ct_opens_everywhere_and_the_seg_keeps_the_slices(tmp_path):
    """A gantry-tilted CT: the NIfTI is resampled onto an orthogonal grid (ITK and
    nibabel agree; the ball is where the scan has it), the SEG references every source
    slice with the labels as corrected, unresampled."""
    import highdicom as hd

    from support import geometry_cases as cases
    from support.nifti_checks import assert_content_in_place, assert_nifti_agrees

    folder = cases.tilted_ct(tmp_path / "ct", shape=(6, 28, 30))
    volume = read_volume(folder)
    model = Model.new(make_task("segment", n_classes=2, class_names=["bg", "ball"]), base=4)
    sess = CorrectionSession(volume, model, np.zeros(volume.spatial_shape, np.uint8), axis=0)
    sess.labels[:] = volume.array > 0
    with pytest.warns(UserWarning, match="resampled onto an orthogonal grid"):
        nifti, seg = sess.save_labels(tmp_path / "out.nii.gz")
    assert_nifti_agrees(nifti)
    assert_content_in_place(nifti, folder, cases.ball, labels=True)
    slices = cases.dicom_slices(folder)
    decoded = hd.seg.segread(seg).get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in slices], combine_segments=True,
        assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(decoded, cases.ball(cases.dicom_voxel_centres(folder)))


def test_saves_never_replace_a_file_they_find(session, tmp_path):
    """Labels and models saved where a file is already (a person's, or an earlier save)
    go beside it, name-1, name-2, ..., and the savers say where (issue 25, row 1)."""
    import nibabel as nib

    mine = tmp_path / "labels.nii.gz"
    mine.write_bytes(b"a person's ground truth")
    first = session.save_labels(mine)
    second = session.save_labels(mine)
    assert first == [tmp_path / "labels-1.nii.gz"] and second == [tmp_path / "labels-2.nii.gz"]
    assert mine.read_bytes() == b"a person's ground truth"
    assert nib.load(second[0]).shape == nib.load(first[0]).shape
    model_file = tmp_path / "model.safetensors"
    model_file.write_text("notes")
    assert session.save_model(model_file) == tmp_path / "model-1.safetensors"
    assert load_model(tmp_path / "model-1.safetensors", device="cpu").hash == \
        session.model.hash and model_file.read_text() == "notes"


def test_denoising_models_are_refused():
    volume = Volume(np.zeros((2, 8, 8), np.float32))
    model = Model.new(make_task("denoise"), base=4)
    with pytest.raises(TaskError, match="segmentation model"):
        CorrectionSession(volume, model, np.zeros((2, 8, 8)), axis=0)


def dice(pred: np.ndarray, truth: np.ndarray, classes=(1, 2)) -> float:
    """Mean Dice over the tissue classes."""
    scores = [2 * ((pred == c) & (truth == c)).sum() / max((pred == c).sum()
                                                           + (truth == c).sum(), 1)
              for c in classes]
    return float(np.mean(scores))


@pytest.fixture(scope="module")
def trained():
    """A tiny model trained on the phantom: good enough that a wrecked update shows."""
    import torch

    from napari_unet.training import train

    image, truth = phantom()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = train(image, truth, task="segment", n_classes=3, iterations=60, base=4,
                      patch_size=(32, 32), batch_size=4, val_fraction=0.0, device="cpu",
                      seed=0, lr=1e-2).model
    finally:
        torch.set_num_threads(threads)
    return Volume(image, name="phantom"), truth, model


def test_an_update_that_agrees_less_with_the_corrections_is_not_applied(trained):
    volume, truth, model = trained
    session = CorrectionSession.start(volume, model, InferenceSettings(axis=0, device="cpu"))
    session.labels[[2, 5]] = truth[[2, 5]]
    before, old = session.labels.copy(), session.model
    wreck = FinetuneSettings(iterations=8, lr=5.0, anchor=0.0, device="cpu", batch_size=2,
                             patch_size=(32, 32), augment=False)
    update = session.compute_update(wreck)
    assert not update.recommended, update.check
    assert update.check["after"] < update.check["before"]
    assert "not recommended" in update.summary()
    assert session.learn(wreck) == []  # learn applies only recommended updates
    np.testing.assert_array_equal(session.labels, before)
    assert session.model is old and not session.can_undo
    session.apply_update(update)  # the person may still accept it explicitly
    assert session.model is update.model and session.can_undo


def test_held_out_tiles_are_never_learnt_from(trained):
    """Two sessions whose corrections differ only inside the held-out tiles learn the
    same weights: those voxels are kept for the check alone."""
    from napari_unet.correction.check import held_out_tiles

    volume, truth, model = trained
    out = CorrectionSession.start(volume, model, InferenceSettings(axis=0, device="cpu"))
    settings = FinetuneSettings(iterations=4, device="cpu", batch_size=2,
                                patch_size=(32, 32), seed=5)
    held = held_out_tiles(truth.shape[1:], settings.seed + 3)
    assert 0.1 < held.mean() < 0.3
    weights = []
    for fill in (0, 2):
        sess = CorrectionSession(volume, model, out.output, 0,
                                 predict_settings=out.predict_settings)
        sess.labels[3] = truth[3]
        sess.labels[3][held] = fill
        update = sess.compute_update(settings)
        weights.append({k: v.clone() for k, v in update.model.net.state_dict().items()})
    assert all(np.array_equal(weights[0][k].numpy(), weights[1][k].numpy())
               for k in weights[0])


def test_held_out_tiles_and_agreement():
    from napari_unet.correction.check import Agreement, acceptance, held_out_tiles

    mask = held_out_tiles((40, 50), seed=1, fraction=0.25, tile=10)
    assert mask.shape == (40, 50)
    assert mask.sum() == 5 * 100  # 5 of the 4 x 5 tiles, each 10 x 10
    np.testing.assert_array_equal(mask, held_out_tiles((40, 50), seed=1, fraction=0.25,
                                                       tile=10))
    truth = np.array([0, 1, 1, 2, 2, 2])
    perfect = Agreement.of(truth, truth, 3)
    worse = Agreement.of(np.array([0, 1, 0, 2, 2, 1]), truth, 3)
    assert perfect.dice == 1.0 and worse.dice < 1.0
    check, ok = acceptance(worse, perfect, 6)
    assert ok and check == {"held_out_voxels": 6, "measure": "Dice",
                            "before": round(worse.dice, 4), "after": 1.0}
    assert not acceptance(perfect, worse, 6)[1]
    background = np.zeros(4, int)  # no foreground held out: voxel agreement decides
    check, ok = acceptance(Agreement.of(background, background, 3),
                           Agreement.of(np.array([0, 0, 1, 0]), background, 3), 4)
    assert check["measure"] == "agreement" and not ok


def brain_block(z0: int, n: int = 16):
    """``n`` axial slices of the sample brain from ``z0``, cropped to the head."""
    from napari_unet.sample_files import sample_path

    scan = read_volume(sample_path("brain_t1"))
    truth = read_volume(sample_path("brain_tissue_labels")).array
    block = (slice(z0, z0 + n), slice(36, 196), slice(2, 194))
    volume = Volume(np.ascontiguousarray(scan.array[block]), scan.spacing, scan.origin,
                    scan.direction, name="brain block")
    return volume, np.ascontiguousarray(truth[block]).astype(np.uint8)


BLOCK_PREDICT = InferenceSettings(axis=0, device="cpu", roi_size=(160, 192))
BLOCK_LEARN = FinetuneSettings(iterations=30, device="cpu", seed=0)


def corrected_and_scored(volume, truth, model, corrected: list[int]) -> tuple[float, float]:
    """Dice on the uncorrected slices before and after learning from ``corrected``."""
    session = CorrectionSession.start(volume, model, BLOCK_PREDICT)
    others = [i for i in range(len(truth)) if i not in corrected]
    session.labels[corrected] = truth[corrected]  # the clinician's corrections
    before = dice(session.labels[others], truth[others])
    session.learn(BLOCK_LEARN)
    np.testing.assert_array_equal(session.labels[corrected], truth[corrected])
    return before, dice(session.labels[others], truth[others])


@pytest.mark.slow
def test_a_strong_models_uncorrected_slices_get_no_worse():
    """The bundled model on a block of the sample brain (its held-out slices among them)."""
    volume, truth = brain_block(92)
    model = load_model("brain-tissue", device="cpu")
    for corrected in ([5], [3, 12]):
        before, after = corrected_and_scored(volume, truth, model, corrected)
        assert after >= before - 0.002, (corrected, before, after)


@pytest.mark.slow
def test_a_weak_models_uncorrected_slices_get_much_better():
    """15 training iterations, then three corrected slices."""
    from napari_unet.training import train

    volume, truth = brain_block(80, 24)
    weak = train(volume, truth, task="segment", n_classes=3, iterations=15, base=8,
                 patch_size=(64, 64), batch_size=4, val_fraction=0.0, device="cpu", seed=0)
    before, after = corrected_and_scored(volume, truth, weak.model, [3, 11, 19])
    assert after >= before + 0.1, (before, after)
