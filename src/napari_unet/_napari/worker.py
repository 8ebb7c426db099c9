"""One job runner for the widgets: start, progress, cancel, done, failed.

A widget hands :meth:`JobRunner.start` a ``prepare()`` that reads its fields on the GUI
thread and returns the work as ``fn(job: JobContext)``; settings that cannot work raise
there (:class:`NapariUnetError`, or an OSError for a folder that cannot be made) and end
the run as FAILED before any thread starts. The work runs in a napari thread worker and
reports typed updates (:class:`Progressed`, :class:`Metrics`) through a Qt signal, so
they arrive on the GUI thread, where they feed the widget's :class:`ProgressPanel`.
Outcomes travel as values (not raised), so a Cancel never shows up as an error with a
traceback.

Why not napari's activity progress too: while one is open, napari's status bar animates
a busy indicator, repainting the whole window about 30 times a second, and PyQt repaints
holding the GIL that the job needs between torch calls. With software OpenGL (no GPU,
remote desktops, Xvfb) a three-plane run on the sample brain took 6.9 s in napari with
it and 5.0 s without (3.4 s outside napari, in a thread); for the same reason progress is
posted at most five times a second and the widget's bar is never Qt's busy bar.

A job belongs to its widget and its input layers, the same rule for every widget
(:meth:`JobRunner.belong_to`): closing the widget's dock, or deleting a layer the job
reads, cancels it, and a cancelled job adds nothing to the viewer, even if its work had
already finished when the user closed or deleted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from qtpy.QtCore import QObject, Signal

from ..errors import Cancelled, NapariUnetError
from .progress_panel import ProgressPanel


class JobState(Enum):
    """What a widget's job is doing; the widgets enable their buttons from it."""

    IDLE = "idle"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass(frozen=True)
class Progressed:
    """``done`` of ``total`` steps (slices, iterations or seconds, as the job counts)."""

    done: int
    total: int


@dataclass(frozen=True)
class Metrics:
    """One training log step (loss, validation figures)."""

    entry: dict


Update = Progressed | Metrics


PROGRESS_EVERY_S = 0.2  # five progress reports a second are enough for a person


class JobContext:
    """What the work gets in its thread: ``progress``, ``cancelled`` and ``post``."""

    def __init__(self, post: Callable[[Update], None], stop: threading.Event):
        self.post = post
        self._stop = stop
        self._last: Progressed | None = None
        self._posted = -PROGRESS_EVERY_S

    def progress(self, done: int, total: int) -> None:
        """Posted at most every PROGRESS_EVERY_S, and the last: on two cores, each report
        the GUI thread redraws (its bar and text) is CPU, and GIL, taken from the job."""
        update = Progressed(int(done), int(total))
        now = time.monotonic()
        if update == self._last or (now - self._posted < PROGRESS_EVERY_S
                                    and update.done < update.total):
            return  # a training loop repeats the same second many times
        self._last, self._posted = update, now
        self.post(update)

    def cancelled(self) -> bool:
        return self._stop.is_set()


JobFn = Callable[[JobContext], Any]


def error_message(exc: BaseException) -> str:
    """What users read: the core's own message, what the OS refused in plain words (a full
    disk, permissions), or the exception type for anything else."""
    from ..os_errors import is_known, plain

    if isinstance(exc, NapariUnetError | ValueError):
        return str(exc)
    if is_known(exc):
        return plain(exc, advice=True)
    return f"{type(exc).__name__}: {exc}"


TOAST_PX = 270  # text width of one line of a napari notification (400 px, less icons)


def fits_toast(text: str) -> bool:
    """Whether ``text`` fits on the one line a napari notification shows."""
    from qtpy.QtGui import QFontMetrics
    from qtpy.QtWidgets import QApplication

    if QApplication.instance() is None:
        return len(text) <= 40
    return QFontMetrics(QApplication.font()).horizontalAdvance(text) <= TOAST_PX


def toast(severity: str, text: str, short: str) -> str:
    """A napari notification of ``text`` if it fits its one line, else of ``short`` (the
    widget's status line holds the whole text). Returns what was shown."""
    from napari.utils import notifications as N

    shown = text if fits_toast(text) else short
    {"error": N.show_error, "warning": N.show_warning, "info": N.show_info}[severity](shown)
    return shown


def report_error(what: str, exc: BaseException, status=None) -> None:
    """A failed action (a job, a save, an undo): the whole reason in the widget's
    ``status`` (a Note), a notification that fits its line."""
    message = f"{what}: {error_message(exc)}"
    if status is not None:
        status.value = message
    toast("error", message, f"{what} failed")


_IN_FLIGHT: set = set()  # runners with a job running: alive until it ends, widget or not


class _OnClose(QObject):
    """Calls ``then()`` when ``window`` is about to close."""

    def __init__(self, window, then: Callable[[], None]):
        super().__init__(window)
        self.then = then
        window.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        from qtpy.QtCore import QEvent

        if event.type() == QEvent.Type.Close:
            self.then()
        return False


class JobRunner(QObject):
    """Runs one job at a time for a widget; ``state_changed`` drives its buttons."""

    state_changed = Signal(object)  # JobState
    _updated = Signal(object)  # Update, emitted in the worker thread

    def __init__(self, desc: str):
        super().__init__()
        self.desc = desc
        self.state = JobState.IDLE
        self.error: BaseException | None = None
        self.worker = None
        self.panel = ProgressPanel()
        self.panel.cancel_button.changed.connect(self.cancel)
        self._stop = threading.Event()
        self._on_update: Callable[[Update], None] | None = None
        self._queue: list[Update] = []
        self._delivering = False
        self._updated.connect(self._deliver)
        self.inputs: tuple = ()  # the layers the running job reads
        self.cancel_reason: str | None = None  # why it was cancelled, if not by Cancel
        self._quiet = self._gone = False
        self._layers = None  # the viewer's layer list, once the runner belongs to a widget

    # -- whose job it is --------------------------------------------------------------

    def belong_to(self, widget, viewer) -> None:
        """Tie jobs to ``widget`` (a DockWidget) and to the input layers in ``viewer``:
        the job stops when the widget's dock closes or an input layer is deleted."""
        self._layers = viewer.layers
        self._layers.events.removed.connect(self._on_layer_removed)
        widget.closing.connect(self._widget_closed)
        widget.destroyed.connect(self._widget_destroyed)  # the whole window was closed
        window = getattr(getattr(viewer, "window", None), "_qt_window", None)
        window = getattr(window, "__wrapped__", window)  # napari hands plugins a proxy
        if isinstance(window, QObject):  # the window's close, as it happens: neither the layers'
            # removal nor the widget's destruction is sure to come before the job ends
            self._on_close = _OnClose(window, self._widget_closed)

    def _widget_destroyed(self, *_) -> None:
        self._gone = True  # its progress panel went with it
        self._widget_closed()

    def _widget_closed(self, *_) -> None:
        self.cancel(reason="the widget was closed")
        if self._layers is not None:
            self._layers.events.removed.disconnect(self._on_layer_removed)
            self._layers = None

    def _on_layer_removed(self, event) -> None:
        layer = getattr(event, "value", None)
        if self.running and any(layer is x for x in self.inputs):
            # no notification: the user deleted it, the status says so, and a toast
            # rising over the canvas while it redraws without the layer has crashed
            # Mesa's OpenGL
            self.cancel(reason=f"{layer.name!r} was deleted", quiet=True)

    @property
    def running(self) -> bool:
        return self.state is JobState.RUNNING

    @property
    def stop_asked(self) -> bool:
        """Whether the running (or last) job was asked to stop."""
        return self._stop.is_set()

    def start(self, prepare: Callable[[], JobFn], on_done: Callable[[Any], None], *,
              unit: str = "", on_update: Callable[[Update], None] | None = None,
              on_cancelled: Callable[[Cancelled | None], None] | None = None,
              inputs: Callable[[], Any] | None = None,
              after: Callable[[], Sequence[float | None]] | None = None,
              stages: Sequence[str] = (),
              budgets: Callable[[], Sequence[float | None]] | None = None):
        """Prepare on the GUI thread, run in a thread worker; returns the worker or None.

        ``unit`` names what the job counts (slices, s) in the progress text;
        ``on_cancelled`` gets the :class:`Cancelled` raised (it may carry ``partial``);
        ``inputs()`` gives the layers the job reads (read after ``prepare``): deleting
        one cancels the job. ``after()``, ``budgets()`` and ``stages`` describe the job's
        stages for its time left (:class:`~.progress_panel.TimeLeft`).
        """
        from napari.qt.threading import create_worker

        from ..inference.warmup import stop_warming

        if self.running:
            return None
        try:
            fn = prepare()
        except (NapariUnetError, OSError, ValueError) as exc:  # nothing ran
            self.error = exc
            self._set_state(JobState.FAILED)
            report_error(self.desc, exc)
            return None
        self._stop.clear()
        self._queue.clear()
        self.error, self._on_update, self.cancel_reason = None, on_update, None
        self._quiet = False
        self.inputs = tuple(x for x in (inputs() if inputs else ()) if x is not None)
        self.panel.begin(unit, after() if after else (0.0,), stages,
                         budgets() if budgets else ())
        self._set_state(JobState.RUNNING)
        context = JobContext(self._updated.emit, self._stop)

        def run():
            try:
                stop_warming()  # the job has the CPU (and torch's thread count) to itself
                return True, fn(context)
            except BaseException as exc:  # noqa: BLE001 - reported on the GUI thread
                return False, exc

        worker = create_worker(run, _ignore_errors=True)
        worker.returned.connect(lambda out: self._outcome(out, on_done, on_cancelled))
        worker.finished.connect(self._forget_worker)
        self.worker = worker
        _IN_FLIGHT.add(self)
        worker.start()
        return worker

    def cancel(self, *_, reason: str | None = None, quiet: bool = False) -> None:
        """Ask the running job to stop at its next ``cancelled()`` check (``quiet``: no
        notification when it has)."""
        if self.running and not self._stop.is_set():
            self._stop.set()
            self.cancel_reason, self._quiet = reason, quiet
            if not self._gone:
                self.panel.stopping()

    # -- on the GUI thread ------------------------------------------------------------

    def _deliver(self, update: Update) -> None:
        """Updates in order, one at a time. A handler that processes Qt events while it
        redraws (a plot, a dialog) delivers the next updates inside this call: they wait
        in the queue (all but the latest progress skipped) instead of recursing."""
        self._queue.append(update)
        if self._delivering:
            return
        self._delivering = True
        try:
            while self._queue:
                update = self._queue.pop(0)
                if isinstance(update, Progressed) and any(
                        isinstance(u, Progressed) for u in self._queue):
                    continue  # a newer one is waiting
                self._deliver_one(update)
        finally:
            self._delivering = False

    def _deliver_one(self, update: Update) -> None:
        if not self.running or self._stop.is_set() or self._gone:  # stale news
            return
        if isinstance(update, Progressed):
            self.panel.show(update.done, update.total)
        if self._on_update is not None:
            self._on_update(update)

    def _outcome(self, out: tuple[bool, Any], on_done, on_cancelled) -> None:
        ok, value = out
        if not ok and not isinstance(value, Cancelled) and not self._stop.is_set():
            self._end(JobState.FAILED, value)
            return
        if not ok or self._stop.is_set():
            exc = value if isinstance(value, Cancelled) else None
            if on_cancelled is not None and not self._gone:
                on_cancelled(exc)
            self._end(JobState.CANCELLED, exc)
            return
        try:
            on_done(value)
        except Exception as exc:  # noqa: BLE001 - e.g. adding a layer failed
            self._end(JobState.FAILED, exc)
            return
        self._end(JobState.DONE)

    def _end(self, state: JobState, exc: BaseException | None = None) -> None:
        from napari.utils.notifications import show_info

        self.error = exc
        self.inputs = ()
        if not self._gone:
            self.panel.end(state.value)
        self._set_state(state)
        if state is JobState.FAILED:
            report_error(self.desc, exc)
        elif state is JobState.CANCELLED and not self._quiet:
            show_info(f"{self.desc}: cancelled")

    @property
    def cancelled_because(self) -> str:
        """' (reason)' after a job that was cancelled by a close or a deletion, else ''."""
        return f" ({self.cancel_reason})" if self.cancel_reason else ""

    def _set_state(self, state: JobState) -> None:
        self.state = state
        self.state_changed.emit(state)

    def _forget_worker(self) -> None:
        self.worker = None
        _IN_FLIGHT.discard(self)
