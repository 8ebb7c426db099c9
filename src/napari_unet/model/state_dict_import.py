"""Bring your own weights: turn a plain PyTorch UNet ``state_dict`` into a model file.

Two key layouts are recognised: the original PyTorch UNet (``inc.conv.conv.0.weight``,
``down1.mpconv.1.conv.0.weight``, ``up1.conv.conv.0.weight``, ``outc.conv.weight``) and
milesial's Pytorch-UNet (``inc.double_conv.*``, ``down1.maxpool_conv.1.double_conv.*``,
``up1.up.*``, ``up1.conv.double_conv.*``). Width and upsampling are read off the
tensors, and the network they describe is checked against ``limits`` before it is built
(a 3 MB file can describe a 360 GB UNet).
Files are read with ``torch.load(weights_only=True)`` only: pickled code never runs.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from ..errors import ModelFileError
from ..limits import check_allocation
from .checkpoint import Model, ModelMeta, net_inputs
from .normalize import Normalization
from .tasks import TaskSpec
from .unet import Architecture, UNet, check_size

_MILESIAL = [
    (re.compile(r"^inc\.double_conv\."), "inc.conv.conv."),
    (re.compile(r"^(down\d)\.maxpool_conv\.1\.double_conv\."), r"\1.mpconv.1.conv."),
    (re.compile(r"^(up\d)\.conv\.double_conv\."), r"\1.conv.conv."),
]
_WRAPPERS = ("state_dict", "model_state_dict", "model", "net")


def file_format(path: Path) -> str:
    """"torch" or "safetensors", from the file's first bytes, never its name: a pickle
    renamed ``.safetensors`` is still a pickle (``checkpoint.is_torch_head`` for what
    torch.save writes: a zip archive or a bare pickle)."""
    from .checkpoint import is_torch_head

    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and not is_torch_head(head):
        return "safetensors"  # 8-byte header length, then the JSON header
    return "torch"


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read tensors from a PyTorch file (weights only) or a safetensors file, whatever
    its name says."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    check_allocation(path.stat().st_size, f"{path}: the tensors", ModelFileError)
    safetensors = file_format(path) == "safetensors"
    if safetensors:
        _refuse_model_file(path)
    try:
        if safetensors:
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:  # an open file: torch.load picks a format by a path's suffix
            with open(path, "rb") as f:
                obj = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelFileError(
            f"{path}: refused: the file holds more than plain tensors (pickled objects or "
            f"code), which napari-unet never unpickles ({str(exc).splitlines()[0]})") from exc
    except Exception as exc:  # torch raises many types for damaged archives
        raise ModelFileError(f"{path}: not a readable PyTorch state_dict ({exc})") from exc
    return _unwrap(obj, path)


def _refuse_model_file(path: Path) -> None:
    """A napari-unet model file needs no import: say so (not "unknown key layout")."""
    from .checkpoint import is_model_file

    if is_model_file(path):
        raise ModelFileError(f"{path}: already a napari-unet model file; use it as it is "
                             "(napari-unet info shows what it does)")


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    for key in _WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelFileError(f"{path}: expected a state_dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def detect_layout(state: dict[str, torch.Tensor], path: Path | str = "state_dict") -> str:
    if any(k.startswith("inc.double_conv.") for k in state):
        return "milesial"
    if any(k.startswith("inc.conv.conv.") for k in state):
        return "original"
    sample = ", ".join(repr(k)[:60] for k in list(state)[:3])
    raise ModelFileError(
        f"{path}: unknown UNet key layout (expected 'inc.conv.conv.*' of the original UNet or "
        f"'inc.double_conv.*' of milesial's Pytorch-UNet; found {sample}, ...)")


def to_native_keys(state: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    if layout == "original":
        return dict(state)
    out = {}
    for key, value in state.items():
        for pattern, repl in _MILESIAL:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def infer_architecture(state: dict[str, torch.Tensor], layout: str,
                       path: Path | str = "state_dict") -> Architecture:
    """Channels, width and upsampling read off the tensors."""
    try:
        first = state["inc.conv.conv.0.weight"]
        out = state["outc.conv.weight"]
    except KeyError as exc:
        raise ModelFileError(f"{path}: lacks {exc.args[0]!r}: not a complete UNet") from exc
    if first.ndim != 4 or out.ndim != 4 or min(first.shape[:2]) < 1 or out.shape[0] < 1:
        raise ModelFileError(f"{path}: the first and last convolutions have shapes "
                             f"{tuple(first.shape)} and {tuple(out.shape)}: not a 2D UNet")
    upsampling = "transposed" if "up1.up.weight" in state else "bilinear"
    return Architecture(int(first.shape[1]), int(out.shape[0]), int(first.shape[0]),
                        upsampling, layout)


def import_state_dict(
    path: str | os.PathLike,
    task: TaskSpec,
    name: str | None = None,
    normalization: Normalization | None = None,
    default_axis: int = 0,
    patch_size: tuple[int, int] = (256, 256),
    pixel_spacing: tuple[float, float] | None = None,
    slice_context: int = 0,
    class_codes=None,
) -> Model:
    """A :class:`Model` from a state_dict file; shapes must match the task exactly.
    ``class_codes``: one ``io.class_codes.ClassCode`` (or None) per label value."""
    path = Path(path)
    raw = load_state_dict_file(path)
    layout = detect_layout(raw, path)
    state = to_native_keys(raw, layout)
    arch = infer_architecture(state, layout, path)
    want_in = net_inputs(task, slice_context)
    if arch.in_channels != want_in or arch.out_channels != task.out_channels:
        context = f" and {slice_context} neighbour slice(s) either side" if slice_context else ""
        raise ModelFileError(
            f"{path}: the weights have {arch.in_channels} input and {arch.out_channels} output "
            f"channels, but {task.describe()} with {task.in_channels} input channel(s)"
            f"{context} needs {want_in} -> {task.out_channels}; fix "
            "--in-channels/--slice-context/--classes/--task")
    check_size(arch, patch_size, str(path), ModelFileError)
    net = UNet.to_load(arch)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = "; ".join(str(exc).splitlines()[1:4]).strip()
        raise ModelFileError(f"{path}: the tensors do not fit a {layout} UNet with base "
                             f"width {arch.base} ({detail})") from exc
    provenance = {"imported_from": path.name, "source_layout": layout}
    meta = ModelMeta(arch, task, normalization or Normalization(), name or path.stem,
                     default_axis, patch_size, provenance,
                     pixel_spacing=None if pixel_spacing is None else tuple(pixel_spacing),
                     slice_context=slice_context,
                     class_codes=None if class_codes is None else tuple(class_codes))
    return Model(net.eval(), meta, None)
