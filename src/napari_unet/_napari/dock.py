"""The frame every napari-unet widget shares: a narrow column that scrolls instead of growing.

On a 1280 px screen napari's layer controls take about a quarter of the width; for the
canvas to keep 60% with our widgets docked beside it, each widget asks for about an
eighth of the window and nothing inside (a long layer name, a status line, a plot) may
widen it. So the widget is a QScrollArea (vertical scrolling only), labels sit above
their fields (full width for each field), combo boxes elide and texts wrap. Stacked
docks share the height: each asks for at most a third of the window and scrolls.
"""

from __future__ import annotations

from magicgui.widgets import ComboBox, Container, Label
from magicgui.widgets.bases import ButtonWidget
from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtWidgets import QComboBox, QFrame, QMainWindow, QScrollArea, QSizePolicy

WIDTH_FRACTION = 0.125  # of the main window
MIN_WIDTH, MAX_WIDTH = 160, 300
MIN_HEIGHT = 160


class DockWidget(QScrollArea):
    """Base of the napari-unet widgets; napari passes the viewer as ``napari_viewer``."""

    def __init__(self, napari_viewer, widgets: list):
        super().__init__()
        self.viewer = napari_viewer
        self._fields: dict[int, Container] = {}
        self.form = Container(widgets=[self._field(w) for w in widgets], labels=False)
        self.form.margins = (6, 4, 4, 4)
        self.form.native.setSizePolicy(QSizePolicy.Policy.Ignored,
                                       QSizePolicy.Policy.Preferred)
        self.form.native.layout().addStretch(1)  # spare height below, not between fields
        self.setWidget(self.form.native)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setMinimumSize(MIN_WIDTH, MIN_HEIGHT)

    def event(self, e) -> bool:
        """Notice napari taking the widget out of its dock (the dock's close button)."""
        if e.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif getattr(self, "_docked", False):
                self._docked = False
                self.closed()
        return super().event(e)

    def closed(self) -> None:
        """The dock was closed: a widget with work in flight stops it here."""

    def _field(self, widget):
        """A value widget with its label above it (buttons and texts stand alone)."""
        if isinstance(widget, ButtonWidget | Container | Label) or not widget.label:
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

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        content = self.form.native.sizeHint().height()
        window = self.window()
        if not isinstance(window, QMainWindow):  # not docked yet, or floating on its own
            return QSize(MAX_WIDTH, content)
        width = int(min(MAX_WIDTH, max(MIN_WIDTH, WIDTH_FRACTION * window.width())))
        return QSize(width, min(content, max(MIN_HEIGHT, window.height() // 3)))

    def reset_choices(self, *_) -> None:
        """Refresh the layer dropdowns (napari calls this when layers change)."""
        self.form.reset_choices()


def compact(combo: ComboBox, chars: int = 8) -> ComboBox:
    """A combo box whose width does not follow its longest item (the list shows it all)."""
    box: QComboBox = combo.native
    box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    box.setMinimumContentsLength(chars)
    return combo


def auto_choice(label: str, values, tooltip: str, auto: str = "auto") -> ComboBox:
    """A choice that reads ``auto`` (value 0) instead of a magic 0, then ``values``."""
    choices = [(auto, 0), *((str(v), v) if not isinstance(v, tuple) else v for v in values)]
    return compact(ComboBox(label=label, choices=choices, value=0, tooltip=tooltip))


def wrapping(label: Label) -> Label:
    """A label that wraps long text instead of widening the dock."""
    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
    label.native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def row(*widgets) -> Container:
    """Widgets side by side (two short buttons)."""
    box = Container(widgets=list(widgets), layout="horizontal", labels=False)
    box.margins = (0, 0, 0, 0)
    return box
