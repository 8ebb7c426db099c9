"""One job runner for the widgets: start, progress, cancel, done, failed.

A widget hands :meth:`JobRunner.start` a ``prepare()`` that reads its fields on the GUI
thread and returns the work as ``fn(job: JobContext)``; settings that cannot work raise
there (:class:`NapariUnetError`, or an OSError for a folder that cannot be made) and end
the run as FAILED before any thread starts. The work runs in a napari thread worker and
reports typed updates (:class:`Progressed`, :class:`Metrics`) through a Qt signal, so
they arrive on the GUI thread, where they feed the widget's :class:`ProgressPanel` and
napari's activity progress. Outcomes travel as values (not raised), so a Cancel never
shows up as an error with a traceback.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
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


class JobContext:
    """What the work gets in its thread: ``progress``, ``cancelled`` and ``post``."""

    def __init__(self, post: Callable[[Update], None], stop: threading.Event):
        self.post = post
        self._stop = stop
        self._last: Progressed | None = None

    def progress(self, done: int, total: int) -> None:
        update = Progressed(int(done), int(total))
        if update != self._last:  # a training loop repeats the same second many times
            self._last = update
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


def report_error(what: str, exc: BaseException) -> None:
    """A napari error notification for a failed action (a job, a save, an undo)."""
    from napari.utils.notifications import show_error

    show_error(f"{what}: {error_message(exc)}")


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
        self._activity = None  # napari's progress in the activity dock
        self._on_update: Callable[[Update], None] | None = None
        self._updated.connect(self._deliver)

    @property
    def running(self) -> bool:
        return self.state is JobState.RUNNING

    def start(self, prepare: Callable[[], JobFn], on_done: Callable[[Any], None], *,
              unit: str = "", on_update: Callable[[Update], None] | None = None,
              on_cancelled: Callable[[Cancelled | None], None] | None = None):
        """Prepare on the GUI thread, run in a thread worker; returns the worker or None.

        ``unit`` names what the job counts (slices, s) in the progress text;
        ``on_cancelled`` gets the :class:`Cancelled` raised (it may carry ``partial``).
        """
        from napari.qt.threading import create_worker

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
        self.error, self._on_update = None, on_update
        self.panel.begin(unit)
        self._set_state(JobState.RUNNING)
        context = JobContext(self._updated.emit, self._stop)

        def run():
            try:
                return True, fn(context)
            except BaseException as exc:  # noqa: BLE001 - reported on the GUI thread
                return False, exc

        worker = create_worker(run, _ignore_errors=True)
        worker.returned.connect(lambda out: self._outcome(out, on_done, on_cancelled))
        worker.finished.connect(self._forget_worker)
        self.worker = worker
        worker.start()
        return worker

    def cancel(self, *_) -> None:
        """Ask the running job to stop at its next ``cancelled()`` check."""
        if self.running:
            self._stop.set()
            self.panel.stopping()

    # -- on the GUI thread ------------------------------------------------------------

    def _deliver(self, update: Update) -> None:
        if not self.running:
            return
        if isinstance(update, Progressed):
            self.panel.show(update.done, update.total)
            self._advance_activity(update)
        if self._on_update is not None:
            self._on_update(update)

    def _advance_activity(self, update: Progressed) -> None:
        from napari.utils import progress

        if self._activity is None:
            self._activity = progress(total=update.total, desc=self.desc)
        bar = self._activity
        if bar.total != update.total:
            bar.total = update.total
        if update.done != bar.n:
            bar.update(update.done - bar.n)  # update() emits what the activity dock draws

    def _outcome(self, out: tuple[bool, Any], on_done, on_cancelled) -> None:
        ok, value = out
        if not ok and not isinstance(value, Cancelled) and not self._stop.is_set():
            self._end(JobState.FAILED, value)
            return
        if not ok or self._stop.is_set():
            exc = value if isinstance(value, Cancelled) else None
            if on_cancelled is not None:
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
        if self._activity is not None:
            self._activity.close()
            self._activity = None
        self.panel.end(state.value)
        self._set_state(state)
        if state is JobState.FAILED:
            report_error(self.desc, exc)
        elif state is JobState.CANCELLED:
            show_info(f"{self.desc}: cancelled")

    def _set_state(self, state: JobState) -> None:
        self.state = state
        self.state_changed.emit(state)

    def _forget_worker(self) -> None:
        self.worker = None
