"""The output folder as a BIDS derivative dataset: its own files and each output's sidecar.

``dataset_description.json`` (``DatasetType: derivative``, ``GeneratedBy`` with
napari-unet's version and the model's name and hash, ``SourceDatasets`` and
``DatasetLinks`` where the source's location may be written), a ``README`` and a
``.bidsignore`` for the files BIDS has no name for. Each output gets a JSON sidecar that
names its source as a BIDS URI (``bids:raw:sub-01/anat/sub-01_T1w.nii.gz``), the model
and the settings; a segmentation also gets its ``dseg.tsv`` (index, name, and the label
its probability maps use).

The source dataset's location is a path, and paths may carry patient data: it is written
only where report.json may name inputs (``--no-input-paths`` leaves it out), or where it
is a plain ``../..`` (the derivatives inside the dataset, as BIDS suggests).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from ..io.bids import BidsImage, BidsSelection, schema
from . import bids_names

RAW_LINK, SOURCE_LINK = "raw", "source"
DESCRIPTION = "dataset_description.json"
README = "README.md"
BIDSIGNORE = ".bidsignore"


def link_name(selection: BidsSelection) -> str:
    """The name BIDS URIs give the source dataset: ``raw``, or ``source`` for derivatives."""
    return SOURCE_LINK if selection.derivative else RAW_LINK


def source_uri(selection: BidsSelection, out: Path, input_paths: bool) -> str | None:
    """Where the source dataset is, as a URI fit to write (see the module docstring)."""
    rel = Path(os.path.relpath(selection.root, out))
    if all(part == ".." for part in rel.parts):
        return rel.as_posix()
    return selection.root.as_uri() if input_paths else None


def description(selection: BidsSelection, model, out: Path, input_paths: bool,
                earlier: dict | None = None) -> dict:
    """The derivative dataset's ``dataset_description.json``; ``earlier`` (the one this
    folder had, written by napari-unet) keeps the models of earlier runs in GeneratedBy."""
    from .. import __version__

    this = {"Name": "napari-unet", "Version": __version__,
            "Description": f"model {model.name} ({model.hash}): {model.task.describe()}"}
    generated = [this] + [g for g in _earlier_generators(earlier) if g != this]
    desc = {"Name": f"napari-unet {model.name}", "BIDSVersion": schema().bids_version,
            "DatasetType": "derivative", "GeneratedBy": generated}
    uri = source_uri(selection, out, input_paths)
    if uri is not None:
        desc["SourceDatasets"] = [{"URL": uri}]
        desc["DatasetLinks"] = {link_name(selection): uri}
    return desc


def _earlier_generators(earlier: dict | None) -> list[dict]:
    items = (earlier or {}).get("GeneratedBy")
    return [g for g in items if isinstance(g, dict) and g.get("Name") == "napari-unet"] \
        if isinstance(items, list) else []


def readme(model) -> str:
    return (f"# napari-unet derivatives\n\nResults of napari-unet's model `{model.name}` "
            f"({model.task.describe()}) for a BIDS dataset, in its subjects' folders, named "
            "by the entities of their source images. Each output's JSON sidecar names its "
            "source (`Sources`, a BIDS URI), the model and the settings. `report.json` lists "
            "every scan of each run and `index.html` shows their QC pictures "
            f"(`sub-*/{bids_names.FIGURES}/`).\n")


def bidsignore() -> str:
    return "\n".join(bids_names.BIDSIGNORE_LINES) + "\n"


def bids_uri(link: str, image: BidsImage) -> str:
    return f"bids:{link}:{image.relpath}"


def sidecar(role: str, image: BidsImage, model, settings: dict, link: str) -> dict:
    """The JSON sidecar of one output (``role`` as in :func:`.bids_names.output_names`)."""
    from .. import __version__

    source = bids_uri(link, image)
    what = {"labels": f"segmentation ({model.task.describe()})",
            "image": "denoised image, on the source's intensity scale",
            "uncertainty": "uncertainty of the model's prediction per voxel, 0 (certain) to "
                           "1 (not at all); not a BIDS file (see .bidsignore)"}
    if role.startswith("probseg:"):
        cls = dict(bids_names.probseg_channels(model.task))[int(role.split(":")[1])]
        text = f"probability of class {cls} ({model.task.class_names[cls]})"
    else:
        text = what[role]
    car = {"Description": f"{text} by napari-unet model {model.name}", "Sources": [source]}
    if (role == "labels" or role.startswith("probseg:")) and not image.get("space"):
        car["SpatialReference"] = source  # the source image's own grid
    if role == "image":
        car["SkullStripped"] = bool(image.meta("SkullStripped") or False)
    car["Model"] = {"Name": model.name, "Hash": model.hash, "Task": model.task.kind}
    car["Software"] = {"Name": "napari-unet", "Version": __version__}
    car["Settings"] = settings
    return car


def output_paths(image: BidsImage, task, settings) -> dict[str, str]:
    """Relative output path -> role for one image: each image with its JSON sidecar
    (``sidecar:<role>``), the class table, and the QC picture when asked."""
    by_path = {}
    for role, rel in bids_names.output_names(image, task, settings.probabilities).items():
        by_path[rel] = role
        if role != "tsv":
            by_path[bids_names.sidecar(rel)] = f"sidecar:{role}"
    if settings.qc:
        by_path[bids_names.figure_name(image, next(iter(by_path)))] = "qc"
    return by_path


def text_outputs(image: BidsImage, model, job, names: dict[str, str],
                 written: dict) -> dict[str, str]:
    """Path -> text of the sidecars of the images ``written`` and of the class table."""
    settings = job.settings.output_settings()
    role_of = {role: rel for rel, role in names.items()}
    texts = {}
    for rel, role in names.items():
        if role == "tsv":
            texts[rel] = dseg_tsv(model.task)
        elif role.startswith("sidecar:"):
            of = role.removeprefix("sidecar:")
            if role_of.get(of) in written:  # an image that was written
                car = sidecar(of, image, model, settings, job.bids_link or RAW_LINK)
                texts[rel] = to_json(car)
    return texts


def dseg_tsv(task) -> str:
    """The class table of a segmentation: index, name, and the BIDS label of the class."""
    labels = bids_names.class_labels(list(task.class_names))
    rows = ["index\tname\tabbreviation"]
    rows += [f"{i}\t{_cell(name)}\t{label}"
             for i, (name, label) in enumerate(zip(task.class_names, labels, strict=True))]
    return "\n".join(rows) + "\n"


def _cell(text: str) -> str:
    return " ".join(str(text).split()) or "n/a"


def to_json(data: dict) -> str:
    return json.dumps(data, indent=2) + "\n"


def check_description(texts) -> None:
    """Refuse (exit 2) an output folder whose ``dataset_description.json`` napari-unet did
    not write: it is another dataset (the source itself, or another tool's derivatives)."""
    from .outdir import OutputFolderError
    from .owned import NotOurs

    try:
        texts.check(DESCRIPTION)
    except NotOurs:
        raise OutputFolderError(
            f"the output folder holds a {DESCRIPTION} napari-unet did not write (another BIDS "
            "dataset: the source itself, or another tool's derivatives); choose a folder of "
            "its own, e.g. <dataset>/derivatives/napari-unet") from None


def write_dataset_files(texts, selection: BidsSelection, model, out: Path, settings) -> str:
    """Write the derivative dataset's description, README and .bidsignore (a README or
    .bidsignore a person wrote or edited is left as it is); returns the source's name in
    BIDS URIs."""
    from .owned import NotOurs

    try:
        earlier = json.loads(texts.read(DESCRIPTION) or "null")
    except ValueError:
        earlier = None
    desc = description(selection, model, out, settings.input_paths,
                       earlier if isinstance(earlier, dict) else None)
    texts.write(DESCRIPTION, to_json(desc))
    for name, text in ((README, readme(model)), (BIDSIGNORE, bidsignore())):
        with contextlib.suppress(NotOurs):  # a person's own file: theirs to keep
            texts.write(name, text)
    return link_name(selection)


def report_section(selection: BidsSelection | None) -> dict | None:
    """What report.json says of a BIDS run: the query that chose the images (no path)."""
    if selection is None:
        return None
    return {"query": selection.query, "images": len(selection.images),
            "source_dataset_type": "derivative" if selection.derivative else "raw"}
