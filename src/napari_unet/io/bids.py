"""BIDS datasets in: which folder is a dataset, and which of its images a run takes.

pybids indexes the dataset and parses every file's entities (no path rules of our own);
the BIDS schema (bidsschematools) gives the entities' short keys and long names, so a
filter may say ``sub``, ``subject``, ``acq`` or ``acquisition``. Filters follow the BIDS
apps (fMRIPrep's ``--bids-filter-file``): entity -> value, a list of values, ``null``
(the entity must be absent) or ``"*"`` (any value, but present); they update the default
query (anatomical NIfTI images of the model's suffixes) key by key.

pybids is imported only when a BIDS dataset is met, so plain folders pay nothing for it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import SettingsError

DESCRIPTION = "dataset_description.json"
NIFTI_EXTENSIONS = (".nii.gz", ".nii")
DEFAULT_SUFFIXES = ("T1w",)
SUFFIXES_KEY = "bids_suffixes"  # a model's provenance: the suffixes it learned from
# what a sidecar may say that matters here: patient data (dcm2niix -ba n keeps it), to
# keep out of names; and whether the image is skull-stripped (derived images say so too)
KEPT_METADATA = ("PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate",
                 "SkullStripped")
ANY, NONE = "*", None


class BidsError(SettingsError):
    """A BIDS dataset or filter that cannot be used as asked (exit 2)."""


@dataclass(frozen=True)
class BidsImage:
    """One image of a BIDS dataset with the entities pybids parsed from its name."""

    path: str  # absolute
    relpath: str  # within the dataset, with '/' separators
    entities: tuple[tuple[str, str], ...]  # pybids names (subject, session, suffix, ...)
    metadata: tuple[tuple[str, object], ...] = ()  # KEPT_METADATA found in its sidecars
    problem: str | None = None  # why its metadata cannot be known (a broken sidecar)

    def get(self, name: str) -> str | None:
        return dict(self.entities).get(name)

    def meta(self, key: str):
        return dict(self.metadata).get(key)


@dataclass
class BidsSelection:
    root: Path
    description: dict
    query: dict  # the pybids query used (JSON-ready: None/"*" as given)
    images: list[BidsImage] = field(default_factory=list)
    available: dict[str, list[str]] = field(default_factory=dict)  # when nothing matched

    @property
    def derivative(self) -> bool:
        return str(self.description.get("DatasetType", "raw")).lower() == "derivative"


def find_dataset(path: str | os.PathLike) -> Path | None:
    """The root of the BIDS dataset ``path`` is, or lies in (a ``sub-*`` folder or file
    below a folder with ``dataset_description.json``); None when it is in none."""
    path = Path(path).resolve()
    if path.is_dir() and (path / DESCRIPTION).is_file():
        return path
    for parent in path.parents:
        if (parent / DESCRIPTION).is_file():
            first = path.relative_to(parent).parts[0]
            return parent if first.startswith("sub-") else None
    return None


def read_description(root: Path) -> dict:
    """``dataset_description.json`` of ``root``; a :class:`BidsError` names what is wrong."""
    where = root / DESCRIPTION
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BidsError(f"{where}: not a readable BIDS dataset description "
                        f"({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise BidsError(f"{where}: a BIDS dataset description must be a JSON object")
    return data


def open_layout(root: Path, derivative: bool = False):
    """pybids' index of ``root`` (files and sidecar metadata; not validated, so nothing is
    dropped without a word: filters choose) and the JSON files in it that cannot be read
    (relative path -> why), left out of the index: pybids refuses a whole dataset for
    one of them, and only the images they are sidecars of must fail."""
    try:
        return _layout(root, derivative, {}), {}
    except Exception as exc:  # noqa: BLE001 - pybids raises many kinds for odd datasets
        first = exc
    broken = _broken_json(root)
    try:
        if broken:
            return _layout(root, derivative, broken), broken
    except Exception as exc:  # noqa: BLE001
        first = exc
    raise BidsError(f"{root}: pybids cannot index this BIDS dataset "
                    f"({type(first).__name__}: {first})") from None


def _layout(root: Path, derivative: bool, broken: dict[str, str]):
    import re

    from bids import BIDSLayout, BIDSLayoutIndexer
    from bids.layout.validation import DEFAULT_LOCATIONS_TO_IGNORE

    ignore = [*DEFAULT_LOCATIONS_TO_IGNORE, *(re.compile(f"^/{re.escape(rel)}$")
                                              for rel in broken)]
    return BIDSLayout(str(root), validate=False, is_derivative=derivative,
                      indexer=BIDSLayoutIndexer(validate=False, index_metadata=True,
                                                ignore=ignore))


def _broken_json(root: Path) -> dict[str, str]:
    """The JSON files under ``root`` (outside hidden folders) that are not a JSON object."""
    broken = {}
    for path in sorted(root.rglob("*.json")):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in Path(rel).parts):
            continue
        try:
            ok = isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
            why = "not a JSON object"
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            ok, why = False, f"{type(exc).__name__}: {exc}"
        if not ok:
            broken[rel] = why[:300]
    return broken


def sidecar_problem(image_rel: str, entities: dict, broken: dict[str, str]) -> str | None:
    """Why the image's metadata cannot be known: a sidecar that applies to it (BIDS
    inheritance: in its folder or one above, the same suffix, entities it has) is
    broken; None when none is."""
    from bids.layout import parse_file_entities

    folder = Path(image_rel).parent
    for rel, why in broken.items():
        if Path(rel).parent not in (folder, *folder.parents):
            continue
        theirs = parse_file_entities("/" + rel)
        if theirs.get("suffix") != entities.get("suffix"):
            continue
        if all(str(entities.get(k)) == str(v) for k, v in theirs.items()
               if k not in ("suffix", "extension", "datatype")):
            # named by a path only where that holds no subject label, unchecked as yet
            where = (rel if "subject" not in theirs else "beside it"
                     if Path(rel).parent == folder else "in its subject's folder")
            return (f"its JSON sidecar ({where}) cannot be read ({why}); the image's "
                    "metadata, and whether its labels name the patient, cannot be known: "
                    "correct the sidecar")
    return None


# -- entity names ------------------------------------------------------------------------

@lru_cache(maxsize=1)
def schema():
    from bidsschematools import schema as bst

    return bst.load_schema()


@lru_cache(maxsize=1)
def _pybids_names() -> frozenset[str]:
    from bids.layout import Config

    return frozenset(e for c in ("bids", "derivatives") for e in Config.load(c).entities)


@lru_cache(maxsize=1)
def _schema_keys() -> dict[str, str]:
    """Schema long name -> short key (subject -> sub, description -> desc)."""
    entities = schema().objects.entities
    return {name: entities[name].name for name in schema().rules.entities}


def pybids_name(key: str) -> str:
    """The pybids name of an entity given by its pybids name, schema name or short key."""
    names, keys = _pybids_names(), _schema_keys()
    if key in names:
        return key
    if key in keys and keys[key] in names:  # inversion -> inv, description -> desc
        return keys[key]
    longs = [long for long, short in keys.items() if short == key and long in names]
    if longs:  # sub -> subject, acq -> acquisition
        return longs[0]
    shorts = {short for short, long in _by_short().items() if long in names}
    longs = {long for long, short in keys.items() if short in names}
    known = sorted({*names, *shorts, *longs} - {"scans", "fmap"})
    raise BidsError(f"--bids-filter: {key!r} is not a BIDS entity; use one of "
                    f"{', '.join(known)}")


def _by_short() -> dict[str, str]:
    return {short: long for long, short in _schema_keys().items()}


def schema_name(pybids: str) -> str | None:
    """The schema's long name of a pybids entity (None for suffix, datatype, extension
    and pybids' own extras)."""
    keys = _schema_keys()
    if pybids in keys:
        return pybids
    return next((long for long, short in keys.items() if short == pybids), None)


def short_key(schema_entity: str) -> str:
    return _schema_keys()[schema_entity]


# -- filters ---------------------------------------------------------------------------

def parse_filter_args(items: list[str] | None) -> dict:
    """``["suffix=T1w", "session=1,2"]`` -> ``{"suffix": "T1w", "session": ["1", "2"]}``."""
    query: dict = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BidsError(f"--bids-filter {item!r}: write ENTITY=VALUE (e.g. suffix=T1w, "
                            "session=1, run=1,2)")
        values = [v.strip() for v in value.split(",") if v.strip()]
        if not values:
            raise BidsError(f"--bids-filter {item!r}: no value after '='")
        query[key.strip()] = values[0] if len(values) == 1 else values
    return query


def read_filter_file(path: str | os.PathLike) -> dict:
    """A JSON object of entity -> value (as fMRIPrep's ``--bids-filter-file``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BidsError(f"--bids-filter-file {path}: not a readable JSON file "
                        f"({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise BidsError(f"--bids-filter-file {path}: must hold a JSON object of entity -> "
                        "value, e.g. {\"suffix\": \"T1w\", \"session\": [\"1\", \"2\"]}")
    return data


def build_query(user: dict, suffixes: tuple[str, ...] = DEFAULT_SUFFIXES) -> dict:
    """The default query (anatomical NIfTI of ``suffixes``) updated by the user's filter,
    keys as pybids names; values checked to be labels, lists of them, None or '*'."""
    query = {"datatype": "anat", "suffix": list(suffixes), "extension": list(NIFTI_EXTENSIONS)}
    for key, value in user.items():
        name = pybids_name(str(key))
        query[name] = _checked_value(name, value)
    if isinstance(query.get("extension"), list):
        query["extension"] = [e if e.startswith(".") else f".{e}" for e in query["extension"]]
    elif isinstance(query.get("extension"), str) and query["extension"] != ANY:
        query["extension"] = [query["extension"] if query["extension"].startswith(".")
                              else f".{query['extension']}"]
    return query


def _checked_value(name: str, value):
    if value is None or value == ANY:
        return value
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str | int) and not isinstance(v, bool)
                             for v in values):
        raise BidsError(f"--bids-filter {name}: a value, a list of values, null (absent) or "
                        f"\"*\" (any), not {value!r}")
    return [str(v) for v in values]


def _pybids_query(query: dict) -> dict:
    from bids.layout import Query

    return {k: Query.NONE if v is None else Query.ANY if v == ANY else v
            for k, v in query.items()}


# -- selection -------------------------------------------------------------------------

def select_images(root: Path, query: dict, within: list[Path] | None = None,
                  exclude: list[Path] = ()) -> BidsSelection:
    """The images of the dataset at ``root`` that ``query`` picks, under ``within`` (the
    inputs given inside it; None: all), outside ``exclude`` and other runs' output
    folders, each in its subject's folder."""
    description = read_description(root)
    derivative = str(description.get("DatasetType", "raw")).lower() == "derivative"
    layout, broken = open_layout(root, derivative and "GeneratedBy" in description)
    try:
        files = layout.get(**_pybids_query(query))
    except ValueError as exc:
        raise BidsError(f"--bids-filter: {exc}") from None
    selection = BidsSelection(root, description, query)
    for f in sorted(files, key=lambda f: f.path):
        path = Path(f.path)
        if _kept(path, root, within, exclude, f.entities.get("subject")):
            selection.images.append(_image(layout, f, root, broken))
    if not selection.images:  # what the dataset holds, to say why nothing matched
        selection.available = {k: sorted(map(str, layout.get(return_type="id", target=k)))
                               for k in ("datatype", "suffix", "session")}
    return selection


def _kept(path: Path, root: Path, within, exclude, subject) -> bool:
    rel = path.relative_to(root)
    if subject is None or rel.parts[0] != f"sub-{subject}":
        return False  # not in its subject's folder (a stray copy, another tool's folder)
    if within is not None and not any(path == w or w in path.parents for w in within):
        return False
    return not any(e == path or e in path.parents for e in exclude)


def _image(layout, f, root: Path, broken: dict[str, str]) -> BidsImage:
    entities = tuple((k, str(v)) for k, v in f.get_entities().items())
    metadata = layout.get_metadata(f.path) or {}
    kept = tuple((k, metadata[k]) for k in KEPT_METADATA if k in metadata)
    rel = Path(f.path).relative_to(root).as_posix()
    return BidsImage(f.path, rel, entities, kept, sidecar_problem(rel, dict(entities), broken))

