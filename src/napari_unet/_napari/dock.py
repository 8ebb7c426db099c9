"""The frame every napari-unet widget shares: settings that scroll above a fixed footer.

On a 1280 x 800 screen napari's layer controls take a quarter of the width; for the
canvas to keep 55% with our widgets beside it, they share one column of about a sixth
of the window: the widgets open as tabs of one dock area (short tab titles, the newest in
front) instead of stacked docks a few lines tall each. Inside a widget the settings
scroll, and the footer does not: the primary action, its progress, the status line
(and the correction loop's proposal with Accept / Discard) stay in sight whatever the
height. Labels sit above their fields, texts wrap (:mod:`.fitting`), and nothing inside
may widen the column.
"""

from __future__ import annotations

from magicgui.widgets import Container, Label
from magicgui.widgets.bases import ButtonWidget
from qtpy.QtCore import QEvent, QSize, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QDockWidget,
    QFrame,
    QMainWindow,
    QScrollArea,
    QSizePolicy,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from .fitting import Note, auto_choice, compact, row, wrapping  # noqa: F401 (widgets' names)

WIDTH_FRACTION = 0.175  # of the main window: 224 px of 1280
MIN_WIDTH, MAX_WIDTH = 200, 320
MIN_SETTINGS_HEIGHT = 60  # a few fields of settings stay in sight above the footer


class DockWidget(QWidget):
    """Base of the napari-unet widgets; napari passes the viewer as ``napari_viewer``.

    ``widgets`` are the settings (they scroll), ``footer`` what must stay in sight.
    A widget's :class:`~.worker.JobRunner` (``self.runner``) is tied to it here: closing
    the dock cancels the job (see :meth:`JobRunner.belong_to`).
    """

    TAB_TITLE = "UNet"  # the short name on the widget's tab
    TAB_ORDER = 9  # tabs in the order of the work: inference, correction, training
    closing = Signal()  # the dock was closed: work in flight stops

    def __init__(self, napari_viewer, widgets: list, footer: list = ()):
        super().__init__()
        self.viewer = napari_viewer
        self._fields: dict[int, Container] = {}
        self.form = self._column([self._field(w) for w in widgets], (6, 4, 4, 4))
        self.form.native.layout().addStretch(1)  # spare height below, not between fields
        self.scroll = QScrollArea()
        self.scroll.setWidget(self.form.native)
        self.scroll.setWidgetResizable(True)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setMinimumHeight(MIN_SETTINGS_HEIGHT)
        self.footer = self._column([self._field(w) for w in footer], (6, 4, 4, 6))
        edge = QFrame()  # a line between what scrolls and what stays
        edge.setFrameShape(QFrame.Shape.HLine)
        edge.setFrameShadow(QFrame.Shadow.Sunken)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.scroll, 1)
        layout.addWidget(edge)
        layout.addWidget(self.footer.native, 0)
        edge.setVisible(bool(footer))
        self.setMinimumWidth(MIN_WIDTH)
        runner = getattr(self, "runner", None)
        if runner is not None:
            runner.belong_to(self, napari_viewer)

    @staticmethod
    def _column(widgets: list, margins) -> Container:
        column = Container(widgets=widgets, labels=False)
        column.margins = margins
        column.native.setSizePolicy(QSizePolicy.Policy.Ignored,
                                    QSizePolicy.Policy.Preferred)
        return column

    def viewport(self) -> QWidget:
        """The part of the settings that is in sight (the scroll area's viewport)."""
        return self.scroll.viewport()

    # -- docking --------------------------------------------------------------------------

    def event(self, e) -> bool:
        """Notice napari docking the widget, or taking it out (the dock's close button)."""
        if e.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
                QTimer.singleShot(0, self._arrange)  # once napari has placed the dock
            elif getattr(self, "_docked", False):
                self._docked = False
                self.closing.emit()
                self.closed()
        return super().event(e)

    def closed(self) -> None:
        """The dock was closed: a widget lets go of what it follows here."""

    def dock(self) -> QDockWidget | None:
        parent = self.parent()
        return parent if isinstance(parent, QDockWidget) else None

    def _arrange(self) -> None:
        """A short tab title, in front of the napari-unet widgets already docked, at a
        width that leaves the canvas its share."""
        dock = self.dock()
        main = None if dock is None else dock.parentWidget()
        if not isinstance(main, QMainWindow) or dock.isFloating():
            return
        name_in_menus = dock.toggleViewAction().text()
        dock.setWindowTitle(self.TAB_TITLE)
        dock.toggleViewAction().setText(name_in_menus)  # the Window menu keeps its name
        title = getattr(dock.titleBarWidget(), "title", None)
        if title is not None:
            title.setText(self.TAB_TITLE)
            title.setToolTip(name_in_menus)
        area = main.dockWidgetArea(dock)
        ours = [d for d in main.findChildren(QDockWidget)
                if isinstance(d.widget(), DockWidget) and not d.isFloating()
                and (d is dock or not d.isHidden()) and main.dockWidgetArea(d) == area]
        ours.sort(key=lambda d: d.widget().TAB_ORDER)
        if len(ours) > 1:  # one tab group, in the order of the work
            main.setTabPosition(area, QTabWidget.TabPosition.North)
            for before, after in zip(ours, ours[1:], strict=False):
                main.tabifyDockWidget(before, after)  # each goes after the one before
        dock.show()
        dock.raise_()
        main.resizeDocks([dock], [self.sizeHint().width()], Qt.Orientation.Horizontal)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        window = self.window()
        height = self.form.native.sizeHint().height() + self.footer.native.sizeHint().height()
        if not isinstance(window, QMainWindow):  # not docked yet, or floating on its own
            return QSize(MAX_WIDTH, height)
        width = int(min(MAX_WIDTH, max(MIN_WIDTH, WIDTH_FRACTION * window.width())))
        return QSize(width, min(height, window.height()))

    # -- fields ---------------------------------------------------------------------------

    def _field(self, widget):
        """A value widget with its label above it (buttons and texts stand alone)."""
        if isinstance(widget, ButtonWidget | Container | Label | Note) or not widget.label:
            return widget
        caption = Label(value=widget.label, tooltip=widget.tooltip)
        field = Container(widgets=[caption, widget], labels=False)
        field.margins = (0, 2, 0, 0)
        field.native.layout().setSpacing(1)
        self._fields[id(widget)] = field
        return field

    def set_shown(self, widget, shown: bool) -> None:
        """Show or hide a field with its label (what magicgui's ``visible`` does alone)."""
        self._fields.get(id(widget), widget).visible = shown

    def is_shown(self, widget) -> bool:
        """Whether the field would be visible once the dock is shown."""
        target = self._fields.get(id(widget), widget)
        return not target.native.isHidden() and not widget.native.isHidden()

    def reset_choices(self, *_) -> None:
        """Refresh the layer dropdowns (napari calls this when layers change)."""
        self.form.reset_choices()
        self.footer.reset_choices()
