"""The correction loop as napari opens it: paint, learn, preview, accept or discard, undo,
review, cancel, save."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_unet._napari.change_preview import CHANGE_COLOR, change_labels, preview_name
from napari_unet._napari.worker import JobState
from napari_unet.correction.session import CorrectionSession
from napari_unet.inference.predictor import predict_slices
from napari_unet.model.checkpoint import load_model
from support import widget_helpers as W
from support.widget_helpers import home_in_tmp, one_torch_thread  # noqa: F401 (autouse)

pytestmark = pytest.mark.gui


@pytest.fixture
def loop(make_napari_viewer, qtbot, tmp_path):
    """A scan, its segmentation by a tiny model (Run clicked), and the correction widget."""
    viewer = make_napari_viewer()
    W.add_scan(viewer)
    inference = W.open_widget(viewer, W.INFERENCE)
    W.use_model_file(inference, W.tiny_model_file(tmp_path))
    inference.device.value = "cpu"
    inference.probs.value = True
    W.click(qtbot, inference.run_button)
    assert W.wait_until_idle(qtbot, inference) is JobState.DONE
    widget = W.open_widget(viewer, W.CORRECTION)
    widget.budget.value = 1
    return viewer, viewer.layers["scan tiny"], widget


def paint_two_slices(viewer, layer):
    """What a person does with the brush on slice 2 and the fill tool on slice 5."""
    viewer.layers.selection.active = layer
    layer.brush_size = 9
    viewer.dims.set_current_step(0, 2)
    layer.paint((2, 20, 20), (int(layer.data[2, 20, 20]) + 1) % 3)
    viewer.dims.set_current_step(0, 5)
    value = int(layer.data[5, 1, 1])
    layer.fill((5, 1, 1), (value + 1) % 3)
    layer.refresh()


def learn(qtbot, widget) -> None:
    W.click(qtbot, widget.learn_button)
    assert widget.runner.state is JobState.RUNNING and not widget.learn_button.enabled
    assert W.wait_until_idle(qtbot, widget, 60000) is JobState.DONE, widget.runner.error


def accept(qtbot, widget) -> None:
    """Accept the proposal, ticking "accept anyway" when the check advises against it (the
    tiny test model's check goes either way; the check has its own test)."""
    if widget.is_shown(widget.anyway):
        W.click(qtbot, widget.anyway)
    W.click(qtbot, widget.accept_button)


@pytest.mark.slow  # 2.5 s or more: CI runs it, the quick tier does not
def test_learning_proposes_then_accept_writes_only_unedited_slices(loop, qtbot):
    viewer, layer, widget = loop
    assert widget.edited.value.startswith("edited slices: 0")
    paint_two_slices(viewer, layer)
    qtbot.waitUntil(lambda: widget.edited.value.startswith("edited slices: 2 (axial)"),
                    timeout=3000)
    painted, before = layer.data[[2, 5]].copy(), layer.data.copy()
    old = widget.session.model
    learn(qtbot, widget)
    update = widget.proposal
    # a proposal: summary and preview, labels untouched until Accept
    np.testing.assert_array_equal(layer.data, before)
    assert widget.session.model is old
    assert update.summary() in widget.proposal_text.value
    preview = viewer.layers[preview_name(layer)]
    assert np.count_nonzero(preview.data) == update.changed_voxels
    np.testing.assert_allclose(preview.scale, W.SCALE)
    # one colour no class has, so a change stands out on the labels beneath it
    shown = preview.colormap.map(np.array([1, 2, 3]))
    np.testing.assert_allclose(shown[:2], [CHANGE_COLOR, CHANGE_COLOR])
    np.testing.assert_allclose(shown[2], [1.0, 1.0, 1.0, 1.0])
    assert not np.allclose(layer.colormap.map(np.array([1, 2]))[:, :3], CHANGE_COLOR[:3])
    assert widget.discard_button.enabled
    assert widget.accept_button.enabled or widget.is_shown(widget.anyway)
    assert viewer.layers.selection.active is layer  # painting stays on the labels
    accept(qtbot, widget)
    assert preview_name(layer) not in viewer.layers and widget.proposal is None
    session = widget.session
    assert session.model is update.model and session.model.hash != old.hash
    np.testing.assert_array_equal(layer.data[[2, 5]], painted)
    others = [0, 1, 3, 4, 6, 7]
    fresh = predict_slices(session.volume, session.model, others, axis=0, device="cpu")
    np.testing.assert_array_equal(layer.data[others], fresh.labels[others])
    moved = sum(bool((layer.data[i] != before[i]).any()) for i in others)
    assert f"accepted: {moved} slices updated" in widget.status.value  # those that changed
    W.click(qtbot, widget.undo_button)
    np.testing.assert_array_equal(layer.data, before)
    assert widget.session.model is old and not widget.undo_button.enabled


def test_discard_changes_nothing(loop, qtbot):
    viewer, layer, widget = loop
    paint_two_slices(viewer, layer)
    before = layer.data.copy()
    learn(qtbot, widget)
    W.click(qtbot, widget.discard_button)
    np.testing.assert_array_equal(layer.data, before)
    assert preview_name(layer) not in viewer.layers
    assert not widget.accept_button.enabled and not widget.undo_button.enabled
    assert widget.session.edited_slices() == [2, 5]


def test_edits_made_while_learning_are_kept(loop, qtbot):
    viewer, layer, widget = loop
    paint_two_slices(viewer, layer)
    learn(qtbot, widget)
    layer.paint((7, 30, 30), (int(layer.data[7, 30, 30]) + 1) % 3)  # a new edit, slice 7
    mine = layer.data[7].copy()
    accept(qtbot, widget)
    np.testing.assert_array_equal(layer.data[7], mine)
    assert "you edited meanwhile kept" in widget.status.value


def test_a_new_run_never_replaces_edited_labels(loop, qtbot):
    """Run again while a proposal waits: the edited layer stays as it is (and its
    proposal with it); the new result gets a layer of its own."""
    viewer, layer, widget = loop
    paint_two_slices(viewer, layer)
    learn(qtbot, widget)
    mine = layer.data.copy()
    inference = W.open_widget(viewer, W.INFERENCE)  # already docked: the same widget
    W.click(qtbot, inference.run_button)
    assert W.wait_until_idle(qtbot, inference) is JobState.DONE
    np.testing.assert_array_equal(layer.data, mine)
    (new,) = [ly for ly in inference.last_layers if ly.name.startswith("scan tiny")
              and ly is not layer and ly.__class__ is layer.__class__]
    assert new.name != layer.name and "'scan tiny' has edits and is kept" in \
        inference.status.value
    assert not np.array_equal(new.data, mine) and widget.labels_layer.value is layer
    accept(qtbot, widget)
    np.testing.assert_array_equal(layer.data[[2, 5]], mine[[2, 5]])
    assert widget.session.can_undo


def test_a_proposal_for_labels_replaced_meanwhile_is_refused(loop, qtbot):
    """Labels replaced while the model learned (here: the painted voxels erased back to
    the model's output, then the scan run again) get no stale proposal."""
    viewer, layer, widget = loop
    widget.budget.value = 6  # learning outlasts the re-run
    paint_two_slices(viewer, layer)
    notifications = W.notification_log()
    original = widget.session.output.copy()

    def rerun_meanwhile(*_):
        layer.data[:] = original  # no edits left: a re-run may replace the layer
        inference = W.open_widget(viewer, W.INFERENCE)
        W.click(qtbot, inference.run_button)
        assert W.wait_until_idle(qtbot, inference) is JobState.DONE

    W.click(qtbot, widget.learn_button)
    qtbot.waitUntil(lambda: widget.runner.panel.bar.value > 0, timeout=20000)  # learning
    rerun_meanwhile()
    assert W.wait_until_idle(qtbot, widget, 60000) is JobState.FAILED
    assert widget.proposal is None and preview_name(layer) not in viewer.layers
    assert "learn again" in str(widget.runner.error), repr(widget.runner.error)
    assert any("Learning from corrections" in m for m in W.errors_shown(notifications()))
    assert "learn again" in widget.status.value
    assert not widget.session.can_undo


def test_deleting_the_labels_layer_resets_the_widget(loop, qtbot):
    viewer, layer, widget = loop
    notifications = W.notification_log()
    paint_two_slices(viewer, layer)
    learn(qtbot, widget)
    assert preview_name(layer) in viewer.layers
    viewer.layers.remove(layer)
    qtbot.waitUntil(lambda: preview_name(layer) not in viewer.layers, timeout=2000)
    assert widget.proposal is None
    assert widget.labels_layer.value is None and "run the inference widget" in \
        widget.edited.value
    for button in (widget.learn_button, widget.accept_button, widget.save_model_button,
                   widget.save_labels_button, widget.review_button):
        assert not button.enabled
    assert widget.save_labels() is None  # even when called: a message, not a crash
    assert any("Saving labels" in m for m in W.errors_shown(notifications()))
    assert "no labels to save" in widget.status.value


def test_deleting_the_labels_layer_while_learning_proposes_nothing(loop, qtbot):
    viewer, layer, widget = loop
    notifications = W.notification_log()
    paint_two_slices(viewer, layer)
    W.click(qtbot, widget.learn_button)
    viewer.layers.remove(layer)
    assert W.wait_until_idle(qtbot, widget, 60000) is JobState.CANCELLED
    assert "'scan tiny' was deleted" in widget.status.value
    assert W.errors_shown(notifications()) == []
    assert [ly.name for ly in viewer.layers if "proposed" in ly.name] == []
    for button in (widget.learn_button, widget.review_button, widget.save_model_button,
                   widget.save_labels_button, widget.undo_button):
        assert not button.enabled  # nothing to work on


def test_closing_the_widget_while_learning_stops_it_and_adds_nothing(loop, qtbot):
    viewer, layer, widget = loop
    paint_two_slices(viewer, layer)
    before = layer.data.copy()
    W.click(qtbot, widget.learn_button)
    W.close_dock(qtbot, viewer, widget)
    assert widget.parent() is None  # napari took it out of its dock
    assert W.wait_until_idle(qtbot, widget, 60000) is JobState.CANCELLED
    qtbot.wait(200)
    assert preview_name(layer) not in viewer.layers
    np.testing.assert_array_equal(layer.data, before)
    viewer.layers.remove(layer)  # the closed widget no longer follows the viewer


def test_the_preview_leaves_out_slices_edited_while_learning(loop, qtbot, monkeypatch):
    """A slice painted while the model learned is not shown as changing, nor counted."""
    real = CorrectionSession.compute_update

    def painted_meanwhile(self, *args, **kwargs):
        update = real(self, *args, **kwargs)
        self.labels[7] = (self.labels[7] + 1) % 3  # after learning took its snapshot
        return update

    monkeypatch.setattr(CorrectionSession, "compute_update", painted_meanwhile)
    viewer, layer, widget = loop
    paint_two_slices(viewer, layer)
    learn(qtbot, widget)
    update = widget.proposal
    assert 7 not in update.slices and len(update.slices) == 5
    assert "of 5 unedited slices" in widget.proposal_text.value
    preview = viewer.layers[preview_name(layer)].data
    assert not preview[7].any() and np.count_nonzero(preview) == update.changed_voxels


def test_a_proposal_the_check_advises_against_needs_a_deliberate_click(loop, qtbot,
                                                                      monkeypatch):
    """The core's check says no: the widget says why and Accept waits for 'accept anyway'."""
    real = CorrectionSession.compute_update

    def judged_worse(self, *args, **kwargs):
        return replace(real(self, *args, **kwargs), recommended=False,
                       check={"held_out_voxels": 1200, "measure": "Dice",
                              "before": 0.91, "after": 0.62})

    monkeypatch.setattr(CorrectionSession, "compute_update", judged_worse)
    viewer, layer, widget = loop
    paint_two_slices(viewer, layer)
    before = layer.data.copy()
    learn(qtbot, widget)
    assert "1,200 corrected voxels kept back as a check, Dice 0.910 before, 0.620 after: " \
        "not recommended" in widget.proposal_text.value
    assert widget.is_shown(widget.anyway) and not widget.accept_button.enabled
    np.testing.assert_array_equal(layer.data, before)
    W.click(qtbot, widget.anyway)
    assert widget.anyway.value and widget.accept_button.enabled
    W.click(qtbot, widget.accept_button)
    assert widget.session.can_undo and not widget.is_shown(widget.anyway)


def _slice_dice_estimates(viewer, layer) -> np.ndarray:
    """Per axial slice, from the probability layers the inference widget added: each
    foreground class's Dice if the probabilities were right, 2 sum p_c [y = c] / (sum p_c
    + #[y = c]), averaged over the classes the slice labels (and a class it labels nowhere
    whose probabilities add up to a tenth of the largest labelled one's: a miss, Dice 0);
    slices with less than a tenth of the median foreground left out, as the quality score
    does."""
    labels = np.asarray(layer.data)
    p = [np.asarray(viewer.layers[f"{layer.name} p({c})"].data) for c in ("block", "disc")]
    agree = np.stack([(pc * (labels == c + 1)).sum(axis=(1, 2)) for c, pc in enumerate(p)], 1)
    prob = np.stack([pc.sum(axis=(1, 2)) for pc in p], 1)
    count = np.stack([(labels == c + 1).sum(axis=(1, 2)) for c in range(len(p))], 1)
    largest = np.where(count > 0, (prob + count) / 2, 0).max(axis=1, keepdims=True)
    counted = (count > 0) | ((prob >= 0.1 * largest) & (largest > 0))
    dice = np.where(counted, 2 * agree / np.maximum(prob + count, 1e-12), 0.0)
    est = dice.sum(axis=1) / np.maximum(counted.sum(axis=1), 1)
    size = (prob + count).sum(axis=1) / 2
    keep = counted.any(axis=1) & (size >= 0.1 * np.median(size[size > 0]))
    return np.where(keep, est, np.nan)


def test_review_next_jumps_to_the_least_trusted_slice_and_marks_it(loop, qtbot):
    viewer, layer, widget = loop
    est = _slice_dice_estimates(viewer, layer)
    order = np.argsort(np.where(np.isnan(est), np.inf, est), kind="stable")
    ranked = est[order]
    W.click(qtbot, widget.review_button)
    first = viewer.dims.current_step[0]
    # the least trusted slice, or one tied with it: the widget sums in float32 what this
    # test sums in float64, so slices within 1e-5 of each other may come in either order
    why = (first, order[:4], ranked[:4], widget.session.slice_scores)
    assert est[first] <= ranked[0] + 1e-5, why
    W.click(qtbot, widget.review_button)
    second = viewer.dims.current_step[0]
    assert second != first and est[second] <= ranked[1] + 1e-5, why
    marks = viewer.layers["scan tiny reviewed"]
    assert sorted(marks.data[:, 0].astype(int)) == sorted([first, second])
    np.testing.assert_allclose(marks.scale, W.SCALE)
    assert f"{min(first, second)}, {max(first, second)}" in widget.reviewed.value


def test_cancel_stops_learning_within_a_second_and_leaves_the_labels_alone(loop, qtbot):
    viewer, layer, widget = loop
    widget.budget.value = 60
    paint_two_slices(viewer, layer)
    before = layer.data.copy()
    W.click(qtbot, widget.learn_button)
    qtbot.waitUntil(lambda: widget.runner.panel.bar.value > 0, timeout=20000)
    W.click(qtbot, widget.cancel_button)
    qtbot.waitUntil(lambda: widget.runner.state is JobState.CANCELLED, timeout=1000)
    W.wait_until_idle(qtbot, widget)
    np.testing.assert_array_equal(layer.data, before)
    assert widget.proposal is None and preview_name(layer) not in viewer.layers
    assert not widget.session.can_undo and widget.learn_button.enabled
    assert "your labels are unchanged" in widget.status.value


def test_save_model_and_labels_to_the_user_folder_and_to_a_chosen_file(loop, qtbot,
                                                                      tmp_path):
    viewer, layer, widget = loop
    paint_two_slices(viewer, layer)
    learn(qtbot, widget)
    accept(qtbot, widget)
    W.click(qtbot, widget.save_model_button)  # no file chosen: a unique one in ~/napari-unet
    (saved,) = (Path.home() / "napari-unet" / "models").glob("tiny-corrected-*.safetensors")
    prov = load_model(saved, device="cpu").meta.provenance
    assert prov["parent"]["name"] == "tiny" and prov["corrected_slices"] == 2
    W.click(qtbot, widget.save_model_button)  # again: a second file, the first one kept
    assert len(list(saved.parent.glob("*.safetensors"))) == 2
    widget.labels_path.value = tmp_path / "labels.nii.gz"
    W.click(qtbot, widget.save_labels_button)
    saved = nib.load(tmp_path / "labels.nii.gz")
    np.testing.assert_array_equal(np.asarray(saved.dataobj).transpose(2, 1, 0), layer.data)
    from napari_unet.io import read_volume
    from napari_unet.io.geometry import layer_geometry

    back = read_volume(tmp_path / "labels.nii.gz")
    geo = layer_geometry(back.spacing, back.origin, back.direction)
    np.testing.assert_allclose(geo["scale"], W.SCALE, rtol=1e-5)
    np.testing.assert_allclose(geo["translate"], W.TRANSLATE, atol=1e-4)
    first = (tmp_path / "labels.nii.gz").read_bytes()  # saved again: beside, never over it
    W.click(qtbot, widget.save_labels_button)
    assert (tmp_path / "labels.nii.gz").read_bytes() == first
    assert (tmp_path / "labels-1.nii.gz").is_file()
    assert str(widget.labels_path.value) == str(tmp_path / "labels-1.nii.gz")
    notifications = W.notification_log()
    widget.labels_path.value = tmp_path / "no_such_folder" / "x.nii.gz"  # never made
    W.click(qtbot, widget.save_labels_button)
    assert not (tmp_path / "no_such_folder").exists()
    assert any("Saving labels" in m for m in W.errors_shown(notifications()))
    assert "the folder" in widget.status.value and "does not exist" in widget.status.value
    widget.labels_path.value = tmp_path / "corrected.nii.gz"  # a name that says nothing
    W.click(qtbot, widget.save_labels_button)
    [again] = viewer.open(str(tmp_path / "corrected.nii.gz"), plugin="napari-unet")
    assert again._type_string == "labels"  # the file says so: it holds the class names
    assert list(again.features["class"]) == ["background", "block", "disc"]


def test_change_labels_marks_only_voxels_that_would_change():
    labels = np.zeros((3, 4, 5), np.uint8)
    labels[:, :, 0] = 2
    proposed = np.ones((2, 3, 5), np.uint8)  # slices 1 and 3 along axis 1: (z, x) each
    proposed[:, :, 0] = 0
    out = change_labels(labels, 1, np.array([1, 3]), proposed, n_labels=3)
    assert out.shape == labels.shape
    assert (out[:, [0, 2], :] == 0).all()  # slices not re-predicted
    assert out[0, 1, 0] == 3  # 2 -> background: the extra value
    assert out[0, 1, 1] == 1 and out[0, 3, 4] == 1


def test_a_label_the_model_does_not_have_is_named_with_its_slice(loop, qtbot):
    """napari lets a person paint any label number; Learn says which one, where, and which
    classes the model has (not the training CLI's advice about --classes)."""
    viewer, layer, widget = loop
    viewer.layers.selection.active = layer
    layer.brush_size = 5
    viewer.dims.set_current_step(0, 4)
    layer.paint((4, 20, 20), 7)
    before = layer.data.copy()
    W.click(qtbot, widget.learn_button)
    assert W.wait_until_idle(qtbot, widget, 60000) is JobState.FAILED
    assert ("label 7 on slice 4 is not one of the model's classes (0 background, 1 block, "
            "2 disc); paint those voxels with one of them") in widget.status.value
    assert "--classes" not in widget.status.value
    assert widget.proposal is None
    np.testing.assert_array_equal(layer.data, before)


@pytest.mark.slow  # 2.5 s or more: CI runs it, the quick tier does not
def test_another_day_labels_saved_earlier_continue_the_loop(make_napari_viewer, qtbot,
                                                            tmp_path):
    """Correct, save, close; reopen scan and labels from files, Run *continuing from* the
    saved labels: the corrected slice counts as an edit, the loop learns and keeps it."""
    from napari_unet.io import write_volume
    from napari_unet.io.volume import Volume

    image, _ = W.phantom((8, 40, 48))
    write_volume(image, tmp_path / "scan.nii.gz", like=Volume(image, spacing=(2.0, 0.8, 0.9)))
    model = W.tiny_model_file(tmp_path)
    viewer = make_napari_viewer()
    [scan] = viewer.open(str(tmp_path / "scan.nii.gz"), plugin="napari-unet")
    inference = W.open_widget(viewer, W.INFERENCE)
    W.use_model_file(inference, model)
    inference.device.value = "cpu"
    W.click(qtbot, inference.run_button)
    assert W.wait_until_idle(qtbot, inference) is JobState.DONE
    layer = viewer.layers["scan tiny"]
    paint_two_slices(viewer, layer)
    widget = W.open_widget(viewer, W.CORRECTION)
    [saved] = widget.save_labels() or [None]
    corrected = layer.data.copy()
    viewer.layers.clear()  # the next day
    [scan] = viewer.open(str(tmp_path / "scan.nii.gz"), plugin="napari-unet")
    [earlier] = viewer.open(str(saved), plugin="napari-unet")
    assert earlier._type_string == "labels"
    assert (f"to go on with {earlier.name!r}: choose it under 'continue from labels' in the "
            "inference widget and Run") in widget.edited.value
    inference.reset_choices()
    inference.image.value = scan
    inference.start_from.value = earlier
    assert inference.run_button.enabled, inference.status.value
    W.click(qtbot, inference.run_button)
    assert W.wait_until_idle(qtbot, inference) is JobState.DONE
    assert "started from" in inference.status.value
    assert "2 slices differ from the model and count as your edits" in inference.status.value
    result = viewer.layers["scan tiny"]
    np.testing.assert_array_equal(result.data, corrected)
    assert result.visible and not earlier.visible  # one layer to paint on
    widget.reset_choices()
    widget.labels_layer.value = result
    widget.budget.value = 1
    assert widget.edited.value.startswith("edited slices: 2")
    learn(qtbot, widget)
    accept(qtbot, widget)
    np.testing.assert_array_equal(result.data[[2, 5]], corrected[[2, 5]])


def test_continue_from_labels_of_another_scan_is_refused(loop, qtbot):
    """Labels on the scan's voxels are taken, even when they hold only some slices (a DICOM
    SEG keeps only the frames with labels); labels elsewhere, or with classes the model
    does not have, are refused with the reason."""
    viewer, layer, _ = loop
    inference = W.open_widget(viewer, W.INFERENCE)
    part = viewer.add_labels(np.full((3, 40, 48), 2, np.uint8), name="part", scale=W.SCALE,
                             translate=np.add(W.TRANSLATE, (2 * W.SCALE[0], 0, 0)))
    inference.reset_choices()
    inference.start_from.value = part
    W.click(qtbot, inference.run_button)
    assert W.wait_until_idle(qtbot, inference) is JobState.DONE, inference.status.value
    assert (layer.data[2:5] == 2).all()
    assert not layer.data[[0, 1, 5, 6, 7]].any()  # not in the saved labels: background
    other = viewer.add_labels(np.zeros((8, 40, 40), np.uint8), name="other")
    inference.reset_choices()
    inference.start_from.value = other
    assert not inference.run_button.enabled
    assert "'other' (8 x 40 x 40) do not lie on the voxels of 'scan'" in inference.status.value
    moved = viewer.add_labels(np.zeros((8, 40, 48), np.uint8), name="moved",
                              scale=W.SCALE, translate=(0.0, 0.0, 0.0))
    inference.reset_choices()
    inference.start_from.value = moved
    assert "lie elsewhere in space than 'scan'" in inference.status.value
    high = viewer.add_labels(np.full((8, 40, 48), 5, np.uint8), name="high",
                             scale=W.SCALE, translate=W.TRANSLATE)
    inference.reset_choices()
    inference.start_from.value = high
    assert inference.run_button.enabled
    W.click(qtbot, inference.run_button)
    assert W.wait_until_idle(qtbot, inference) is JobState.FAILED
    assert "'high' hold label 5, which the model does not have" in inference.status.value
