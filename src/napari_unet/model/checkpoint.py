"""Model files: safetensors weights plus JSON metadata, one file per model, never unpickled.

The metadata travels in the safetensors header (``__metadata__["napari_unet"]``) so a
model is one self-describing file: architecture, task rules, the intensity normalisation
used in training, default slice axis and patch size, the pixel spacing it learned at,
provenance, the classes' coded concepts and colours for DICOM SEG (``class_codes``), the
training scans' normalised intensities (``intensity_profile``) and a content hash over
weights, architecture, task, normalisation, pixel spacing, default planes, class codes and
the intensity profile (checked on load: a corrupted file is refused with a message naming
it).

A model file can come from anyone: on load every metadata field is checked (types,
ranges, no unknown field: ``meta_schema``), a missing hash is an error (never a skipped
check), and the network's size (weights and one patch's activations) is checked against
``limits`` before anything is built or read into memory.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import ModelFileError, NapariUnetError, SettingsError, TaskError
from ..io.class_codes import ClassCode
from ..io.write import atomic_path, make_shareable
from ..limits import check_allocation
from .intensity_profile import IntensityProfile
from .meta_schema import FORMAT, FORMAT_VERSION, MetaFieldError, check_metadata
from .normalize import Normalization
from .tasks import TaskSpec
from .unet import Architecture, UNet, check_size

SUFFIX = ".safetensors"
MAX_HEADER_BYTES = 16 * 2**20  # a UNet's tensor list and metadata take a few KB
MAX_SLICE_CONTEXT = 8  # neighbours either side; the schema allows no more
DEFAULT_PLANES = ("one", "all")  # ModelMeta.default_planes; the schema allows no other


def net_inputs(task: TaskSpec, slice_context: int) -> int:
    """The net's input channels: the scan's, for the slice and each of its neighbours."""
    return task.in_channels * (2 * slice_context + 1)
BUNDLED_DIR = Path(__file__).parent / "bundled"


@dataclass(frozen=True)
class ModelMeta:
    """Everything about a model except its weights."""

    architecture: Architecture
    task: TaskSpec
    normalization: Normalization = field(default_factory=Normalization)
    name: str = "unnamed"
    default_axis: int = 0
    patch_size: tuple[int, int] = (256, 256)
    provenance: dict = field(default_factory=dict)
    hash: str = ""
    # in-plane mm (rows, columns) of the slices it learned from; predict resamples slices
    # to it and the outputs back (None: run at every scan's own pixel spacing)
    pixel_spacing: tuple[float, float] | None = None
    # neighbour slices either side that go in as extra channels with each slice (2.5D);
    # the net takes (2k+1) x the scan's channels and predicts the middle slice
    slice_context: int = 0
    # the planes predict runs along by default: "all" averages the class probabilities of
    # the axial, coronal and sagittal slices (a model that learned from all three)
    default_planes: str = "one"
    # the training scans' normalised intensities, so results can say how unlike them a
    # scan is (quality scores); None: a model made before they were recorded
    intensity_profile: IntensityProfile | None = None
    # per label value (background first), what a DICOM SEG segment says the class is and
    # its colour (``io.class_codes``); None where a class has none, or no field at all
    class_codes: tuple[ClassCode | None, ...] | None = None

    @property
    def net_in_channels(self) -> int:
        return net_inputs(self.task, self.slice_context)

    def __post_init__(self):
        if self.class_codes is not None and all(c is None for c in self.class_codes):
            object.__setattr__(self, "class_codes", None)  # no codes: no field, same hash
        if self.default_axis not in (0, 1, 2):
            raise SettingsError(f"default axis must be 0, 1 or 2 (got {self.default_axis})")
        if len(self.patch_size) != 2 or min(self.patch_size) < 1:
            raise SettingsError(f"patch size must be two sizes >= 1 (got {self.patch_size})")
        if self.pixel_spacing is not None and (len(self.pixel_spacing) != 2 or not all(
                0 < float(v) < float("inf") for v in self.pixel_spacing)):
            raise SettingsError(f"pixel spacing must be two sizes > 0 mm (got "
                                f"{self.pixel_spacing})")
        if self.default_planes not in DEFAULT_PLANES:
            raise SettingsError(f"default planes must be one of {', '.join(DEFAULT_PLANES)} "
                                f"(got {self.default_planes!r})")
        if not 0 <= self.slice_context <= MAX_SLICE_CONTEXT:
            raise SettingsError(f"slice context must be 0..{MAX_SLICE_CONTEXT} neighbour "
                                f"slices either side (got {self.slice_context})")
        if self.architecture.in_channels != self.net_in_channels:
            context = (f" ({self.task.in_channels} x {2 * self.slice_context + 1} slices)"
                       if self.slice_context else "")
            raise TaskError(
                f"architecture has {self.architecture.in_channels} input channels but the "
                f"task expects {self.net_in_channels}{context}"
            )
        if self.class_codes is not None and len(self.class_codes) != self.task.n_labels:
            raise TaskError(f"{len(self.class_codes)} class codes for {self.task.n_labels} "
                            "label values; give one per class (background first), or none")
        if self.architecture.out_channels != self.task.out_channels:
            raise TaskError(
                f"architecture has {self.architecture.out_channels} output channels but a "
                f"{self.task.describe()} needs {self.task.out_channels}"
            )

    def to_dict(self) -> dict:
        d = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "architecture": self.architecture.to_dict(),
            "task": self.task.to_dict(),
            "normalization": self.normalization.to_dict(),
            "default_axis": self.default_axis,
            "patch_size": list(self.patch_size),
            "provenance": self.provenance,
            "hash": self.hash,
        }
        if self.pixel_spacing is not None:
            d["pixel_spacing"] = [float(v) for v in self.pixel_spacing]
        if self.slice_context:
            d["slice_context"] = self.slice_context
        if self.default_planes != "one":
            d["default_planes"] = self.default_planes
        if self.intensity_profile is not None:
            d["intensity_profile"] = self.intensity_profile.to_dict()
        if self.class_codes is not None:
            d["class_codes"] = codes_json(self.class_codes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelMeta:
        return cls(
            architecture=Architecture.from_dict(d["architecture"]),
            task=TaskSpec.from_dict(d["task"]),
            normalization=Normalization.from_dict(d["normalization"]),
            name=d.get("name", "unnamed"),
            default_axis=int(d.get("default_axis", 0)),
            patch_size=tuple(int(v) for v in d.get("patch_size", (256, 256))),
            provenance=d.get("provenance", {}),
            hash=d.get("hash", ""),
            pixel_spacing=(None if d.get("pixel_spacing") is None
                           else tuple(float(v) for v in d["pixel_spacing"])),
            slice_context=int(d.get("slice_context", 0)),
            default_planes=d.get("default_planes", "one"),
            intensity_profile=(None if d.get("intensity_profile") is None
                               else IntensityProfile.from_dict(d["intensity_profile"])),
            class_codes=(None if d.get("class_codes") is None else tuple(
                None if c is None else ClassCode.from_dict(c) for c in d["class_codes"])),
        )


def codes_json(codes) -> list:
    return [None if c is None else c.to_dict() for c in codes]


class Model:
    """A UNet plus its metadata: what ``load_model`` returns and ``predict`` takes."""

    def __init__(self, net: UNet, meta: ModelMeta, path: Path | None = None):
        self.net = net
        self.meta = meta
        self.path = path

    @property
    def task(self) -> TaskSpec:
        return self.meta.task

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def hash(self) -> str:
        return self.meta.hash or content_hash(self.net.state_dict(), self.meta)

    @classmethod
    def new(cls, task: TaskSpec, base: int = 16, upsampling: str = "bilinear",
            normalization: Normalization | None = None, name: str = "unnamed",
            **meta_fields) -> Model:
        """A freshly initialised model whose channels follow the task rules."""
        inputs = net_inputs(task, int(meta_fields.get("slice_context", 0)))
        arch = Architecture(inputs, task.out_channels, base, upsampling)
        meta = ModelMeta(arch, task, normalization or Normalization(), name, **meta_fields)
        return cls(UNet.from_architecture(arch), meta)

    def save(self, path: str | os.PathLike, **provenance) -> Path:
        path = Path(path)
        self.meta = replace(self.meta, provenance={**self.meta.provenance, **provenance})
        self.meta = save_model(path, self.net, self.meta)
        self.path = path
        return path

    def to(self, device) -> Model:
        self.net.to(device)
        return self

    def __repr__(self) -> str:
        return f"Model({self.name!r}, {self.task.describe()}, hash={self.hash[:12]})"


def content_hash(state: dict[str, torch.Tensor], meta: ModelMeta) -> str:
    """sha256 over tensors (sorted by name) and the parts of metadata that change outputs."""
    h = hashlib.sha256()
    ident = {"a": meta.architecture.to_dict(), "t": meta.task.to_dict(),
             "n": meta.normalization.to_dict()}
    if meta.pixel_spacing is not None:  # older files (no spacing) keep their hashes
        ident["s"] = [float(v) for v in meta.pixel_spacing]
    if meta.slice_context:  # likewise 2D models
        ident["c"] = meta.slice_context
    if meta.default_planes != "one":  # and models that predict along one plane
        ident["v"] = meta.default_planes
    if meta.intensity_profile is not None:  # changes the quality scores of its results
        ident["i"] = meta.intensity_profile.to_dict()
    if meta.class_codes is not None:  # and models whose classes carry no codes
        ident["k"] = codes_json(meta.class_codes)
    h.update(json.dumps(ident, sort_keys=True).encode())
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + h.hexdigest()


def save_model(path: str | os.PathLike, net: torch.nn.Module, meta: ModelMeta) -> ModelMeta:
    """Write atomically (temp file + rename); returns the metadata with its hash filled."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    prov = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "software": f"napari-unet {__version__}", **meta.provenance}
    meta = replace(meta, provenance=prov)
    meta = replace(meta, hash=content_hash(state, meta))
    with atomic_path(path, SUFFIX) as tmp:  # temp file + rename: never a partial model
        save_file(state, str(tmp), metadata={"napari_unet": json.dumps(meta.to_dict())})
        make_shareable(tmp)  # a model file is for sharing
    return meta


def stamp_intensity_profile(path: str | os.PathLike,
                            profile: IntensityProfile | None) -> ModelMeta:
    """Rewrite a model file with ``profile`` as its ``intensity_profile`` and the content
    hash that follows; the weights and every other field stay as they were (for files
    made before profiles were recorded). Atomic; returns the new metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    meta, state = read_model_file(path)
    meta = replace(meta, intensity_profile=profile)
    meta = replace(meta, hash=content_hash(state, meta))
    with atomic_path(path, SUFFIX) as tmp:
        save_file(state, str(tmp), metadata={"napari_unet": json.dumps(meta.to_dict())})
        make_shareable(tmp)
    return meta


def read_model_file(path: str | os.PathLike) -> tuple[ModelMeta, dict[str, torch.Tensor]]:
    """Metadata and weights of a model file; :class:`ModelFileError` names bad files.

    Order matters: the metadata is checked (fields, then the size of the network it
    describes) before the weights are read, and the weights against the hash after.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_meta(path)
    check_size(meta.architecture, meta.patch_size, str(path), ModelFileError)
    check_allocation(path.stat().st_size, f"{path}: the weights", ModelFileError)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: not a readable napari-unet model file ({exc})") from exc
    if content_hash(state, meta) != meta.hash:
        raise ModelFileError(f"{path}: content hash mismatch, the file is corrupted or was "
                             "edited; re-export or re-download it")
    return meta, state


def read_meta(path: str | os.PathLike) -> ModelMeta:
    """The checked metadata of a model file, without reading the weights."""
    path = Path(path)
    meta_dict = read_header(path)
    try:
        return ModelMeta.from_dict(meta_dict)
    except (NapariUnetError, KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: invalid model metadata ({exc})") from exc


def read_header(path: str | os.PathLike) -> dict:
    """The JSON metadata alone, read without touching the weights; every field checked
    (``meta_schema``), so callers may use any field they find."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise _not_a_model(path, raw, "file is truncated (no safetensors header)")
        n = int(np.frombuffer(raw, dtype="<u8")[0])
        if n > path.stat().st_size - 8:
            raise _not_a_model(path, raw, "file is truncated or not a safetensors file")
        if n > MAX_HEADER_BYTES:
            raise ModelFileError(f"{path}: a safetensors header of {n:,} bytes is not a "
                                 "napari-unet model's")
        try:
            header = json.loads(f.read(n))
            meta = json.loads(header["__metadata__"]["napari_unet"])
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise ModelFileError(f"{path}: not a napari-unet model file (no metadata)") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise ModelFileError(f"{path}: not a napari-unet model file (format {fmt!r})")
    try:
        check_metadata(meta)
    except MetaFieldError as exc:
        raise ModelFileError(f"{path}: invalid model metadata: {exc}") from exc
    return meta


def is_model_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a regular file holding napari-unet model metadata (what
    ``--overwrite`` may replace); a link or any other file is not."""
    import stat

    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        read_header(path)
    except (OSError, ModelFileError):
        return False
    return True


_TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".pkl", ".tar")
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save: a zip archive, or a bare pickle


def is_torch_head(head: bytes) -> bool:
    """Whether a file's first bytes are what ``torch.save`` writes (zip, or a pickle)."""
    return head.startswith(_TORCH_MAGIC)


def _not_a_model(path: Path, head: bytes, what: str) -> ModelFileError:
    """The error for a file that is no safetensors file; PyTorch weights are pointed to
    ``napari-unet import``, the way to bring them in."""
    if path.suffix.lower() in _TORCH_SUFFIXES or is_torch_head(head):
        what = ("a PyTorch weights file, not a napari-unet model (.safetensors); convert it "
                f"with: napari-unet import {path} -o model.safetensors --task "
                "segment|denoise --in-channels C")
    return ModelFileError(f"{path}: {what}")


def bundled_models() -> dict[str, Path]:
    """Models shipped inside the package, by name."""
    return {p.name[: -len(SUFFIX)]: p for p in sorted(BUNDLED_DIR.glob(f"*{SUFFIX}"))}


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A bundled model's name or a file path -> the file; clear error for neither."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    bundled = bundled_models()
    if str(name_or_path) in bundled:
        return bundled[str(name_or_path)]
    names = ", ".join(bundled) or "none installed"
    raise ModelFileError(f"{name_or_path}: no such model file or bundled model "
                         f"(bundled: {names})")


def load_model(name_or_path: str | os.PathLike, device: str = "auto") -> Model:
    """Load a bundled model by name or a model file by path, in eval mode on ``device``."""
    from ..devices import resolve_device

    path = resolve_model_path(name_or_path)
    meta, state = read_model_file(path)
    net = UNet.to_load(meta.architecture)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not match the stored architecture "
                             f"({str(exc).splitlines()[0]})") from exc
    net.eval().to(resolve_device(device))
    return Model(net, meta, path)
