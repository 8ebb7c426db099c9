"""Make napari open NIfTI and DICOM with napari-unet, without asking every time.

napari's builtin reader also claims ``*.nii``, ``*.nii.gz``, ``*.dcm`` and every folder,
so with napari-unet installed napari cannot choose on its own: a drop or File > Open
shows "Choose reader", and only a saved reader preference
(``settings.plugins.extension2reader``, Preferences > Plugins) avoids it. This module
saves those preferences for napari-unet's file types, and for folders (the reader
declines folders without DICOM, so napari then offers its other readers), but only
where the user has no preference of their own that matches: a reader the user chose
is never replaced. It runs when napari-unet first runs in a napari session (the
manifest's ``on_activate``, and the reader); from then on drops open directly.
"""

from __future__ import annotations

import os
from fnmatch import fnmatch

from ..io.formats import DICOM_SUFFIXES, NIFTI_SUFFIXES

PLUGIN = "napari-unet"


def reader_patterns() -> list[str]:
    """The filename patterns napari-unet asks to open (lower and upper case, since
    napari matches preferences case-sensitively on most systems), then folders."""
    patterns = []
    for suffix in (*NIFTI_SUFFIXES, *DICOM_SUFFIXES):
        patterns += [f"*{suffix}", f"*{suffix.upper()}"]
    return [*patterns, f"*{os.sep}"]


def _example(pattern: str) -> str:
    """A path the pattern is meant for, to test the user's own patterns against."""
    return os.path.join(os.sep, "scans", "example" + pattern[1:]) if pattern != f"*{os.sep}" \
        else os.path.join(os.sep, "scans", "folder") + os.sep


def register_reader_preferences() -> list[str]:
    """Save napari-unet as the reader for its patterns the user has no preference for;
    return the patterns added."""
    try:
        from napari.settings import get_settings
    except ImportError:  # napari is not installed: nothing to register
        return []
    plugins = get_settings().plugins
    current = dict(plugins.extension2reader)
    added = [p for p in reader_patterns()
             if not any(fnmatch(_example(p), mine) for mine in current)]
    if added:
        plugins.extension2reader = {**current, **dict.fromkeys(added, PLUGIN)}
    return added


def on_activate(_context=None) -> None:
    """npe2 ``on_activate``: napari-unet is being used in this napari session."""
    register_reader_preferences()
