"""Training data from a BIDS dataset: its images, each paired with its derivative labels.

Images are chosen as ``predict`` chooses them (:mod:`napari_unet.io.bids`: anatomical
NIfTI of the given suffixes, updated by a filter). Labels are the ``dseg`` images of a
derivative dataset (a person's corrections, another tool's segmentations): a label map
belongs to an image when both name the same subject, session, acquisition, run and every
other entity that tells images apart, and it lies on the image's grid (no ``space``, or
``space-orig``, or the image's own). An image without labels is left out (and said so);
one with several is a usage error that asks for a filter (``desc=manual``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..io.bids import (
    DEFAULT_SUFFIXES,
    SUFFIXES_KEY,
    BidsError,
    BidsImage,
    build_query,
    find_dataset,
    schema_name,
    select_images,
)

_NOT_IDENTITY = {"space", "description", "label", "atlas", "segmentation", "scale",
                 "resolution", "density"}
_SAME_GRID = {None, "orig"}


@dataclass
class BidsPairs:
    images: list[str]
    labels: list[str] | None
    suffixes: list[str]
    unlabelled: list[str] = field(default_factory=list)  # images left out (relative paths)

    def describe(self) -> str:
        what = f"{len(self.images)} BIDS images ({', '.join(self.suffixes)})"
        if self.labels is not None:
            what += " with their labels"
        if self.unlabelled:
            what += f"; {len(self.unlabelled)} without labels left out"
        return what


def bids_training_pairs(root: str | os.PathLike, labels: str | os.PathLike | None = None,
                        filters: dict | None = None, label_filters: dict | None = None,
                        suffixes: tuple[str, ...] = DEFAULT_SUFFIXES) -> BidsPairs:
    """The images of the dataset at ``root`` (and, with ``labels``, the dseg of each in
    that derivative dataset); a :class:`BidsError` when there is nothing to train on."""
    root = _dataset(root, "--bids")
    query = build_query(filters or {}, suffixes)
    images = select_images(root, query).images
    if not images:
        raise BidsError(f"{root}: no image matches "
                        + " ".join(f"{k}={v}" for k, v in query.items()))
    chosen = list(query["suffix"]) if isinstance(query["suffix"], list) else []
    if labels is None:
        return BidsPairs([i.path for i in images], None, chosen)
    deriv = _dataset(labels, "--bids-labels")
    maps = select_images(deriv, build_query(label_filters or {}, ("dseg",))).images
    pairs, unlabelled = [], []
    for image in images:
        found = [m for m in maps if _same_image(image, m)]
        if len(found) > 1:
            raise BidsError(f"{image.relpath}: {len(found)} label maps in {deriv} match it ("
                            + ", ".join(m.relpath for m in found) + "); choose one with "
                            "a labels filter, e.g. desc=manual")
        if found:
            pairs.append((image.path, found[0].path))
        else:
            unlabelled.append(image.relpath)
    if not pairs:
        raise BidsError(f"{deriv}: no dseg label map matches an image of {root} (same "
                        "subject, session, run... and space orig or none)")
    return BidsPairs([p[0] for p in pairs], [p[1] for p in pairs], chosen, unlabelled)


def _dataset(path, flag: str) -> Path:
    root = find_dataset(path)
    if root is None or root != Path(path).resolve():
        raise BidsError(f"{flag} {path}: not the root of a BIDS dataset (a folder with "
                        "dataset_description.json)")
    return root


def _identity(image: BidsImage) -> dict[str, str]:
    return {schema_name(k): v for k, v in image.entities
            if schema_name(k) and schema_name(k) not in _NOT_IDENTITY}


def _same_image(image: BidsImage, label_map: BidsImage) -> bool:
    space = label_map.get("space")
    return (_identity(image) == _identity(label_map)
            and (space in _SAME_GRID or space == image.get("space")))


def with_bids_provenance(model, suffixes: list[str]):
    """The model, its provenance naming the suffixes it learned from (``predict`` then
    takes those images of a BIDS dataset by default)."""
    if not suffixes:
        return model
    model.meta = replace(model.meta, provenance={**model.meta.provenance,
                                                 SUFFIXES_KEY: list(suffixes)})
    return model
