"""The model choice shared by the widgets: a bundled model, a model file, or a new model.

The task is read from the model file's header (no weights loaded) and explained in plain
words; the class count is only offered for a new segmentation model, because a trained
model's outputs fix it (and denoising has no classes at all). The picker's fields go into
the host widget's form (so their labels line up with the others).
"""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import ComboBox, FileEdit, Label, LineEdit, SpinBox

from ..errors import NapariUnetError
from .dock import compact, wrapping

FILE = "Model file..."
NEW = "New model"


class ModelPicker:
    """Pick a model; ``task(in_channels)`` and ``loader(in_channels)`` follow the choice."""

    def __init__(self, allow_new: bool = True, label: str = "model"):
        from ..model.checkpoint import bundled_models

        choices = [*bundled_models(), FILE] + ([NEW] if allow_new else [])
        self.source = compact(ComboBox(
            label=label, choices=choices, value=choices[0],
            tooltip="a model that comes with napari-unet, a model file (.safetensors) "
                    "you trained or received, or a new untrained model"))
        self.file = FileEdit(label="model file", mode="r", filter="*.safetensors")
        self.kind = ComboBox(label="task", choices=["segment", "denoise"], value="segment")
        self.classes = SpinBox(label="classes", min=1, max=255, value=2,
                               tooltip="1: one structure against the background; "
                                       "2 or more: that many classes, background included")
        self.class_names = LineEdit(label="class names",
                                    tooltip="comma-separated, background first (optional)")
        self.info = wrapping(Label(label="does"))
        self.widgets = [self.source, self.file, self.kind, self.classes, self.class_names,
                        self.info]
        self.error: str | None = None
        # the host form shows/hides a field with its label (DockWidget.set_shown)
        self.set_shown = lambda widget, shown: setattr(widget, "visible", shown)
        self._header_cache: dict[str, object] = {}
        for w in (self.source, self.file, self.kind, self.classes, self.class_names):
            w.changed.connect(self.update)

    @property
    def is_new(self) -> bool:
        return self.source.value == NEW

    def ref(self) -> str:
        """Bundled name or file path of the chosen model (not for new models)."""
        if self.source.value == FILE:
            path = Path(self.file.value)
            if not str(self.file.value) or path.is_dir() or str(path) == ".":
                raise NapariUnetError("choose a model file (.safetensors)")
            return str(path)
        return str(self.source.value)

    def task(self, in_channels: int = 1):
        """The TaskSpec of the chosen model; :class:`NapariUnetError` explains problems."""
        from ..model.tasks import TaskSpec, make_task

        if self.is_new:
            n = None if self.kind.value == "denoise" else int(self.classes.value)
            names = [s.strip() for s in self.class_names.value.split(",") if s.strip()]
            return make_task(self.kind.value, in_channels=in_channels, n_classes=n,
                             class_names=names or None)
        return TaskSpec.from_dict(self._header()["task"])

    def _header(self) -> dict:
        from ..model.checkpoint import read_header, resolve_model_path

        path = resolve_model_path(self.ref())
        key = f"{path}:{path.stat().st_mtime_ns}"
        if key not in self._header_cache:
            self._header_cache = {key: read_header(path)}
        return self._header_cache[key]

    def default_axis(self) -> int:
        return 0 if self.is_new else int(self._header().get("default_axis", 0))

    def loader(self, in_channels: int = 1, device: str = "auto"):
        """A callable that loads the choice made now; safe to call from a worker thread."""
        from ..model.checkpoint import Model, load_model

        if self.is_new:
            task = self.task(in_channels)
            return lambda: Model.new(task, base=16, name=f"new-{task.kind}").to(_device(device))
        ref = self.ref()
        return lambda: load_model(ref, device=device)

    def update(self, *_):
        """Show the fields that apply and say what the model does (call once in a form)."""
        new, seg = self.is_new, self.kind.value == "segment"
        self.set_shown(self.file, self.source.value == FILE)
        self.set_shown(self.kind, new)
        self.set_shown(self.classes, new and seg)
        self.set_shown(self.class_names, new and seg)
        self.error = None
        try:
            text = self.task().describe()
            header = {} if new else self._header()
            k = int(header.get("slice_context", 0))
            if new:
                text = f"new, untrained: {text}"
            elif k:
                text += f"; 2.5D: each slice with {k} neighbour(s) either side"
            if header.get("default_planes") == "all":
                text += "; made to run along all 3 planes, weighted by what each sees"
        except (NapariUnetError, OSError, ValueError) as exc:
            self.error = str(exc)
            text = f"cannot use this model: {exc}"
            if self.source.value == FILE and str(self.file.value) not in ("", "."):
                from napari.utils.notifications import show_error

                show_error(text)
        self.info.value = text


def _device(device: str):
    from ..devices import resolve_device

    return resolve_device(device)
