"""Where the scans of a batch run: in this process, in local processes, on a Dask cluster.

Each executor yields one report entry per scan as results arrive. A worker that dies
(killed, out of memory) fails only the scan it was running: the local pool is rebuilt,
and the scans that were in flight beside it run again. Each worker notes which scan it
runs (a file named after its process id in a private folder), so the scan of a worker
killed from outside (``kill -9``, the out-of-memory killer) is known and fails; where
that cannot be told, the scans that were in flight run again one at a time, so the one
that kills its worker is found and the others finish. Dask reschedules a dead worker's task
itself and fails it (``KilledWorker``) only after it killed several workers; the
scheduler is reached (short timeout) before any scan runs or is recorded.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import SettingsError
from . import scan_job
from .discover import Scan
from .report import entry
from .scan_job import BatchJob, message
from .settings import BatchSettings

SCHEDULER_TIMEOUT_S = 10.0
WORKER_DIED = ("the worker process died while processing this scan (killed, or out of "
               "memory?); the other scans went on")

Executor = Callable[[list[Scan], BatchJob, Callable | None, Callable], Iterator[dict]]


@contextlib.contextmanager
def executor(settings: BatchSettings) -> Iterator[Executor]:
    """The executor for ``settings``; a Dask scheduler is reached before any scan runs."""
    if not settings.scheduler:
        yield run_processes if settings.workers > 1 else run_local
        return
    from distributed import Client

    with _connect(Client, settings.scheduler) as client:
        yield functools.partial(run_dask, client)


def run_local(scans: list[Scan], job: BatchJob, cancel, on_start) -> Iterator[dict]:
    for scan in scans:
        if cancel and cancel():
            return
        on_start(scan.name)
        yield scan_job.process_scan(scan, job)


def _init_worker(threads: int, parent: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True,
                     name="napari-unet-parent-watch").start()


def _exit_with(parent: int, every_s: float = 0.5) -> None:
    """End this worker once the run's process is gone (SIGTERM, kill -9, out of memory):
    the pool's workers outlived it, idle forever or writing on into an output folder
    whose run lock had gone with it. A scan stopped so is one a killed run leaves:
    temporary files that the next run clears, and a manifest it does not take as done."""
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(1)


def _tracked(process, scan: Scan, job: BatchJob, tracker: str) -> dict:
    """``process(scan, job)`` in a worker, noting meanwhile which scan this process runs."""
    note = Path(tracker) / str(os.getpid())
    note.write_text(scan.name, encoding="utf-8")
    try:
        return process(scan, job)
    finally:
        note.unlink(missing_ok=True)


def run_processes(scans: list[Scan], job: BatchJob, cancel, on_start) -> Iterator[dict]:
    """At most ``workers`` scans in flight; a broken pool is replaced by a new one."""
    todo, alone = deque(scans), deque()  # alone: in flight when a worker died
    tracker = tempfile.mkdtemp(prefix="napari-unet-workers-")
    try:
        while todo or alone:
            if cancel and cancel():
                return
            with _new_pool(job, len(todo) + len(alone)) as pool:
                yield from _drain(pool, job, todo, alone, cancel, tracker)
    finally:
        shutil.rmtree(tracker, ignore_errors=True)


def _new_pool(job: BatchJob, n_scans: int):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    workers = max(1, min(job.settings.workers, n_scans))
    threads = max(1, (os.cpu_count() or 1) // workers)
    return ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                               initializer=_init_worker, initargs=(threads, os.getpid()))


def _drain(pool, job: BatchJob, todo: deque, alone: deque, cancel,
           tracker: str) -> Iterator[dict]:
    """Run scans on ``pool`` until all are done or the pool breaks."""
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    running: dict = {}
    workers: dict = {}  # pid -> Process, kept to read how each one ended

    def submit(scan: Scan, isolated: bool) -> None:
        future = pool.submit(_tracked, scan_job.process_scan, scan, job, tracker)
        running[future] = (scan, isolated)
        workers.update(getattr(pool, "_processes", None) or {})

    while True:
        if alone and not running:  # suspects of an earlier breakage: one at a time
            submit(alone.popleft(), True)
        while not alone and todo and len(running) < job.settings.workers:
            submit(todo.popleft(), False)
        if not running:
            return
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        suspects = []
        for future in done:
            scan, isolated = running.pop(future)
            try:
                yield future.result()
            except BrokenProcessPool:
                suspects.append((scan, isolated))
            except Exception as exc:  # noqa: BLE001
                yield entry(scan, "failed", error=f"worker failed: {message(exc)}")
        if suspects:
            yield from _after_breakage(running, suspects, (todo, alone),
                                       _killed_scans(workers, tracker))
            return
        if cancel and cancel():
            return


def _killed_scans(workers: dict, tracker: str) -> set[str] | None:
    """Names of the scans whose workers died by themselves (killed, crashed), told from
    the workers the pool stopped (SIGTERM) by how each process ended; None when that
    cannot be told."""
    killed = set()
    for pid, process in workers.items():
        process.join(timeout=10)
        code = process.exitcode
        if code is None:
            return None
        note = Path(tracker) / str(pid)
        if code not in (0, -signal.SIGTERM) and note.is_file():
            killed.add(note.read_text(encoding="utf-8"))
        note.unlink(missing_ok=True)
    return killed


def _after_breakage(running: dict, suspects: list, queues: tuple[deque, deque],
                    killed: set[str] | None) -> Iterator[dict]:
    """Every future still running fails too. A scan whose own worker died fails; the
    others were stopped with the pool and run again (their entries say so). Where that
    cannot be told, a scan that ran alone is the culprit, and the others run again one at
    a time until it is found."""
    from concurrent.futures import wait

    todo, alone = queues
    wait(running)
    for future, (scan, isolated) in running.items():
        try:
            yield future.result()
        except Exception:  # noqa: BLE001 - BrokenProcessPool
            suspects.append((scan, isolated))
    if killed:
        for scan, _ in suspects:
            if scan.name in killed:
                yield entry(scan, "failed", error=WORKER_DIED)
        todo.extendleft(_rerun_note(s) for s, _ in reversed(suspects) if s.name not in killed)
    elif len(suspects) == 1 or all(isolated for _, isolated in suspects):
        for scan, _ in suspects:
            yield entry(scan, "failed", error=WORKER_DIED)
    else:
        alone.extendleft(_rerun_note(s) for s, _ in reversed(suspects))


RAN_AGAIN = ("a worker process beside this scan's died (killed, or out of memory?); this "
             "scan was stopped with it and ran again")


def _rerun_note(scan: Scan) -> Scan:
    from dataclasses import replace

    return scan if RAN_AGAIN in scan.notes else replace(scan, notes=(*scan.notes, RAN_AGAIN))


def run_dask(client, scans: list[Scan], job: BatchJob, cancel, on_start) -> Iterator[dict]:
    from distributed import as_completed

    futures = {client.submit(scan_job.process_scan, scan, job, pure=False,
                             key=f"napari-unet-{scan.name}-{os.urandom(4).hex()}"): scan
               for scan in scans}
    for future in as_completed(list(futures), loop=client.loop):
        try:
            yield future.result()
        except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker
            yield entry(futures[future], "failed", error=f"worker failed: {message(exc)}")
        if cancel and cancel():
            client.cancel(list(futures))
            return


def _connect(client_class, address: str):
    """A client of the scheduler; a short connect timeout (dask's own when shorter)."""
    import dask
    from dask.utils import parse_timedelta

    configured = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s")
    timeout = min(SCHEDULER_TIMEOUT_S, configured or SCHEDULER_TIMEOUT_S)
    try:
        _resolve(address)  # a bad address fails here, before a Client exists to hang in __del__
        return client_class(address, set_as_default=False, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise SettingsError(f"cannot reach the Dask scheduler at {address} ({exc}); "
                            "check the address or start the cluster first") from exc


def _resolve(address: str) -> None:
    """Parse the address and resolve its host (ValueError / OSError when they fail)."""
    from distributed.comm import resolve_address

    resolve_address(address)
