"""A window that fits: the three widgets at 1280 x 800, each with what it needs in sight.

With all three widgets open (napari's plugin manager, as the Plugins menu does) and a
job run in each, the widget whose tab is in front shows its primary action, its progress,
its status line and (correction loop) the proposal with Accept / Discard without any
scrolling, nothing of its text is cut, and the canvas keeps 55% of the window's width.
Measured through Qt geometry (``support.fit_checks``).
"""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication, QTabBar

from napari_unet._napari.fitting import Note, compact, wrapping
from napari_unet._napari.model_picker import NEW
from napari_unet._napari.worker import TOAST_PX, JobState, fits_toast, report_error, toast
from support import widget_helpers as W
from support.fit_checks import cut_tabs, cut_texts, in_sight, rect_in
from support.widget_helpers import home_in_tmp, one_torch_thread  # noqa: F401 (autouse)

pytestmark = pytest.mark.gui
LONG = "sub-0042_ses-baseline_acq-mprage_run-01_T1w_defaced_bias-corrected_registered"
CANVAS_SHARE = 0.55


def key_widgets(widget) -> dict[str, object]:
    """What must be in sight: primary action, progress, status (and the proposal)."""
    panel = widget.runner.panel
    common = {"progress bar": panel.bar, "progress text": panel.text, "status": widget.status}
    if widget.TAB_TITLE == "Inference":
        return {"Run": widget.run_button, **common}
    if widget.TAB_TITLE == "Training":
        return {"Train": widget.train_button, **common, "loss plot": widget.plot.canvas}
    return {"Learn": widget.learn_button, **common, "edited slices": widget.edited,
            "plan": widget.plan, "proposal": widget.proposal_text,
            "Accept": widget.accept_button, "Discard": widget.discard_button}


def native(w):
    return getattr(w, "native", w)


def bring_to_front(qtbot, widget) -> None:
    """Its tab chosen, as a user clicks it."""
    bars = [b for b in widget.dock().window().findChildren(QTabBar) if b.isVisible()]

    for bar in bars:
        titles = [bar.tabText(i) for i in range(bar.count())]
        if widget.TAB_TITLE in titles and {"Inference", "Training"} & set(titles):
            bar.setCurrentIndex(titles.index(widget.TAB_TITLE))
    qtbot.wait(150)


def assert_all_in_sight(viewer, widget, where: str) -> None:
    window = viewer.window._qt_window
    dock = widget.dock()
    for name, w in key_widgets(widget).items():
        problem = in_sight(native(w), dock, window)
        assert problem is None, f"{where}: {widget.TAB_TITLE} {name}: {problem}"
    names = {ly.name for ly in viewer.layers}
    cut = cut_texts(widget, elided_ok=lambda box: any(box.itemText(i) in names
                                                      for i in range(box.count())))
    assert cut == [], f"{where}: {widget.TAB_TITLE}: {cut}"


def in_front(viewer, widget) -> bool:
    """Whether the widget's dock is the tab shown (Qt moves the others out of the window)."""
    window = viewer.window._qt_window
    return window.rect().contains(rect_in(widget.dock(), window))


def tabbed(viewer) -> bool:
    """Whether the three docks are tabs of one bar yet."""
    return any({"Inference", "Correction", "Training"} <= {b.tabText(i) for i in range(b.count())}
               for b in viewer.window._qt_window.findChildren(QTabBar) if b.isVisible())


def dock_tabs(viewer) -> QTabBar:
    bars = [b for b in viewer.window._qt_window.findChildren(QTabBar) if b.isVisible()]
    (bar,) = [b for b in bars if {"Inference", "Correction", "Training"}
              <= {b.tabText(i) for i in range(b.count())}]
    return bar


@pytest.mark.slow
def test_at_1280x800_every_widget_shows_action_progress_status_and_proposal(
        make_napari_viewer, qtbot, tmp_path):
    from skimage.io import imread

    viewer = make_napari_viewer(show=True)
    log = W.notification_log()
    window = viewer.window._qt_window
    window.resize(1280, 800)
    W.add_scan(viewer, shape=(12, 40, 48), name=LONG)
    inference, correction, training = (W.open_widget(viewer, name) for name in
                                       (W.INFERENCE, W.CORRECTION, W.TRAINING))
    qtbot.wait(200)
    # tabs of one dock area, the last opened in front, every title whole
    assert cut_tabs(dock_tabs(viewer)) == []
    assert [in_front(viewer, w) for w in (inference, correction, training)] == [
        False, False, True]
    canvas = viewer.window._qt_viewer.canvas.native
    assert window.width() == 1280 and window.height() == 800
    assert canvas.width() >= CANVAS_SHARE * window.width(), (canvas.width(), window.width())

    # inference, seen while it runs and once done
    bring_to_front(qtbot, inference)
    W.use_model_file(inference, W.tiny_model_file(tmp_path))
    inference.device.value, inference.probs.value, inference.batch.value = "cpu", True, 1
    W.click(qtbot, inference.run_button)
    assert inference.runner.running
    qtbot.wait(100)
    for running in (inference.cancel_button, inference.runner.panel.text):
        assert in_sight(running.native, inference.dock(), window) is None
    assert W.wait_until_idle(qtbot, inference, 120000) is JobState.DONE
    qtbot.wait(100)
    assert len(inference.status.value) > 200  # five long layer names: they wrap
    assert_all_in_sight(viewer, inference, "inference done")
    labels = inference.last_layers[0]

    # the correction loop: a proposal with its summary, Accept and Discard
    bring_to_front(qtbot, correction)
    correction.labels_layer.value = labels
    labels.brush_size = 9  # a corrected slice, painted with the brush
    viewer.dims.set_current_step(0, 3)
    labels.paint((3, 20, 20), (int(labels.data[3, 20, 20]) + 1) % 3)
    qtbot.waitUntil(lambda: correction.edited.value.startswith("edited slices: 1"), timeout=3000)
    correction.budget.value = 1
    W.click(qtbot, correction.learn_button)
    assert W.wait_until_idle(qtbot, correction, 120000) is JobState.DONE
    assert correction.proposal is not None and correction.proposal_text.value
    qtbot.wait(100)
    assert_all_in_sight(viewer, correction, "proposal shown")

    # training: the plot and the status with the model's path
    bring_to_front(qtbot, training)
    training.image.value, training.labels_layer.value = viewer.layers[LONG], labels
    training.base.value, training.budget.value = 4, 1
    W.click(qtbot, training.train_button)
    assert W.wait_until_idle(qtbot, training, 120000) is JobState.DONE
    qtbot.wait(100)
    assert str(training.result.model.path) in training.status.value  # a long path, wrapped
    assert_all_in_sight(viewer, training, "training done")

    for widget in (inference, correction, training):  # and again, each brought to front
        bring_to_front(qtbot, widget)
        assert_all_in_sight(viewer, widget, "in front again")
        assert canvas.width() >= CANVAS_SHARE * window.width()
    assert all(fits_toast(str(n.message)) for n in log())  # every notification fits
    path = tmp_path / "window.png"
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    shot = imread(path)
    assert shot.shape[1] >= 1280 and shot.shape[0] >= 800
    assert shot[..., :3].std() > 10 and len(np.unique(shot[..., 0])) > 20


def test_notes_wrap_paths_and_combos_elide_names(qtbot):
    """A path has no spaces to wrap at: a note breaks it anyway and grows to fit; a long
    name in a narrow combo box is elided in the middle, and the copied text is whole."""
    from magicgui.widgets import ComboBox, Label

    path = "/home/someone/napari-unet/models/" + LONG + ".safetensors"
    note = wrapping(Label(value=path))
    assert isinstance(note, Note)
    note.native.setFixedWidth(180)
    note.native.show()
    qtbot.wait(50)
    assert note.fits() and note.native.height() > 3 * note.native.fontMetrics().height()
    assert note.value == path  # no soft hyphens or zero-width spaces in what is copied
    note.value = "short"
    qtbot.wait(50)
    assert note.native.height() < 2 * note.native.fontMetrics().height()

    combo = compact(ComboBox(choices=[LONG, "b"], value=LONG))
    combo.native.setFixedWidth(160)
    combo.native.show()
    qtbot.wait(50)
    picture = combo.native.grab()
    assert not picture.isNull() and combo.native.property("elides")
    assert combo.native.view().minimumWidth() >= combo.native.fontMetrics() \
        .horizontalAdvance(LONG)  # the list shows every name whole


def test_notifications_fit_their_line(make_napari_viewer):
    """What the widgets say in a notification fits the one line napari shows (the whole
    reason is in the widget's status): checked in real napari notifications."""
    from magicgui.widgets import Label
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    from napari_unet.errors import NapariUnetError

    make_napari_viewer(show=True)
    log = W.notification_log()
    reason = NapariUnetError("cannot read /a/very/long/folder/name/with/a/scan/" + LONG
                             + ".nii.gz: the header says 3 dimensions but has 4")
    status = wrapping(Label(value=""))
    for what in ("UNet inference", "UNet training", "Learning from corrections",
                 "Saving the trained model", "Saving labels", "Saving model", "Undo"):
        report_error(what, reason, status)
        assert status.value == f"{what}: {reason}"  # the whole reason stays in sight
    toast("info", "UNet inference: cancelled", "cancelled")
    shown = [str(n.message) for n in log()]
    assert len(shown) == 8 and shown[0] == "UNet inference failed"
    for text in shown:
        note = NapariQtNotification(text, severity="error")
        note.show()
        QApplication.processEvents()
        label = note.message
        assert label.fontMetrics().horizontalAdvance(text) <= label.width(), (text, TOAST_PX)
        note.close()
    assert not fits_toast(f"UNet inference: {reason}")


def settings_states(widget):
    """Every combination of the choices that show or hide fields, set one after another
    (yields a description of each state)."""
    if widget.TAB_TITLE == "Inference":
        picker = widget.picker
        for source in picker.source.choices:
            picker.source.value = source
            kinds = picker.kind.choices if picker.is_new else (picker.kind.value,)
            for kind in kinds:
                picker.kind.value = kind
                yield f"model {source!r}, task {kind}"
    elif widget.TAB_TITLE == "Training":
        for task in widget.task.choices:
            widget.task.value = task
            for source in widget.source.choices:
                widget.source.value = source
                for blind in ((False, True) if task == "denoise" else (False,)):
                    widget.self_supervised.value = blind
                    yield f"task {task}, data from {source}, self-supervised {blind}"
    else:
        yield "idle"


@pytest.mark.slow  # 2.5 s or more: CI runs it, the quick tier does not
def test_every_setting_fits_at_1280x800_with_all_three_widgets_open(make_napari_viewer, qtbot):
    """Before a scan is open (the hints) and in each choice that shows other fields (a
    new model's task, files or a BIDS dataset to train on, denoising), every text is
    whole, the footer's action and status are in sight, and the canvas keeps its share:
    the same Qt measures, in every state."""
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1280, 800)
    widgets = [W.open_widget(viewer, name) for name in (W.INFERENCE, W.CORRECTION, W.TRAINING)]
    qtbot.waitUntil(lambda: tabbed(viewer), timeout=3000)  # napari has placed the docks
    canvas = viewer.window._qt_viewer.canvas.native
    seen = []

    def check(widget, state: str) -> None:
        qtbot.wait(60)
        seen.append((widget.TAB_TITLE, state))
        action = getattr(widget, {"Inference": "run_button", "Training": "train_button",
                                  "Correction": "learn_button"}[widget.TAB_TITLE])
        for name, w in (("action", action), ("status", widget.status)):
            problem = in_sight(native(w), widget.dock(), window)
            assert problem is None, f"{widget.TAB_TITLE}, {state}: {name}: {problem}"
        names = {ly.name for ly in viewer.layers}
        cut = cut_texts(widget, elided_ok=lambda box: any(
            box.itemText(i) in names for i in range(box.count())))
        assert cut == [], f"{widget.TAB_TITLE}, {state}: {cut}"
        assert canvas.width() >= CANVAS_SHARE * window.width(), (state, canvas.width())

    for widget in widgets:  # no scan yet: each says what to do first
        bring_to_front(qtbot, widget)
        assert in_front(viewer, widget)
        check(widget, "no scan open")
    assert widgets[0].status.value.startswith("open a scan first")
    W.add_scan(viewer, shape=(12, 40, 48), name=LONG)
    for widget in widgets:
        bring_to_front(qtbot, widget)
        assert in_front(viewer, widget)
        for state in settings_states(widget):
            check(widget, state)
    assert ("Training", "task segment, data from BIDS dataset, self-supervised False") in seen
    assert ("Training", "task denoise, data from files, self-supervised True") in seen
    assert ("Inference", f"model {NEW!r}, task denoise") in seen
