"""The inference widget as napari opens it: from the plugin manager and the menus, clicked."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_unet._napari.model_picker import NEW
from napari_unet._napari.worker import JobState
from support import widget_helpers as W
from support.napari_doors import DISPLAY_NAME
from support.widget_helpers import home_in_tmp, one_torch_thread  # noqa: F401 (autouse)

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("path", [("Plugins", DISPLAY_NAME), ("Layers", "Segment")])
def test_every_widget_opens_from_the_menus_with_the_viewer(make_napari_viewer, path):
    viewer = make_napari_viewer()
    for name in (W.INFERENCE, W.CORRECTION, W.TRAINING):
        action = W.menu_action(viewer, *path, name)
        action.trigger()
        widget = W.docked(viewer, name)
        assert widget.viewer is viewer, name
    assert len(viewer.window.dock_widgets) == 3


def test_inference_gives_aligned_labels_named_after_input_and_model(make_napari_viewer,
                                                                   qtbot, tmp_path):
    from napari.utils import progress

    viewer = make_napari_viewer()
    scan = W.add_scan(viewer)
    widget = W.open_widget(viewer, W.INFERENCE)
    W.use_model_file(widget, W.tiny_model_file(tmp_path))
    assert "segmentation into 3 classes (background, block, disc)" in widget.picker.info.value
    widget.device.value = "cpu"
    widget.probs.value = True
    shown = []  # every bar a progress object would add to napari's activity dock

    def follow(event):
        shown.extend(event.added)

    progress._all_instances.events.changed.connect(follow)
    W.click(qtbot, widget.run_button)
    try:
        assert W.wait_until_idle(qtbot, widget) is JobState.DONE, widget.runner.error
    finally:
        progress._all_instances.events.changed.disconnect(follow)
    labels = viewer.layers["scan tiny"]
    assert labels in widget.last_layers and labels._type_string == "labels"
    assert labels.data.shape == scan.data.shape and labels.data.dtype == np.uint8
    np.testing.assert_allclose(labels.scale, W.SCALE)
    np.testing.assert_allclose(labels.translate, W.TRANSLATE)
    np.testing.assert_allclose(labels.affine.affine_matrix, scan.affine.affine_matrix)
    assert list(labels.features["class"]) == ["background", "block", "disc"]
    for cls in ("background", "block", "disc"):
        prob = viewer.layers[f"scan tiny p({cls})"]
        assert prob.data.shape == scan.data.shape and not prob.rgb
        np.testing.assert_allclose(prob.translate, W.TRANSLATE)
    unc = viewer.layers["scan tiny uncertainty"]
    assert unc.data.shape == scan.data.shape
    np.testing.assert_allclose(unc.scale, W.SCALE)
    # its own progress: a full bar and the time taken; nothing in napari's activity dock,
    # whose busy indicator repaints the window while a job runs (worker.py)
    panel = widget.runner.panel
    assert panel.bar.value == panel.bar.max == 8 and panel.text.value.startswith("done in")
    assert shown == []
    assert "axial slices" in widget.status.value


def test_a_model_of_another_pixel_spacing_runs_resampled_and_says_so(make_napari_viewer,
                                                                    qtbot, tmp_path):
    viewer = make_napari_viewer()
    scan = W.add_scan(viewer)  # 0.8 x 0.9 mm pixels
    widget = W.open_widget(viewer, W.INFERENCE)
    W.use_model_file(widget, W.tiny_model_file(tmp_path, pixel_spacing=(0.5, 0.5)))
    widget.device.value = "cpu"
    W.click(qtbot, widget.run_button)
    assert W.wait_until_idle(qtbot, widget) is JobState.DONE, widget.runner.error
    labels = viewer.layers["scan tiny"]
    assert labels.data.shape == scan.data.shape
    np.testing.assert_allclose(labels.affine.affine_matrix, scan.affine.affine_matrix)
    np.testing.assert_allclose(labels.scale, W.SCALE)
    assert "run at the model's 0.5 x 0.5 mm pixels" in widget.status.value


def test_denoising_model_gives_an_image_layer_and_hides_classes(make_napari_viewer, qtbot,
                                                               tmp_path):
    viewer = make_napari_viewer()
    scan = W.add_scan(viewer)
    widget = W.open_widget(viewer, W.INFERENCE)
    widget.picker.source.value = NEW
    widget.picker.kind.value = "denoise"
    assert not widget.is_shown(widget.picker.classes) and widget.is_shown(widget.picker.kind)
    assert not widget.is_shown(widget.start_from)  # a denoiser continues no labels
    W.use_model_file(widget, W.tiny_model_file(tmp_path, "denoise", name="den"))
    assert "denoising" in widget.picker.info.value
    widget.device.value = "cpu"
    W.click(qtbot, widget.run_button)
    assert W.wait_until_idle(qtbot, widget) is JobState.DONE
    out = viewer.layers["scan den"]
    assert out._type_string == "image" and out.data.shape == scan.data.shape
    np.testing.assert_allclose(out.translate, W.TRANSLATE)


def test_a_2_5d_denoiser_says_so_and_denoises_every_slice(make_napari_viewer, qtbot,
                                                         tmp_path):
    viewer = make_napari_viewer()
    scan = W.add_scan(viewer)
    widget = W.open_widget(viewer, W.INFERENCE)
    W.use_model_file(widget, W.tiny_model_file(tmp_path, "denoise", name="den25",
                                               slice_context=1))
    assert "2.5D: each slice with 1 neighbour(s) either side" in widget.picker.info.value
    widget.device.value = "cpu"
    W.click(qtbot, widget.run_button)
    assert W.wait_until_idle(qtbot, widget) is JobState.DONE, widget.runner.error
    out = viewer.layers["scan den25"]
    assert out.data.shape == scan.data.shape and np.isfinite(out.data).all()


def test_a_model_made_for_all_planes_averages_them_unless_told_otherwise(
        make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    W.add_scan(viewer, shape=(32, 32, 32), name="cubic").scale = (0.9, 0.9, 0.9)
    widget = W.open_widget(viewer, W.INFERENCE)
    W.use_model_file(widget, W.tiny_model_file(tmp_path, default_planes="all"))
    assert "made to run along all 3 planes, weighted" in widget.picker.info.value
    assert widget.is_shown(widget.planes) and widget.planes.value == "auto"
    widget.device.value = "cpu"
    W.click(qtbot, widget.run_button)
    assert W.wait_until_idle(qtbot, widget) is JobState.DONE, widget.runner.error
    assert widget.status.value.startswith("3 planes, weighted, in")  # none thinner
    widget.planes.value = "all"
    W.click(qtbot, widget.run_button)
    assert W.wait_until_idle(qtbot, widget) is JobState.DONE, widget.runner.error
    assert widget.status.value.startswith("3 planes, averaged, in")
    widget.planes.value = "one"
    W.click(qtbot, widget.run_button)
    assert W.wait_until_idle(qtbot, widget) is JobState.DONE, widget.runner.error
    assert widget.status.value.startswith("axial slices")
    W.use_model_file(widget, W.tiny_model_file(tmp_path, "denoise", name="den"))
    assert not widget.is_shown(widget.planes)  # a denoiser runs along one plane


def test_settings_that_contradict_the_model_disable_run(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    W.add_scan(viewer)
    widget = W.open_widget(viewer, W.INFERENCE)
    W.use_model_file(widget, W.tiny_model_file(tmp_path, in_channels=2, name="two"))
    assert not widget.run_button.enabled
    assert "expects 2-channel images" in widget.status.value
    widget.picker.source.value = NEW
    assert widget.run_button.enabled
    devices = [str(d) for d in widget.device.choices]
    assert devices[0].startswith("auto (") and devices[-1] == "cpu"


def test_plain_words_instead_of_axis_numbers_and_zeros(make_napari_viewer):
    widget = W.open_widget(make_napari_viewer(), W.INFERENCE)
    assert list(widget.plane.choices) == ["auto (as acquired)", "axial", "coronal", "sagittal"]
    for field in (widget.roi, widget.batch):
        assert field.native.currentText() == "auto" and field.value == 0
    assert "acquired" in widget.plane.tooltip and "memory" in widget.batch.tooltip


def test_bad_model_file_shows_an_error_and_runs_nothing(make_napari_viewer, tmp_path):
    notifications = W.notification_log()
    viewer = make_napari_viewer()
    W.add_scan(viewer)
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    widget = W.open_widget(viewer, W.INFERENCE)
    W.use_model_file(widget, bad)
    shown = W.errors_shown(notifications())
    assert any("cannot use this model file" in m for m in shown), shown
    assert not widget.run_button.enabled and "broken.safetensors" in widget.status.value
    assert len(viewer.layers) == 1


@pytest.mark.parametrize("shape", [(40, 48), (2, 8, 40, 48)])
def test_a_layer_that_is_not_a_3d_scan_disables_run_and_says_why(make_napari_viewer, shape):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros(shape, np.float32), name="flat")
    widget = W.open_widget(viewer, W.INFERENCE)
    assert not widget.run_button.enabled
    assert f"shape {shape}" in widget.status.value and "3D scan" in widget.status.value
    W.add_scan(viewer)
    widget.image.value = viewer.layers["scan"]
    assert widget.run_button.enabled and widget.status.value == ""


def test_cancel_stops_a_running_inference_within_a_second(make_napari_viewer, qtbot,
                                                          tmp_path):
    viewer = make_napari_viewer()
    W.add_scan(viewer, shape=(400, 48, 48))
    widget = W.open_widget(viewer, W.INFERENCE)
    W.use_model_file(widget, W.tiny_model_file(tmp_path))
    widget.device.value, widget.batch.value = "cpu", 1
    states = []
    widget.runner.state_changed.connect(states.append)
    assert not widget.is_shown(widget.runner.panel.bar)  # nothing ran before: no bar
    W.click(qtbot, widget.run_button)
    assert widget.cancel_button.enabled and not widget.run_button.enabled
    assert widget.is_shown(widget.cancel_button) and widget.is_shown(widget.runner.panel.bar)
    qtbot.waitUntil(lambda: widget.runner.panel.bar.value >= 2, timeout=20000)
    clicked = time.monotonic()
    W.click(qtbot, widget.cancel_button)
    qtbot.waitUntil(lambda: widget.runner.state is JobState.CANCELLED, timeout=1000)
    assert time.monotonic() - clicked < 1.0
    assert widget.runner.panel.bar.value < 400  # it stopped, it did not finish
    W.wait_until_idle(qtbot, widget)
    assert states == [JobState.RUNNING, JobState.CANCELLED]
    assert [ly.name for ly in viewer.layers] == ["scan"]
    assert widget.run_button.enabled and not widget.is_shown(widget.cancel_button)
    assert "cancelled" in widget.status.value


def test_a_label_map_chosen_as_scan_gets_a_warning_but_can_still_run(make_napari_viewer,
                                                                      tmp_path):
    viewer = make_napari_viewer()
    scan = W.add_scan(viewer)
    widget = W.open_widget(viewer, W.INFERENCE)
    W.use_model_file(widget, W.tiny_model_file(tmp_path))
    widget.image.value = scan
    assert "label map" not in widget.status.value
    mask = viewer.add_image((scan.data > scan.data.mean()).astype("uint8"), name="mask")
    widget.image.reset_choices()
    widget.image.value = mask
    assert "'mask' looks like a label map" in widget.status.value
    assert widget.run_button.enabled  # a warning, not a refusal


def test_a_scan_with_nan_voxels_opened_from_a_file_says_they_were_replaced(
        make_napari_viewer, qtbot, tmp_path):
    """As the CLI's report does: the user learns that NaN/Inf voxels were filled in."""
    import nibabel as nib

    data = np.random.default_rng(0).random((8, 40, 48)).astype(np.float32)
    data[0, :4, :5] = np.nan
    data[3, 7, 7] = np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "holes.nii.gz")
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "holes.nii.gz"), plugin="napari-unet")
    widget = W.open_widget(viewer, W.INFERENCE)
    W.use_model_file(widget, W.tiny_model_file(tmp_path))
    widget.image.value = layer
    widget.device.value = "cpu"
    W.click(qtbot, widget.run_button)
    assert W.wait_until_idle(qtbot, widget) is JobState.DONE, widget.runner.error
    assert "note: holes: 21 NaN/Inf voxel(s) replaced" in widget.status.value
    assert "holes tiny" in viewer.layers


def _model_file_that_learned_from(tmp_path, image, p_foreground: float, name: str):
    """A model whose output is the same everywhere (known Dice estimate) and whose file
    records ``image`` as its training scan."""
    from dataclasses import replace

    from napari_unet.model.intensity_profile import profile_of
    from support.tiny_models import constant_model

    model = constant_model(p_foreground, n_classes=2)
    model.meta = replace(model.meta, name=name, intensity_profile=profile_of(
        [image], model.meta.normalization))
    return model.save(tmp_path / f"{name}.safetensors")


def test_the_quality_score_shows_under_the_result(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    scan = W.add_scan(viewer)
    widget = W.open_widget(viewer, W.INFERENCE)
    widget.device.value = "cpu"
    fields = list(widget.footer)  # in sight whatever the settings scroll to
    assert fields.index(widget.quality) == fields.index(widget.status) + 1  # under it
    sure = _model_file_that_learned_from(tmp_path, scan.data, 0.95, "sure")
    W.use_model_file(widget, sure)
    W.click(qtbot, widget.run_button)
    assert W.wait_until_idle(qtbot, widget) is JobState.DONE, widget.runner.error
    # 2 p / (p + 1) with p = 0.95 for class 1, nothing else: 0.974
    assert widget.quality.value == "quality 0.97 (no need to review)"
    assert widget.is_shown(widget.quality)
    unsure = _model_file_that_learned_from(tmp_path, scan.data, 0.6, "unsure")
    W.use_model_file(widget, unsure)
    W.click(qtbot, widget.run_button)
    assert widget.quality.value == ""  # a running job shows no old score
    assert W.wait_until_idle(qtbot, widget) is JobState.DONE, widget.runner.error
    assert widget.quality.value == ("quality 0.75: review, uncertain in 8 slices "
                                    "(estimated Dice 0.75)")
