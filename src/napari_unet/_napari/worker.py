"""Run core jobs off the GUI thread with a napari progress bar and a working Cancel.

A job is any callable ``fn(progress, cancel) -> result`` from the core. :class:`Job` runs it
in a napari ``thread_worker`` (or synchronously, for tests and scripts), feeds the
``progress(done, total)`` calls to a napari progress bar on the GUI thread, and turns the
outcome into one of the states idle / running / done / cancelled / failed, which the
widgets use to enable their buttons. Errors become napari notifications with the core's
message; the viewer never freezes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..errors import Cancelled, NapariUnetError

IDLE, RUNNING, DONE, CANCELLED, FAILED = "idle", "running", "done", "cancelled", "failed"

JobFn = Callable[[Callable[[int, int], None], Callable[[], bool]], Any]


def error_message(exc: BaseException) -> str:
    """What users read: the core's own message, or the exception type for anything else."""
    if isinstance(exc, NapariUnetError | ValueError | FileNotFoundError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class Job:
    """One long job at a time for a widget; ``state`` drives its buttons."""

    def __init__(self, on_state: Callable[[str], None] | None = None, desc: str = "napari-unet"):
        self.state = IDLE
        self.desc = desc
        self.worker = None
        self.error: BaseException | None = None
        self._on_state = on_state
        self._stop = threading.Event()
        self._pbar = None
        self._set_progress = None

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    def _set_state(self, state: str) -> None:
        self.state = state
        if self._on_state is not None:
            self._on_state(state)

    def cancel(self) -> None:
        """Ask the running job to stop at its next ``cancel()`` check."""
        self._stop.set()

    def cancelled(self) -> bool:
        return self._stop.is_set()

    def run_sync(self, fn: JobFn, on_done: Callable[[Any], None] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Any:
        """Run in the calling thread (tests, scripts); same states and notifications."""
        self._begin()
        try:
            result = fn(progress or (lambda done, total: None), self.cancelled)
        except BaseException as exc:  # noqa: BLE001 - reported to the user, never swallowed
            self._fail(exc)
            return None
        self._finish(result, on_done)
        return result

    def start(self, fn: JobFn, on_done: Callable[[Any], None] | None = None):
        """Run in a napari thread_worker with a progress bar; returns the worker."""
        from napari.qt.threading import create_worker
        from napari.utils import progress as napari_progress
        from superqt.utils import ensure_main_thread

        if self.running:
            raise NapariUnetError("a job is already running: wait for it or press Cancel")
        self._begin()
        self._pbar = napari_progress(total=0, desc=self.desc)
        pbar = self._pbar

        @ensure_main_thread
        def set_progress(done: int, total: int) -> None:
            if pbar is self._pbar:
                if pbar.total != total:
                    pbar.total = total
                pbar.n = done
                pbar.refresh()

        def run():
            # outcomes travel as values: napari would otherwise relay every exception
            # (a Cancel included) as an error notification with a traceback
            try:
                return True, fn(set_progress, self.cancelled)
            except BaseException as exc:  # noqa: BLE001 - reported on the GUI thread
                return False, exc

        worker = create_worker(run, _ignore_errors=True)
        worker.returned.connect(lambda out: self._outcome(out, on_done))
        worker.finished.connect(self._close_pbar)
        self.worker = worker
        worker.start()
        return worker

    def _outcome(self, out: tuple[bool, Any], on_done) -> None:
        ok, value = out
        if ok:
            self._finish(value, on_done)
        else:
            self._fail(value)

    def _begin(self) -> None:
        self._stop.clear()
        self.error = None
        self._set_state(RUNNING)

    def _finish(self, result: Any, on_done: Callable[[Any], None] | None) -> None:
        if self._stop.is_set():
            self._set_state(CANCELLED)
            return
        try:
            if on_done is not None:
                on_done(result)
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)
            return
        self._set_state(DONE)

    def _fail(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_error, show_info

        self.error = exc
        if isinstance(exc, Cancelled) or self._stop.is_set():
            self._set_state(CANCELLED)
            show_info(f"{self.desc}: cancelled")
            return
        self._set_state(FAILED)
        show_error(f"{self.desc}: {error_message(exc)}")

    def _close_pbar(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.worker = None
