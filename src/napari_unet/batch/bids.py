"""BIDS datasets as batch inputs: the images a run takes, named by their entities.

An input that is a BIDS dataset (a folder with ``dataset_description.json``), or a
subject folder or file inside one, makes the run a BIDS run: pybids picks the images by
entities (:mod:`napari_unet.io.bids`: the model's default suffix, updated by the user's
filter), each becomes a scan named after its own BIDS file name, and the output folder
becomes a derivative dataset (:mod:`.bids_dataset`). One dataset per output folder, and
no plain inputs beside it: a derivative dataset holds one dataset's derivatives.

Subject and session labels are pseudonyms by design, so they name the outputs; a label
that is the patient's name or ID in the image's own sidecar (``dcm2niix -ba n`` keeps
them), looks like a date, or otherwise looks identifying (:mod:`.privacy`), fails its scan
with the reason and never reaches a file name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..io.bids import (
    DEFAULT_SUFFIXES,
    SUFFIXES_KEY,
    BidsError,
    BidsImage,
    BidsSelection,
    build_query,
)
from ..io.formats import nifti_stem
from . import bids_names
from .naming import short_hash
from .privacy import identifiers_of, looks_identifying, redact

_DATE = re.compile(r"(?:19|20)\d\d[-_]?(?:0[1-9]|1[0-2])[-_]?(?:0[1-9]|[12]\d|3[01])")


@dataclass(frozen=True)
class BidsRequest:
    """What the user asked of a BIDS input: a filter (entity -> value), and the model's
    task and default suffixes."""

    filters: dict = field(default_factory=dict)
    suffixes: tuple[str, ...] = DEFAULT_SUFFIXES
    task_kind: str = "segment"

    @property
    def query(self) -> dict:
        return build_query(self.filters, self.suffixes)


def model_suffixes(model) -> tuple[str, ...]:
    """The suffixes a model's provenance says it learned from (``train --bids`` writes
    them), else T1w (both bundled models learned from T1-weighted MRI)."""
    named = (model.meta.provenance or {}).get(SUFFIXES_KEY)
    if isinstance(named, list) and named and all(isinstance(s, str) and s.isalnum()
                                                 for s in named):
        return tuple(named)
    return DEFAULT_SUFFIXES


def split_inputs(inputs: list[str | os.PathLike]) -> tuple[Path | None, list[Path] | None]:
    """(dataset root, the inputs inside it or None for the whole dataset); (None, None)
    when no input is BIDS. Several datasets, or BIDS beside plain inputs: a usage error."""
    from ..io.bids import find_dataset

    roots: dict[Path, list[Path]] = {}
    plain = []
    for given in inputs:
        root = find_dataset(given)
        if root is None:
            plain.append(str(given))
        else:
            roots.setdefault(root, []).append(Path(given).resolve())
    if not roots:
        return None, None
    if len(roots) > 1:
        raise BidsError("the inputs are in several BIDS datasets; a derivative dataset holds "
                        "one dataset's results: run each into its own output folder")
    if plain:
        raise BidsError(f"{plain[0]}: not in the BIDS dataset given beside it; the output "
                        "folder becomes that dataset's derivatives: run other inputs into "
                        "another output folder")
    root, given = next(iter(roots.items()))
    return root, None if root in given else given


def check_output_place(root: Path, out: Path, given) -> None:
    """Refuse an output folder that is the dataset, holds it, or lies in it anywhere but
    below its ``derivatives/``: BIDS keeps derivatives there or apart, and one elsewhere
    in the dataset (``sub-01/``) would hide that folder's images from the run and make
    the raw dataset invalid."""
    if out == root or out in root.parents:
        where = "is the BIDS dataset or holds it"
    elif root in out.parents and root / "derivatives" not in out.parents:
        where = "lies inside the BIDS dataset, not in a folder of its own under derivatives/"
    else:
        return
    raise BidsError(f"{given}: the output folder {where}; BIDS keeps derivatives apart: "
                    "write them to e.g. <dataset>/derivatives/napari-unet")


def select(root: Path, within: list[Path] | None, exclude: Path | None,
           request: BidsRequest) -> BidsSelection:
    """The images the request picks; a :class:`BidsError` when there are none."""
    from ..io.bids import select_images
    from .outdir import STATE_DIR

    excluded = [exclude] if exclude else []
    selection = select_images(root, request.query, within, excluded)
    selection.images = [i for i in selection.images if not _in_output_folder(Path(i.path),
                                                                               root, STATE_DIR)]
    if not selection.images:
        raise BidsError(_nothing_selected(root, selection))
    return selection


def _in_output_folder(path: Path, root: Path, state_dir: str) -> bool:
    """Under another run's output folder inside the dataset (it holds our state)."""
    return any((p / state_dir).is_dir() for p in path.parents if root in p.parents)


def _nothing_selected(root: Path, selection: BidsSelection) -> str:
    wanted = " ".join(f"{k}={_shown(v)}" for k, v in selection.query.items())
    held = "; ".join(f"{k}: {', '.join(v) or 'none'}" for k, v in selection.available.items())
    return (f"{root}: no image of this BIDS dataset matches {wanted} (it holds {held}); "
            "choose images with --bids-filter, e.g. --bids-filter suffix=T2w")


def _shown(value) -> str:
    if value is None:
        return "(absent)"
    return ",".join(value) if isinstance(value, list) else str(value)


def scans(selection: BidsSelection, task_kind: str) -> list:
    """One :class:`~.discover.Scan` per image, named by its BIDS file name; a scan whose
    labels look identifying, or whose outputs would take another's names, fails."""
    from .discover import Scan

    out, taken = [], {}
    for image in selection.images:
        problem = label_problem(image)
        if problem:
            out.append(Scan(image.path, f"scan_{short_hash(image.relpath)}", "nifti",
                            error=problem))
            continue
        scan = Scan(image.path, nifti_stem(image.relpath.rsplit("/", 1)[-1]), "nifti",
                    bids=image)
        primary = _primary(image, task_kind)
        if primary in taken:
            scan = Scan(scan.input, scan.name, "nifti", bids=image,
                        error=_collision(image, task_kind, taken[primary]))
        else:
            taken[primary] = scan.name
        out.append(scan)
    return out


def _primary(image: BidsImage, task_kind: str) -> str:
    if task_kind == "denoise":
        return bids_names.derivative_name(image, image.get("suffix"), ".nii.gz",
                                          description=bids_names.DENOISED,
                                          space=image.get("space"))
    return bids_names.derivative_name(image, "dseg", ".nii.gz", description=None,
                                      space=image.get("space") or bids_names.ORIG_SPACE)


def _collision(image: BidsImage, task_kind: str, other: str) -> str:
    suffix = image.get("suffix") if task_kind == "denoise" else "dseg"
    dropped = bids_names.dropped_entities(image, suffix)
    why = (f" ({', '.join(dropped)} cannot be part of a {suffix} file's name)" if dropped
           else " (the same entities)")
    return (f"its outputs would have the names of {other}'s{why}; choose one of them with "
            "--bids-filter")


def label_problem(image: BidsImage) -> str | None:
    """Why the image's subject or session label may not name files (None: it may)."""
    if image.problem:
        return image.problem
    identifiers = identifiers_of(dict(image.metadata))
    for entity in ("subject", "session"):
        label = image.get(entity)
        if not label:
            continue
        if identifiers and redact(label, identifiers, "") != label:
            why = "is the patient's name or ID in the image's sidecar"
        elif _DATE.search(label):
            why = "looks like a date (of birth?)"
        elif looks_identifying(re.sub(r"\d+", "0", label)):
            why = "looks like patient data"
        else:
            continue
        return (f"its {entity} label {why}; BIDS labels must be pseudonyms, and outputs "
                f"are named by them: relabel the {entity} (e.g. sub-01) before processing")
    return None
