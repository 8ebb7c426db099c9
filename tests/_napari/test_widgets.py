"""The inference and training widgets in a real napari viewer (run under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet._napari.inference_widget import InferenceWidget
from napari_unet._napari.model_picker import FILE, NEW
from napari_unet._napari.training_widget import TrainingWidget
from support.widget_helpers import (
    SCALE,
    TRANSLATE,
    add_scan,
    errors_shown,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    phantom,
    tiny_model_file,
)

pytestmark = pytest.mark.gui


@pytest.fixture
def notifications():
    from napari.utils.notifications import notification_manager

    start = len(notification_manager.records)
    yield lambda: notification_manager.records[start:]


def shown(w) -> bool:
    """Whether the widget would be visible once its dock is shown."""
    return not w.native.isHidden()


def use_file(widget, path):
    widget.picker.source.value = FILE
    widget.picker.file.value = path


def test_inference_gives_aligned_labels_named_after_input_and_model(make_napari_viewer,
                                                                   tmp_path):
    viewer = make_napari_viewer()
    scan = add_scan(viewer)
    widget = InferenceWidget(viewer)
    use_file(widget, tiny_model_file(tmp_path))
    assert "segmentation into 3 classes (background, block, disc)" in \
        widget.picker.info.value.replace("\n", " ")
    widget.device.value = "cpu"
    widget.probs.value = True
    layers = widget.run_sync()
    assert widget.job.state == "done"
    labels = viewer.layers["scan tiny"]
    assert labels in layers and labels._type_string == "labels"
    assert labels.data.shape == scan.data.shape and labels.data.dtype == np.uint8
    np.testing.assert_allclose(labels.scale, SCALE)
    np.testing.assert_allclose(labels.translate, TRANSLATE)
    np.testing.assert_allclose(labels.affine.affine_matrix, scan.affine.affine_matrix)
    assert list(labels.features["class"]) == ["background", "block", "disc"]
    for cls in ("background", "block", "disc"):
        prob = viewer.layers[f"scan tiny p({cls})"]
        assert prob.data.shape == scan.data.shape and not prob.rgb
        np.testing.assert_allclose(prob.translate, TRANSLATE)
    unc = viewer.layers["scan tiny uncertainty"]
    assert unc.data.shape == scan.data.shape
    np.testing.assert_allclose(unc.scale, SCALE)


def test_denoising_model_gives_an_image_layer_and_hides_classes(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    scan = add_scan(viewer)
    widget = InferenceWidget(viewer)
    widget.picker.source.value = NEW
    widget.picker.kind.value = "denoise"
    assert not shown(widget.picker.classes) and shown(widget.picker.kind)
    use_file(widget, tiny_model_file(tmp_path, "denoise", name="den"))
    assert "denoising" in widget.picker.info.value
    widget.device.value = "cpu"
    widget.run_sync()
    out = viewer.layers["scan den"]
    assert out._type_string == "image" and out.data.shape == scan.data.shape
    np.testing.assert_allclose(out.translate, TRANSLATE)


def test_settings_that_contradict_the_model_disable_run(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    add_scan(viewer)
    widget = InferenceWidget(viewer)
    use_file(widget, tiny_model_file(tmp_path, in_channels=2, name="two"))
    assert not widget.run_button.enabled
    assert "expects 2-channel images" in widget.status.value
    widget.picker.source.value = NEW
    assert widget.run_button.enabled
    devices = [str(d) for d in widget.device.choices]
    assert devices[0].startswith("auto (") and devices[-1] == "cpu"


def test_bad_model_file_shows_an_error_notification(make_napari_viewer, tmp_path,
                                                   notifications):
    viewer = make_napari_viewer()
    add_scan(viewer)
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    widget = InferenceWidget(viewer)
    use_file(widget, bad)
    shown = errors_shown(notifications())
    assert any("broken.safetensors" in m for m in shown), shown
    assert not widget.run_button.enabled
    assert widget.run_sync() is None and widget.job.state == "failed"
    assert len(viewer.layers) == 1


def test_cancel_stops_a_running_inference(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    add_scan(viewer, shape=(64, 48, 48))
    widget = InferenceWidget(viewer)
    use_file(widget, tiny_model_file(tmp_path))
    widget.device.value, widget.batch.value = "cpu", 1
    states = []
    widget.job._on_state = lambda s: (states.append(s), widget._on_state(s))
    widget.run()
    assert widget.cancel_button.enabled and not widget.run_button.enabled
    widget.cancel_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.job.state == "cancelled", timeout=20000)
    qtbot.waitUntil(lambda: widget.job.worker is None, timeout=5000)
    assert states == ["running", "cancelled"]
    assert [ly.name for ly in viewer.layers] == ["scan"]
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_thread_worker_run_adds_layers(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    add_scan(viewer)
    widget = InferenceWidget(viewer)
    use_file(widget, tiny_model_file(tmp_path))
    widget.device.value = "cpu"
    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.job.state == "done", timeout=30000)
    assert "scan tiny" in viewer.layers


def test_training_widget_trains_saves_and_plots(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    image, labels = phantom((8, 40, 48))
    viewer.add_image(image, name="scan", scale=SCALE)
    viewer.add_labels(labels, name="truth", scale=SCALE)
    widget = TrainingWidget(viewer)
    widget.task.value = "denoise"
    assert not shown(widget.classes) and shown(widget.noise)
    widget.task.value = "segment"
    assert shown(widget.classes) and not shown(widget.noise)
    widget.base.value, widget.budget.value = 4, 2
    widget.output.value = tmp_path / "trained.safetensors"
    widget.run_sync()
    assert widget.job.state == "done", widget.job.error
    assert (tmp_path / "trained.safetensors").is_file()
    assert widget.result.model.task.n_classes == 3
    assert widget.plot.history and widget.plot.loss_ax.lines[0].get_xdata().size >= 1
    assert "iterations" in widget.status.value


def test_screenshot_with_docked_widgets(make_napari_viewer, tmp_path):
    from skimage.io import imread

    viewer = make_napari_viewer(show=True)
    add_scan(viewer)
    inference = InferenceWidget(viewer)
    use_file(inference, tiny_model_file(tmp_path))
    inference.device.value = "cpu"
    viewer.window.add_dock_widget(inference, name="UNet inference", area="right")
    inference.run_sync()
    from napari_unet._napari.correction_widget import CorrectionWidget

    viewer.window.add_dock_widget(CorrectionWidget(viewer), name="UNet correction",
                                  area="right")
    path = tmp_path / "screenshot.png"
    shot = viewer.screenshot(str(path), canvas_only=False, flash=False)
    saved = imread(path)
    assert saved.shape[:2] == shot.shape[:2]
    assert saved.ndim == 3 and saved.shape[0] > 300 and saved.shape[1] > 400
    assert saved[..., :3].std() > 10 and len(np.unique(saved[..., 0])) > 20


def test_training_widget_trains_from_files(make_napari_viewer, tmp_path):
    import nibabel as nib

    image, labels = phantom((6, 32, 40))
    for name, data in (("scan.nii.gz", image), ("truth.nii.gz", labels)):
        nib.Nifti1Image(data.transpose(2, 1, 0), np.eye(4)).to_filename(tmp_path / name)
    widget = TrainingWidget(make_napari_viewer())
    widget.source.value = "files"
    assert shown(widget.image_files) and not shown(widget.image)
    widget.image_files.value = [tmp_path / "scan.nii.gz"]
    widget.label_files.value = [tmp_path / "truth.nii.gz"]
    widget.classes.value, widget.base.value, widget.budget.value = 3, 4, 1
    widget.output.value = tmp_path / "from_files.safetensors"
    widget.run_sync()
    assert widget.job.state == "done", widget.job.error
    assert widget.result.model.task.class_names[0] == "background"
    assert "scan.nii.gz" in str(widget.result.model.meta.provenance)
