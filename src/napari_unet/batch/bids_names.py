"""Names of BIDS derivative outputs, from the BIDS schema (bidsschematools).

An output keeps every entity of its source image that the schema allows for its kind of
file (``dseg``, ``probseg``, or a preprocessed image with the source's own suffix), in
the schema's order, and adds ``space`` (the source's, else ``orig``: the source image's
own grid), ``label`` (a probability map's class) or ``desc-denoised``. Entities the
schema does not allow for that file (e.g. ``inv`` on a segmentation) are dropped; two
sources that then meet in one name are told apart in :mod:`.bids_scans`.

Files in ``sub-<label>[/ses-<label>]/<datatype>/``; QC pictures in ``sub-<label>/figures/``
(as fMRIPrep's), which ``.bidsignore`` hides from the validator with the other non-BIDS
files: ``report.json``, ``index.html`` and the uncertainty maps (BIDS has no suffix for
them).
"""

from __future__ import annotations

import re
from functools import lru_cache

from ..io.bids import BidsImage, schema, schema_name, short_key

ORIG_SPACE = "orig"
DENOISED = "denoised"
UNCERTAINTY_SUFFIX = "uncertainty"
FIGURES = "figures"
BIDSIGNORE_LINES = ("report.json", "index.html", f"sub-*/{FIGURES}",
                    f"*_{UNCERTAINTY_SUFFIX}.nii.gz", f"*_{UNCERTAINTY_SUFFIX}.json")
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]+")


@lru_cache(maxsize=64)
def _rule(suffix: str, datatype: str) -> tuple[str, frozenset[str]]:
    """(rule name, allowed entities) of the derivative rule for ``suffix`` in ``datatype``."""
    rules = schema().rules.files.deriv.imaging
    for name in rules:
        rule = rules[name]
        if (not name.endswith("_atlas") and suffix in rule.suffixes
                and datatype in rule.datatypes):
            return name, frozenset(rule.entities.keys())
    raise KeyError(f"the BIDS schema has no derivative {suffix} files in {datatype}")


def source_entities(image: BidsImage) -> dict[str, str]:
    """The image's entities by schema name (subject, session, run, ...), in schema order."""
    by_schema = {schema_name(k): v for k, v in image.entities if schema_name(k)}
    return {e: by_schema[e] for e in schema().rules.entities if e in by_schema}


def derivative_name(image: BidsImage, suffix: str, extension: str, **extra: str) -> str:
    """The derivative file's path (``sub-01/ses-1/anat/sub-01_ses-1_space-orig_dseg.nii.gz``).

    ``extra`` entities (schema names: space, label, description) replace the source's.
    """
    datatype = image.get("datatype") or "anat"
    _, allowed = _rule(suffix, datatype)
    entities = {**source_entities(image), **extra}
    parts = [f"{short_key(e)}-{entities[e]}" for e in schema().rules.entities
             if e in allowed and entities.get(e)]
    return f"{folder(image, datatype)}/{'_'.join([*parts, suffix])}{extension}"


def dropped_entities(image: BidsImage, suffix: str) -> list[str]:
    """Source entities a ``suffix`` file may not carry (so two sources may share a name)."""
    _, allowed = _rule(suffix, image.get("datatype") or "anat")
    return [short_key(e) for e in source_entities(image) if e not in allowed]


def folder(image: BidsImage, datatype: str | None = None) -> str:
    parts = [f"sub-{image.get('subject')}"]
    if image.get("session"):
        parts.append(f"ses-{image.get('session')}")
    return "/".join([*parts, datatype or image.get("datatype") or "anat"])


def figure_name(image: BidsImage, primary: str) -> str:
    """The QC picture of an output: ``sub-<label>/figures/<output stem>.png``."""
    stem = primary.rsplit("/", 1)[-1].split(".", 1)[0]
    return f"sub-{image.get('subject')}/{FIGURES}/{stem}.png"


def class_labels(class_names: list[str]) -> list[str]:
    """BIDS labels (letters and digits) for class names: ``grey matter`` -> ``GreyMatter``;
    an empty or repeated one gets its index."""
    labels: list[str] = []
    for i, name in enumerate(class_names):
        words = [w for w in _NOT_ALNUM.split(str(name)) if w]
        label = "".join(w[:1].upper() + w[1:] for w in words) or f"class{i}"
        labels.append(label if label not in labels else f"{label}{i}")
    return labels


def probseg_channels(task) -> list[tuple[int, int]]:
    """(probability channel, class) of each class but the background: a binary model's
    one channel is its foreground class."""
    if task.out_channels == 1:
        return [(0, 1)]
    return [(c, c) for c in range(1, task.out_channels)]


def output_names(image: BidsImage, task, probabilities: bool) -> dict[str, str]:
    """Role -> path for one source image (roles as :func:`.naming.output_names`, plus
    ``tsv`` for the dseg's class table and ``probseg:<channel>`` per class probability
    map). Every image has a JSON sidecar of the same name (written beside it)."""
    space = image.get("space") or ORIG_SPACE
    names: dict[str, str] = {}
    if task.kind == "denoise":
        names["image"] = derivative_name(image, image.get("suffix"), ".nii.gz",
                                         description=DENOISED, space=image.get("space"))
    else:
        names["labels"] = derivative_name(image, "dseg", ".nii.gz", space=space,
                                          description=None)
        names["tsv"] = names["labels"].removesuffix(".nii.gz") + ".tsv"
        if probabilities:
            labels = class_labels(list(task.class_names))
            for channel, cls in probseg_channels(task):
                names[f"probseg:{channel}"] = derivative_name(
                    image, "probseg", ".nii.gz", space=space, label=labels[cls],
                    description=None)
    if probabilities:
        base = names.get("labels") or names["image"]
        names["uncertainty"] = _uncertainty_name(base)
    return names


def _uncertainty_name(base: str) -> str:
    """``..._space-orig_dseg.nii.gz`` -> ``..._space-orig_uncertainty.nii.gz`` (not BIDS:
    listed in .bidsignore)."""
    stem = base.removesuffix(".nii.gz")
    return f"{stem.rsplit('_', 1)[0]}_{UNCERTAINTY_SUFFIX}.nii.gz"


def sidecar(path: str) -> str:
    """The JSON sidecar of an image or table path."""
    for ext in (".nii.gz", ".nii", ".tsv"):
        if path.endswith(ext):
            return path[: -len(ext)] + ".json"
    raise ValueError(path)
