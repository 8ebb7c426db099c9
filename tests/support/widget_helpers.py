"""Small real inputs for the napari widget tests, and napari's own doors to the widgets.

Widgets are opened the way napari opens them (the plugin manager, the menus), with the
viewer injected by napari; buttons are pressed with a real mouse click.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_unet.model.checkpoint import Model
from napari_unet.model.tasks import make_task

SCALE = (2.0, 0.8, 0.9)
TRANSLATE = (-30.0, 12.5, 4.0)
PLUGIN = "napari-unet"
DISPLAY_NAME = "CT/MR UNet - napari-unet"  # menus and dock titles show it
INFERENCE, CORRECTION, TRAINING = "UNet inference", "UNet correction loop", "UNet training"


def phantom(shape=(8, 40, 48), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy scan with a bright block (class 1) and a dim disc (class 2)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    labels = np.zeros(shape, np.uint8)
    labels[:, 8:24, 10:30] = 1
    labels[((y - 28) ** 2 + (x - 36) ** 2) < 36] = 2
    image = (np.array([10.0, 100.0, 50.0])[labels] + rng.normal(0, 5, shape)).astype(np.float32)
    return image, labels


def tiny_model_file(folder: Path, kind: str = "segment", n_classes: int | None = 3,
                    in_channels: int = 1, name: str = "tiny",
                    pixel_spacing: tuple[float, float] | None = None,
                    slice_context: int = 0, default_planes: str = "one") -> Path:
    """An untrained base-4 model saved as a real model file (the same weights every
    time: what a test sees does not depend on the draw)."""
    import torch

    torch.manual_seed(0)
    task = make_task(kind, in_channels=in_channels,
                     n_classes=n_classes if kind == "segment" else None,
                     class_names=["background", "block", "disc"] if n_classes == 3 else None)
    model = Model.new(task, base=4, name=name, patch_size=(32, 32), pixel_spacing=pixel_spacing,
                      slice_context=slice_context, default_planes=default_planes)
    return model.save(Path(folder) / f"{name}.safetensors")


def add_scan(viewer, shape=(8, 40, 48), name: str = "scan"):
    image, _ = phantom(shape)
    return viewer.add_image(image, name=name, scale=SCALE, translate=TRANSLATE)


def errors_shown(records) -> list[str]:
    """Messages of error notifications in napari's notification records."""
    return [str(n.message) for n in records if str(n.severity).lower().endswith("error")]


def warnings_shown(records) -> list[str]:
    return [str(n.message) for n in records if str(n.severity).lower().endswith("warning")]


# -- napari's doors ---------------------------------------------------------------------------


def open_widget(viewer, name: str):
    """The widget as *Plugins > napari-unet > name* opens it (napari injects the viewer)."""
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def menu_action(viewer, *path: str):
    """The QAction at a menu path of the main window, e.g. ('Layers', 'Segment', 'UNet...')."""
    menus = [a for a in viewer.window._qt_window.menuBar().actions()]
    for depth, title in enumerate(path):
        for action in menus:
            text = action.text().replace("&", "")
            if text == title or (depth == len(path) - 1 and text.startswith(title)):
                break
        else:
            raise LookupError(f"no menu item {title!r} under {path[:depth]}: "
                              f"{[a.text() for a in menus]}")
        if depth == len(path) - 1:
            return action
        menu = action.menu()
        menu.aboutToShow.emit()  # napari fills app-model menus when they open
        menus = menu.actions()
    raise LookupError(path)


def docked(viewer, name: str):
    """The widget napari docked under ``name`` (as the Window menu lists it)."""
    return viewer.window.dock_widgets[f"{name} ({DISPLAY_NAME})"]


def close_dock(qtbot, viewer, widget) -> None:
    """Click the close button on the title bar of the dock that holds ``widget``."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QDockWidget

    (dock,) = [d for d in viewer.window._qt_window.findChildren(QDockWidget)
               if d.widget() is widget]
    qtbot.mouseClick(dock.title.close_button, Qt.MouseButton.LeftButton)


def click(qtbot, button) -> None:
    """A real left click on a magicgui PushButton/CheckBox."""
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtWidgets import QCheckBox

    assert button.enabled, f"{button.text!r} is disabled"
    native = button.native
    # a check box takes clicks on its box and text, not on the empty space beside them
    at = QPoint(6, native.height() // 2) if isinstance(native, QCheckBox) else QPoint()
    qtbot.mouseClick(native, Qt.MouseButton.LeftButton, pos=at)


def wait_until_idle(qtbot, widget, timeout: int = 30000):
    """Wait for the widget's job to end; returns its final JobState."""
    from napari_unet._napari.worker import JobState

    qtbot.waitUntil(lambda: widget.runner.state is not JobState.RUNNING, timeout=timeout)
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=5000)
    return widget.runner.state


def use_model_file(widget, path) -> None:
    from napari_unet._napari.model_picker import FILE

    widget.picker.source.value = FILE
    widget.picker.file.value = path


def notification_log():
    """A callable giving the napari notifications shown since this call."""
    from napari.utils.notifications import notification_manager

    start = len(notification_manager.records)
    return lambda: notification_manager.records[start:]


@pytest.fixture(autouse=True)
def home_in_tmp(tmp_path, monkeypatch):
    """Default save folders (~/napari-unet/...) land in the test's folder (Path.home())."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    """One torch thread: on a shared 2-core machine two threads spin against each other
    (a fine-tuning step measured 25x slower), and these tests are tiny anyway."""
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inference reads it per run
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
