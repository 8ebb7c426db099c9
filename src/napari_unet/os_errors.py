"""What the operating system refused, in plain words: a full disk is the user's disk, not
a bug of ours.

Known conditions (disk full, quota, read-only file system, permission, a path too long,
a file that vanished, a failing mount) get a one-line message that says what happened and
what to do; only the rest is "unexpected" and worth a report. The errno is found on an
``OSError`` or in the text of errors that libraries written in other languages raise for
one (safetensors: "I/O error: No space left on device (os error 28)").
"""

from __future__ import annotations

import errno
import os
import re

# errno -> what happened, for a person; the symbol is added in brackets
KNOWN: dict[int, str] = {
    errno.ENOSPC: "no space left on the disk",
    errno.EDQUOT: "your disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENAMETOOLONG: "the path is longer than the operating system allows",
    errno.ENOENT: "no such file or folder (removed, or renamed, while napari-unet ran?)",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.ELOOP: "too many levels of symbolic links (a link loop?)",
    errno.EIO: "input/output error (a failing disk, or a network mount that went away?)",
    errno.ESTALE: "stale file handle (a network mount that went away?)",
    errno.EMFILE: "too many open files in this process",
    errno.ENFILE: "too many open files on this system",
    errno.EFBIG: "file too large for this file system or for a limit set on this process",
    errno.ENOMEM: "out of memory",
    errno.ENXIO: "no such device (a removable disk or mount that went away?)",
    errno.ENODEV: "no such device (a removable disk or mount that went away?)",
    errno.EBUSY: "the file or device is busy",
    errno.ETXTBSY: "the file is busy (in use by a running program)",
    errno.EXDEV: "the path crosses file systems where it may not",
    errno.ETIMEDOUT: "the operation timed out (a network mount that does not answer?)",
    errno.EHOSTDOWN: "the host of a network mount is down",
}
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
ADVICE = {errno.ENOSPC: "free some space, or choose another disk",
          errno.EDQUOT: "free some space, or choose another disk",
          errno.EROFS: "choose a folder you can write to",
          errno.EACCES: "check the permissions, or choose another folder",
          errno.ENAMETOOLONG: "move or rename it to a shorter path"}
_IN_TEXT = re.compile(r"\[Errno (\d+)\]|\(os error (\d+)\)|errno[ =:]+(\d+)", re.IGNORECASE)


def errno_of(exc: BaseException | None) -> int | None:
    """The errno behind ``exc`` (an OSError, its cause or context, or a library's error
    whose text carries one); None when there is none."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc.errno
        found = _IN_TEXT.search(str(exc))
        if found:
            return int(next(g for g in found.groups() if g))
        exc = exc.__cause__ or exc.__context__
    return None


def is_known(exc: BaseException) -> bool:
    """True when ``exc`` is an operating-system condition a user can act on."""
    return errno_of(exc) in KNOWN


def plain(exc: BaseException, what: str | None = None, advice: bool = False) -> str:
    """``<file>: <what>: <reason> (ENOSPC)`` for a known condition; ``what`` says what
    was being done ("cannot write"), the file is the one the error names, if any; with
    ``advice``, what to do about it follows."""
    code = errno_of(exc)
    reason = KNOWN.get(code) or (os.strerror(code) if code is not None else str(exc))
    symbol = errno.errorcode.get(code, "") if code is not None else ""
    name = getattr(exc, "filename", None)
    parts = [str(name)] if name not in (None, "") else []
    if what:
        parts.append(what)
    parts.append(f"{reason} ({symbol})" if symbol else reason)
    text = ": ".join(parts)
    return f"{text}; {ADVICE[code]}" if advice and code in ADVICE else text
