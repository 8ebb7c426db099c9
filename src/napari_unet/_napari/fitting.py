"""Widgets that fit a narrow dock column: text that wraps anywhere, choices that never cut.

A QLabel wraps only at spaces, so a file path or a long layer name in a status line is
cut at the dock's edge; :class:`Note` is read-only text that wraps inside words where it
must and is always exactly as tall as its text (it never scrolls, and a copied path has
no invisible break characters in it). Combo boxes keep to the column's width and, when a
choice is longer than the box (a user's layer name), show it elided in the middle
("sub-0042_…_T1w") instead of cut; the list that drops down shows every choice whole.
"""

from __future__ import annotations

import math

from magicgui.widgets import ComboBox, Container, FileEdit, Label, TextEdit
from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtGui import QTextOption
from qtpy.QtWidgets import (
    QComboBox,
    QFrame,
    QSizePolicy,
    QStyle,
    QStyleOptionComboBox,
    QStylePainter,
    QTextEdit,
)

POPUP_MAX_WIDTH = 600  # px: a dropped-down list may reach over the canvas, not past it
FOOTER_LINES = 12  # a status or proposal taller than this scrolls inside the footer


class Note(TextEdit):
    """Read-only wrapped text as tall as its content (``value`` is the plain text), up to
    ``max_lines`` lines, past which it scrolls (a footer must never outgrow its dock)."""

    def __init__(self, value: str = "", max_lines: int | None = None, **kwargs):
        super().__init__(value="", **kwargs)
        self.max_lines = max_lines
        box: QTextEdit = self.native
        box.setReadOnly(True)
        box.setFrameShape(QFrame.Shape.NoFrame)
        box.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        box.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff
                                       if max_lines is None else
                                       Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        box.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        box.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        box.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                    | Qt.TextInteractionFlag.TextSelectableByKeyboard)
        box.setStyleSheet("QTextEdit { background: transparent; border: none; }")
        box.document().setDocumentMargin(0)
        box.document().documentLayout().documentSizeChanged.connect(self._fit)
        box.textChanged.connect(self._fit)
        self._widget._setter_name = "setPlainText"  # never read as rich text
        self.value = value
        self._fit()

    def _fit(self, *_) -> None:
        box: QTextEdit = self.native
        doc = box.document()
        text_height = doc.size().height() if doc.toPlainText() else 0
        if self.max_lines is not None:
            text_height = min(text_height, self.max_lines * box.fontMetrics().lineSpacing())
        box.setFixedHeight(math.ceil(text_height) + 2 * box.frameWidth())

    def fits(self) -> bool:
        """Whether every line of the text is inside the widget (nothing cut or hidden;
        past ``max_lines``, the rest is a scroll away)."""
        box: QTextEdit = self.native
        doc = box.document()
        scrolls = box.verticalScrollBar().isVisible()
        return (doc.size().width() <= box.viewport().width() + 1
                and (scrolls or doc.size().height() <= box.viewport().height() + 1))


def wrapping(label: Label, max_lines: int | None = None) -> Note:
    """The :class:`Note` for what was a plain label (its text, tooltip and visibility)."""
    note = Note(value=str(label.value or ""), max_lines=max_lines, tooltip=label.tooltip)
    native = label.native
    if native.testAttribute(Qt.WidgetAttribute.WA_WState_ExplicitShowHide) and \
            native.isHidden():
        note.visible = False
    return note


class _ElidedText(QObject):
    """Paints a combo box's current text elided in the middle when it is too long."""

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() != QEvent.Type.Paint or not isinstance(obj, QComboBox):
            return False
        option = QStyleOptionComboBox()
        obj.initStyleOption(option)
        field = obj.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                           QStyle.SubControl.SC_ComboBoxEditField, obj)
        option.currentText = obj.fontMetrics().elidedText(
            option.currentText, Qt.TextElideMode.ElideMiddle, field.width())
        painter = QStylePainter(obj)
        painter.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, option)
        painter.drawControl(QStyle.ControlElement.CE_ComboBoxLabel, option)
        painter.end()
        return True


_ELIDE = _ElidedText()


def text_room(box: QComboBox) -> int:
    """Width in px that a combo box has for its text (without frame and arrow)."""
    option = QStyleOptionComboBox()
    box.initStyleOption(option)
    return box.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                      QStyle.SubControl.SC_ComboBoxEditField, box).width()


def compact(combo: ComboBox, chars: int = 8) -> ComboBox:
    """A combo box whose width does not follow its longest item: a long current choice
    shows elided in the middle, and the list that drops down shows every choice whole."""
    box: QComboBox = combo.native
    box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    box.setMinimumContentsLength(chars)
    box.installEventFilter(_ELIDE)
    box.setProperty("elides", True)
    box.view().setTextElideMode(Qt.TextElideMode.ElideMiddle)

    def widen_popup(*_):
        widest = max((box.fontMetrics().horizontalAdvance(box.itemText(i))
                      for i in range(box.count())), default=0)
        box.view().setMinimumWidth(min(POPUP_MAX_WIDTH, widest + 24))

    box.model().rowsInserted.connect(widen_popup)
    box.model().modelReset.connect(widen_popup)
    widen_popup()
    return combo


def auto_choice(label: str, values, tooltip: str, auto: str = "auto") -> ComboBox:
    """A choice that reads ``auto`` (value 0) instead of a magic 0, then ``values``."""
    choices = [(auto, 0), *((str(v), v) if not isinstance(v, tuple) else v for v in values)]
    return compact(ComboBox(label=label, choices=choices, value=0, tooltip=tooltip))


def file_field(edit: FileEdit) -> FileEdit:
    """A file field that leaves its path the room: a narrow '…' button (as file dialogs'
    browse buttons), the whole path in the field's tooltip."""
    edit.choose_btn.text = "…"
    folder = edit.mode.value == "d"
    edit.choose_btn.tooltip = "choose a folder" if folder else "choose a file"
    edit.choose_btn.native.setFixedWidth(edit.choose_btn.native.fontMetrics()
                                         .horizontalAdvance("…") + 18)

    def show_path(*_):
        edit.line_edit.tooltip = str(edit.line_edit.value)

    edit.line_edit.changed.connect(show_path)
    show_path()
    return edit


def row(*widgets) -> Container:
    """Widgets side by side (two short buttons)."""
    box = Container(widgets=list(widgets), layout="horizontal", labels=False)
    box.margins = (0, 0, 0, 0)
    return box
