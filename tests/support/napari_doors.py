"""napari's own doors for tests: drop files on the canvas, trigger menu actions, answer
(or refuse) the dialogs napari opens, and whole napari sessions in a fresh process."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

PLUGIN = "napari-unet"
DISPLAY_NAME = "CT/MR UNet - napari-unet"  # napari.yaml display_name: menus, dialogs, docks


def drop(viewer, paths) -> None:
    """Drag ``paths`` onto the viewer and drop them, as a file manager does."""
    from qtpy.QtCore import QMimeData, QPointF, Qt, QUrl
    from qtpy.QtGui import QDragEnterEvent, QDropEvent
    from qtpy.QtWidgets import QApplication

    target = viewer.window._qt_viewer
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    point = QPointF(target.width() / 2, target.height() / 2)
    enter = QDragEnterEvent(point.toPoint(), Qt.DropAction.CopyAction, mime,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, enter)
    assert enter.isAccepted(), "the viewer refused the drag"
    event = QDropEvent(point, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, event)


def menu_action(viewer, object_name: str):
    """The QAction of the window's menu bar with this object name (an app-model id)."""

    def walk(menu):
        for action in menu.actions():
            if action.objectName() == object_name:
                return action
            if action.menu() is not None:
                found = walk(action.menu())
                if found is not None:
                    return found
        return None

    for top in viewer.window._qt_window.menuBar().actions():
        found = walk(top.menu()) if top.menu() is not None else None
        if found is not None:
            return found
    raise LookupError(f"no menu action {object_name!r}")


@dataclass
class Dialogs:
    """Modal dialogs that appeared: their titles, the readers "Choose reader" offered and
    preselected. ``choose`` names the reader to pick there, ``file_name`` what to type in
    a file dialog (with the type that contains ``file_type``); any other dialog is
    cancelled, so a test never hangs on one."""

    titles: list[str] = field(default_factory=list)
    preselected: list[str] = field(default_factory=list)
    offered: list[list[str]] = field(default_factory=list)
    choose: str | None = None
    file_name: str | None = None
    file_type: str | None = None  # a word of the file type to pick in a file dialog

    errors: list[str] = field(default_factory=list)

    def handle(self) -> None:
        from qtpy.QtWidgets import QApplication

        dialog = QApplication.activeModalWidget()
        if dialog is None:
            return
        self.titles.append(dialog.windowTitle())
        try:
            self._answer(dialog)
        except Exception as e:  # never leave a modal dialog open: the test would hang
            self.errors.append(f"{type(e).__name__}: {e}")
            dialog.reject()

    def _answer(self, dialog) -> None:
        from napari._qt.dialogs.qt_reader_dialog import QtReaderDialog
        from qtpy.QtWidgets import QDialogButtonBox, QFileDialog

        if isinstance(dialog, QtReaderDialog):
            buttons = dialog.reader_btn_group.buttons()
            self.offered.append([b.text() for b in buttons])
            checked = dialog.reader_btn_group.checkedButton()
            self.preselected.append(checked.text() if checked else "")
            wanted = [b for b in buttons if b.text() == self.choose]
            if wanted:
                wanted[0].setChecked(True)
                dialog.btn_box.button(QDialogButtonBox.StandardButton.Ok).click()
                return
        if isinstance(dialog, QFileDialog) and self.file_name:
            if self.file_type:
                dialog.selectNameFilter(next(f for f in dialog.nameFilters()
                                             if self.file_type in f))
            dialog.selectFile(self.file_name)
            buttons = dialog.findChild(QDialogButtonBox)
            buttons.button(QDialogButtonBox.StandardButton.Save).click()  # as a user does
            return
        dialog.reject()


@contextlib.contextmanager
def watch_dialogs():
    """Answer modal dialogs while the block runs (see ``Dialogs``)."""
    from qtpy.QtCore import QTimer

    seen = Dialogs()
    timer = QTimer()
    timer.timeout.connect(seen.handle)
    timer.start(50)
    try:
        yield seen
    finally:
        timer.stop()


# --- a napari session in its own process -----------------------------------------------------

_SESSION = '''
import json, sys
sys.path.insert(0, {support!r})
import napari
from napari.settings import get_settings
from napari_doors import drop, menu_action, watch_dialogs

viewer = napari.Viewer()
report = {{"steps": []}}
with watch_dialogs() as dialogs:
    for step, arg in {steps!r}:
        before = len(viewer.layers)
        dialogs.choose = arg if step == "choose" else dialogs.choose
        if step == "drop":
            drop(viewer, arg)
        elif step == "menu":
            menu_action(viewer, arg).trigger()
        elif step == "open":
            viewer.open(arg, plugin=None)
        new = list(viewer.layers)[before:]
        report["steps"].append({{
            "step": step, "dialogs": len(dialogs.titles),
            "layers": [[lyr.source.reader_plugin, list(lyr.data.shape), lyr._type_string]
                       for lyr in new]}})
    report.update(titles=dialogs.titles, offered=dialogs.offered,
                  preselected=dialogs.preselected)
report["prefs"] = dict(get_settings().plugins.extension2reader)
viewer.close()
print("SESSION" + json.dumps(report))
'''


def napari_session(config: Path, steps: list[tuple[str, object]], timeout: int = 120) -> dict:
    """Run napari in a new process with its settings in ``config`` (a user's napari, as
    started from a shell): ``steps`` are ("drop", [paths]), ("menu", action id),
    ("open", path), ("choose", reader to pick in later dialogs). Returns what happened."""
    code = _SESSION.format(support=str(Path(__file__).parent),
                           steps=[(s, [str(p) for p in a] if isinstance(a, list) else
                                   str(a) if a is not None else None) for s, a in steps])
    env = {**os.environ, "NAPARI_CONFIG": str(config)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=timeout, env=env)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("SESSION")]
    assert res.returncode == 0 and lines, res.stderr[-3000:]
    return json.loads(lines[-1][len("SESSION"):])
