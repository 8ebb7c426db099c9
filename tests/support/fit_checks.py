"""Is a widget in sight, and does its text fit? Measured through Qt geometry, not by eye.

A widget is in sight when it is shown, its rectangle mapped into the main window lies
inside its dock and the window, and nothing clips or covers it (``visibleRegion`` is the
whole widget). Text fits when its advance in the widget's font is no wider than the room
the widget gives it: labels, buttons, check boxes, tab titles, every choice of a combo
box, and wrapped notes whose text is no taller than the note.
"""

from __future__ import annotations

from qtpy.QtCore import QPoint, QRect
from qtpy.QtWidgets import (
    QAbstractButton,
    QCheckBox,
    QComboBox,
    QLabel,
    QPushButton,
    QTabBar,
    QTextEdit,
    QWidget,
)

from napari_unet._napari.fitting import text_room

BUTTON_PADDING = 12  # px a push button keeps around its text (frame and margins)
CHECK_ROOM = 24  # px of a check box's box and gap before its text


def rect_in(widget: QWidget, ancestor: QWidget) -> QRect:
    return QRect(widget.mapTo(ancestor, QPoint(0, 0)), widget.size())


def in_sight(widget: QWidget, dock: QWidget, window: QWidget) -> str | None:
    """None if ``widget`` is wholly in sight inside ``dock``, else what is wrong."""
    if not widget.isVisible():
        return "not shown"
    where = rect_in(widget, window)
    if not window.rect().contains(where):
        return f"outside the window: {where}"
    if not rect_in(dock, window).contains(where):
        return f"outside its dock: {where} not in {rect_in(dock, window)}"
    seen = widget.visibleRegion().boundingRect()
    if seen != widget.rect():
        return f"clipped or covered: {seen} of {widget.rect()}"
    return None


def _advance(widget: QWidget, text: str) -> int:
    return widget.fontMetrics().horizontalAdvance(text.replace("&", ""))


def cut_texts(root: QWidget, elided_ok=lambda box: False) -> list[str]:
    """Every visible text under ``root`` that does not fit its widget.

    ``elided_ok(box)``: combo boxes whose choices are the user's names (layer names),
    shown elided in the middle by design; their own choices are not checked.
    """
    problems = []
    for w in root.findChildren(QWidget):
        if not w.isVisible():
            continue
        if isinstance(w, QLabel) and w.text():
            room = w.contentsRect().width()
            if w.wordWrap():
                if w.height() < w.heightForWidth(room):
                    problems.append(f"label {w.text()!r}: {w.height()} px for "
                                    f"{w.heightForWidth(room)} px of text")
            elif _advance(w, w.text()) > room:
                problems.append(f"label {w.text()!r}: {_advance(w, w.text())} px in {room}")
        elif isinstance(w, QTextEdit):
            doc, scrolls = w.document(), w.verticalScrollBar().isVisible()  # a capped note
            if w.toPlainText() and (doc.size().width() > w.viewport().width() + 1
                                    or (doc.size().height() > w.viewport().height() + 1
                                        and not scrolls)):
                problems.append(f"note {w.toPlainText()[:40]!r}...: {doc.size()} in "
                                f"{w.viewport().size()}")
        elif isinstance(w, QAbstractButton) and w.text():
            pad = CHECK_ROOM if isinstance(w, QCheckBox) else BUTTON_PADDING
            if isinstance(w, QCheckBox | QPushButton) and _advance(w, w.text()) + pad > w.width():
                problems.append(f"button {w.text()!r}: {_advance(w, w.text())} px + {pad} "
                                f"in {w.width()}")
        elif isinstance(w, QComboBox):
            if elided_ok(w):
                if not w.property("elides"):
                    problems.append(f"combo with names {w.currentText()!r} does not elide")
                continue
            room = text_room(w)
            for i in range(w.count()):
                if _advance(w, w.itemText(i)) > room:
                    problems.append(f"choice {w.itemText(i)!r}: "
                                    f"{_advance(w, w.itemText(i))} px in {room}")
    return problems


def cut_tabs(tabs: QTabBar) -> list[str]:
    """Tab titles that are cut, or tabs that need scrolling to be seen."""
    problems = []
    for i in range(tabs.count()):
        rect, text = tabs.tabRect(i), tabs.tabText(i)
        if rect.right() >= tabs.width() or rect.left() < 0:
            problems.append(f"tab {text!r} at {rect} is outside the bar ({tabs.width()} px)")
        if _advance(tabs, text) + 8 > rect.width():
            problems.append(f"tab {text!r}: {_advance(tabs, text)} px in {rect.width()}")
    return problems
