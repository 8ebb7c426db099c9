"""The output folder: checked before any work, one run at a time, nothing through links.

napari-unet keeps its own state in ``OUTDIR/.napari-unet``: resume manifests (which also
record every file it wrote, by content hash: see :mod:`.owned`), the run lock, and
``partial/`` for temporary files. Outputs are written under ``partial/`` (same file
system, so the final rename is atomic) with names that never match an output's pattern,
so a run killed mid-write leaves nothing a later run, or a person, could take for a
finished output.

Nothing is read, written or deleted through a symbolic link inside the output folder:
every folder napari-unet uses there is checked with ``lstat``, files are opened with
``O_NOFOLLOW``, and a link is refused with an :class:`OutputFolderError`.

A command refused with exit 2 creates nothing: what can be checked without writing
(links, a full disk, another tool's report) is checked before the folder, its state
folder or its lock are made (:func:`refusals`), and what :func:`claimed` made is taken
away again when a refusal comes after all. napari-unet creates the output folder itself,
never the folders above it (a typo, or a disk that is not mounted, never receives
results), but for a BIDS dataset's own ``derivatives/`` folder, which BIDS apps make
(``my_study/derivatives/napari-unet`` in an existing dataset).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import shutil
import socket
import stat
import uuid
from pathlib import Path

from ..errors import SettingsError
from ..io.new_files import probe_folder
from ..os_errors import plain

STATE_DIR = ".napari-unet"
PARTIAL_DIR = "partial"
LOCK_NAME = "lock"
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
TEMP_NAME_KEPT = 64  # characters of an output's name its temporary file keeps (the end)
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class OutputFolderError(SettingsError):
    """The output folder cannot be used as asked (not a folder, not writable, a link
    inside it, in use by another run): a usage error, exit 2."""


def check(outdir: str | os.PathLike) -> Path:
    """OUTDIR's resolved path if it can be the output folder; creates nothing, so that a
    command refused later (no model, no scans, no scheduler) leaves no empty folder.

    Runs before the model is loaded, so a read-only, full or misnamed folder fails at once.
    """
    given = Path(outdir)
    path = given.resolve()
    if path.exists() and not path.is_dir():
        raise OutputFolderError(f"{given}: exists and is not a folder; -o names the folder "
                                "the results go to")
    if path.is_dir():
        _probe(given, path)
        return path
    if not path.parent.is_dir() and not _bids_derivatives(path):
        what = "is not a folder" if path.parent.exists() else "does not exist"
        raise OutputFolderError(f"{given}: the folder {path.parent} {what}; napari-unet "
                                "creates the output folder, never the folders above it: "
                                "create them first, or correct the path")
    parent = path.parent if path.parent.is_dir() else path.parent.parent
    problem = probe_folder(parent)
    if problem is not None:
        raise OutputFolderError(f"{given}: cannot create this output folder in "
                                f"{parent} ({_reason(problem)}); choose a folder you "
                                "can write to")
    return path


def _bids_derivatives(path: Path) -> bool:
    """Whether ``path`` lies in the ``derivatives/`` folder (made or not) of an existing
    BIDS dataset: the one folder above OUTDIR napari-unet may make, as BIDS apps do."""
    parent = path.parent
    return (parent.name == "derivatives" and not os.path.lexists(parent)
            and (parent.parent / "dataset_description.json").is_file())


def prepare(outdir: str | os.PathLike) -> Path:
    """Make OUTDIR (checked by :func:`check`; its parent exists) and check that files can
    be created in it."""
    given = Path(outdir)
    path = given.resolve()
    try:
        if _bids_derivatives(path):
            path.parent.mkdir()
        path.mkdir(exist_ok=True)
    except OSError as exc:
        raise _unwritable(given, exc) from exc
    _probe(given, path)
    return path


def _probe(given: Path, path: Path) -> None:
    problem = probe_folder(path)
    if problem is not None:
        raise _unwritable(given, problem)


def _reason(exc: OSError) -> str:
    return plain(OSError(exc.errno, exc.strerror)) if exc.errno else str(exc)


def _unwritable(given: Path, exc: OSError) -> OutputFolderError:
    return OutputFolderError(f"{given}: cannot write in this output folder "
                             f"({_reason(exc)}); choose a folder you can write to")


def refusals(outdir: Path, qc_dir: str | None) -> None:
    """Refuse (exit 2), reading only, what would stop the run in an existing output
    folder: a link among napari-unet's folders or state files (the lock and manifests
    included). Called before anything is created."""
    if not outdir.is_dir():
        return
    for rel in (STATE_DIR, f"{STATE_DIR}/{PARTIAL_DIR}", qc_dir):
        if rel:
            real_dir(outdir, rel, create=False)
    state = outdir / STATE_DIR
    if state.is_dir():
        for entry in os.scandir(state):
            if entry.is_symlink():
                raise OutputFolderError(f"{entry.name} in {STATE_DIR} is a symbolic link; "
                                        "napari-unet never reads, writes or deletes through "
                                        "it: remove it, or choose another output folder")


@contextlib.contextmanager
def claimed(outdir: Path):
    """Make the output folder and hold its run lock; a refusal (``SettingsError``) raised
    inside takes away what this took: the lock file, the state folder and the output
    folder, each only if this run made it and it is empty."""
    made = [p for p in (outdir.parent, outdir, outdir / STATE_DIR,
                        outdir / STATE_DIR / LOCK_NAME) if not os.path.lexists(p)]
    try:
        with RunLock(prepare(outdir)):
            yield outdir
    except SettingsError:
        _undo(made)
        raise


def _undo(made: list[Path]) -> None:
    for path in reversed(made):  # the lock, then the folders (rmdir: only when empty)
        with contextlib.suppress(OSError):
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)
            else:
                os.unlink(path)


def real_dir(outdir: Path, rel: str, create: bool = True) -> Path:
    """``outdir/rel``, made where missing (unless not ``create``: then only the parts
    that exist are checked); every part checked to be a folder, not a link."""
    path = outdir
    for part in Path(rel).parts:
        path = path / part
        if create:
            with contextlib.suppress(FileExistsError):
                path.mkdir()
        elif not os.path.lexists(path):
            return outdir / rel
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode) or not stat.S_ISDIR(mode):
            what = "a symbolic link" if stat.S_ISLNK(mode) else "not a folder"
            raise OutputFolderError(
                f"{path.relative_to(outdir)} in the output folder is {what}; napari-unet "
                "never reads, writes or deletes through it: remove it, or choose another "
                "output folder")
    return path


def check_parents(outdir: Path, rel: str) -> None:
    """Refuse ``rel`` when a folder on its way that exists is a link or not a folder
    (creates nothing; :func:`real_dir` makes them when the file is written)."""
    real_dir(outdir, str(Path(rel).parent), create=False)


def state_dir(outdir: Path) -> Path:
    return real_dir(outdir, STATE_DIR)


def plain_file(path: Path, outdir: Path) -> Path:
    """``path``, refused when it exists as anything but a regular file (e.g. a link)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    if not stat.S_ISREG(mode):
        raise OutputFolderError(f"{path.relative_to(outdir)} in the output folder is not a "
                                "regular file (a link?); napari-unet never uses it")
    return path


def read_text(path: Path) -> str | None:
    """A small state file's text, never through a link; None when it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputFolderError(f"{path.name} in {STATE_DIR} is a symbolic link; "
                                    "napari-unet never reads through it") from exc
        raise
    with os.fdopen(fd, encoding="utf-8") as f:
        return f.read()


def temp_path(outdir: Path, final_name: str) -> Path:
    """A unique temporary path that keeps the final suffix (writers pick format by it),
    its name no longer than it must be: an output whose own name fits must not fail for
    its temporary file's."""
    partial = real_dir(outdir, f"{STATE_DIR}/{PARTIAL_DIR}")
    name = Path(final_name).name
    return partial / f"{uuid.uuid4().hex[:12]}-{name[-TEMP_NAME_KEPT:]}"


def clear_partial(outdir: Path) -> None:
    """Remove temporary files an interrupted run left behind (never through a link)."""
    if os.path.lexists(outdir / STATE_DIR / PARTIAL_DIR):
        shutil.rmtree(real_dir(outdir, f"{STATE_DIR}/{PARTIAL_DIR}"))


class RunLock:
    """One run per output folder: an exclusive ``flock`` on ``.napari-unet/lock``.

    The kernel drops the lock when its process ends, however it ends, so a killed run
    never leaves the folder locked. Where the file system has no ``flock`` (some network
    mounts), a ``lock.pid`` file made with ``O_EXCL`` stands in; it is stale, and taken
    over, once the process it names is gone from this host.
    """

    def __init__(self, outdir: Path):
        self.outdir = outdir
        self.path = state_dir(outdir) / LOCK_NAME
        self.fd: int | None = None
        self.pid_file: Path | None = None

    def __enter__(self) -> RunLock:
        try:
            return self._enter()
        except OSError as exc:  # a full disk or a folder turned read-only: said plainly
            self.__exit__()
            raise OutputFolderError(f"the output folder's run lock cannot be taken "
                                    f"({_reason(exc)})") from exc

    def _enter(self) -> RunLock:
        fd = os.open(plain_file(self.path, self.outdir), os.O_RDWR | os.O_CREAT | NOFOLLOW,
                     0o644)
        try:
            _flock(fd)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace")
            os.close(fd)
            raise OutputFolderError(_in_use(holder)) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno not in _NO_FLOCK:
                raise
            self._take_pid_file()
            return self
        self.fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, _holder().encode())
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)
            self.pid_file = None

    def _take_pid_file(self, retry: bool = True) -> None:
        path = plain_file(self.path.with_name(LOCK_NAME + ".pid"), self.outdir)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o644)
        except FileExistsError:
            holder = read_text(path) or ""
            if retry and _stale(holder):
                path.unlink(missing_ok=True)
                return self._take_pid_file(retry=False)
            raise OutputFolderError(_in_use(holder) + f" (if no run is active, delete "
                                    f"{STATE_DIR}/{path.name})") from None
        with os.fdopen(fd, "w") as f:
            f.write(_holder())
        self.pid_file = path


def _flock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # no flock on this platform: the pid file stands in
        raise OSError(errno.ENOSYS, "no flock") from None
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _holder() -> str:
    import psutil

    pid = os.getpid()
    return json.dumps({"pid": pid, "host": socket.gethostname(),
                       "process_started": psutil.Process(pid).create_time(),
                       "since": _dt.datetime.now().astimezone().isoformat(timespec="seconds")})


def _stale(holder: str) -> bool:
    """True when the lock's process is gone (only decidable for this host)."""
    import psutil

    try:
        info = json.loads(holder)
        if info["host"] != socket.gethostname():
            return False
        return abs(psutil.Process(info["pid"]).create_time() - info["process_started"]) > 1
    except psutil.NoSuchProcess:
        return True
    except (ValueError, KeyError, TypeError, psutil.Error):
        return False


def _in_use(holder: str) -> str:
    try:
        info = json.loads(holder)
        who = f" (pid {info['pid']} on {info['host']}, since {info['since']})"
    except (ValueError, KeyError, TypeError):
        who = ""
    return (f"the output folder is in use by another napari-unet run{who}; wait for it to "
            "end, or choose another output folder")
