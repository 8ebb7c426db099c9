"""Inference widget: pick a scan and a model, press Run, get aligned result layers.

The widget only gathers an :class:`~napari_unet.inference.predictor.InferenceSettings` and
turns the core's Prediction into layers; the work is
:func:`~napari_unet.inference.predictor.predict`, run by the widget's :class:`JobRunner`.
"""

from __future__ import annotations

import contextlib

from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, Label, PushButton

from ..errors import NapariUnetError
from . import layers as L
from .continued import continue_problem, edited_slices, labels_layers, start_labels
from .dock import DockWidget, auto_choice, compact, wrapping
from .fitting import FOOTER_LINES
from .model_picker import ModelPicker
from .planes import AUTO, CHOICES, PLANE_TOOLTIP, axis_plane, settings_axis
from .worker import JobRunner, JobState, error_message, toast


def image_layers(viewer) -> list:
    import napari

    return [ly for ly in viewer.layers if isinstance(ly, napari.layers.Image)]


def layer_channels(layer) -> int:
    return layer.data.shape[-1] if getattr(layer, "rgb", False) else 1


FRESH = "none: a new result"


class InferenceWidget(DockWidget):
    """Run a UNet over the slices of an image layer."""

    TAB_TITLE, TAB_ORDER = "Inference", 0

    def __init__(self, napari_viewer):
        from ..devices import available_devices

        viewer = napari_viewer
        self.image = compact(ComboBox(label="scan", choices=lambda _w: image_layers(viewer),
                                      tooltip="the image layer to segment or denoise"))
        self.picker = ModelPicker(allow_new=True)
        self.plane = compact(ComboBox(label="slices", choices=list(CHOICES), value=AUTO,
                                      tooltip=PLANE_TOOLTIP))
        self.planes = compact(ComboBox(
            label="planes", value="auto", choices=[
                ("model's choice", "auto"), ("one plane", "one"), ("all 3, averaged", "all")],
            tooltip="Segmentation along the slices above only, or along all three planes "
                    "with the answers averaged: more accurate, 3-4x slower, for scans "
                    "whose voxels are near cubic. The model was made for one or the other "
                    "(napari-unet info MODEL); made for all three, the model's choice "
                    "weighs each plane by how much of the anatomy its slices show, so "
                    "the thin slices of a partial scan count less, or not at all."))
        self.roi = auto_choice(
            "tile size", (64, 128, 256, 384, 512, 768, 1024),
            "Slices that do not fit in memory are processed in square tiles of this many "
            "pixels. auto: whole slices when they fit, else the model's training tile.")
        self.overlap = FloatSpinBox(label="tile overlap", min=0.0, max=0.9, step=0.05,
                                    value=0.25, tooltip="how much neighbouring tiles "
                                    "overlap (0.25 = a quarter); more is smoother and slower")
        self.batch = auto_choice(
            "batch", (1, 2, 4, 8, 16, 32, 64),
            "How many slices go through the model at once. auto: chosen from free "
            "memory; lower it if the computer runs out of memory.")
        devices = available_devices()
        self.device = compact(ComboBox(label="device", choices=[f"auto ({devices[0]})",
                                                                *devices],
                                       tooltip="where the model runs: a graphics card "
                                               "(cuda, mps) is much faster than the cpu"))
        self.tta = CheckBox(text="flip averaging", value=False,
                            tooltip="Also runs each slice mirrored and averages the "
                                    "answers: a little more accurate, about 4x slower.")
        self.probs = CheckBox(text="probability maps", value=False,
                              tooltip="Adds a hidden layer per class with the model's "
                                      "confidence, and an uncertainty map. The correction "
                                      "widget's Review next uses it.")
        self.start_from = compact(ComboBox(
            label="continue from labels", value=None,
            choices=lambda _w: [(FRESH, None), *((ly.name, ly) for ly in labels_layers(viewer))],
            tooltip="Labels you saved earlier on this scan: the result starts from them, "
                    "and the correction loop counts the slices where they differ from the "
                    "model as your edits (learns from them, never overwrites them)."))
        self.run_button = PushButton(text="Run", tooltip="segment (or denoise) the scan")
        self.status = wrapping(Label(value=""), FOOTER_LINES)
        # the last result's quality score, and why to review it (inference.quality)
        self.quality = wrapping(Label(value=""), FOOTER_LINES)
        self.runner = JobRunner("UNet inference")
        super().__init__(viewer, [self.image, *self.picker.widgets, self.plane, self.planes,
                                  self.roi, self.overlap, self.batch, self.device, self.tta,
                                  self.probs, self.start_from],
                         footer=[self.run_button, self.runner.panel, self.status, self.quality])
        self.last_layers: list = []
        self.after_slices: float | None = None  # last run: seconds after its last slice
        self.picker.set_shown = self.set_shown
        self.picker.update()
        self.run_button.changed.connect(self.run)
        self.runner.state_changed.connect(self._on_state)
        for w in (self.image, self.picker.source, self.picker.file, self.picker.kind,
                  self.picker.classes, self.picker.class_names, self.start_from):
            w.changed.connect(self._check)
        for w in (self.image, self.picker.source, self.picker.file, self.device):
            w.changed.connect(self._warm_up)
        self._check()
        self._warm_up()

    def _warm_up(self, *_):
        """The chosen model's first-run costs, paid in the background while the person
        still picks settings (inference/warmup.py)."""
        from ..inference.predictor import InferenceSettings
        from ..inference.warmup import warm_up_soon

        with contextlib.suppress(NapariUnetError):  # no model chosen yet: nothing to warm
            if not self.picker.is_new and self.picker.error is None:
                layer = self.image.value
                warm_up_soon(self.picker.loader(device=self.device_name()),
                             InferenceSettings(device=self.device_name()),
                             key=(self.picker.ref(), id(layer)),
                             volume=None if layer is None else
                             lambda: L.volume_from_layer(layer))

    @property
    def cancel_button(self):
        return self.runner.panel.cancel_button

    # -- settings ---------------------------------------------------------------------------

    def device_name(self) -> str:
        value = str(self.device.value)
        return "auto" if value.startswith("auto") else value

    def problem(self) -> str | None:
        """Why Run cannot work with these settings (None when it can)."""
        layer = self.image.value
        if layer is None:
            return "open a scan first (File > Open, or File > Open Sample > napari-unet)"
        if self.picker.error:
            return self.picker.error
        if L.shape_problem(layer):
            return L.shape_problem(layer)
        ch = layer_channels(layer)
        try:
            task = self.picker.task(ch)
        except (NapariUnetError, OSError) as exc:
            return str(exc)
        if task.in_channels != ch:
            return (f"the model expects {task.in_channels}-channel images but "
                    f"{layer.name!r} has {ch}; pick another model or image")
        return continue_problem(self.start_from.value, layer)

    def _check(self, *_):
        segments = self._segments()
        if not segments:
            self.start_from.value = None  # a denoiser's result is no labels to continue
        self.set_shown(self.start_from, segments)
        self.set_shown(self.planes, segments)
        reason = self.problem()
        self.status.value = reason or self.caution() or ""
        self.run_button.enabled = reason is None and not self.runner.running

    def _segments(self) -> bool:
        """Whether the chosen model segments (True while that cannot be told)."""
        try:
            return self.picker.task().kind == "segment"
        except (NapariUnetError, OSError):
            return True

    def caution(self) -> str | None:
        """A warning that does not block Run: the scan looks like a label map."""
        layer = self.image.value
        if layer is not None and L.looks_like_labels(layer):
            return (f"note: {layer.name!r} looks like a label map (a few whole-number "
                    "values), not a scan; segmenting or denoising it is rarely useful")
        return None

    def settings(self, volume):
        """The InferenceSettings these fields describe, for ``volume``."""
        from ..inference.predictor import InferenceSettings

        return InferenceSettings(
            axis=settings_axis(self.plane.value, volume), roi_size=self.roi.value or None,
            overlap=float(self.overlap.value), batch_size=self.batch.value or None,
            device=self.device_name(), tta=bool(self.tta.value),
            probabilities=bool(self.probs.value),
            planes=self.planes.value if self._segments() else "auto")

    # -- running ----------------------------------------------------------------------------

    def run(self, *_):
        """The Run button: predict in a thread worker; results become layers."""
        # three planes: one bar over the planes' passes, in % (inference/planes.py)
        unit = "%" if self._segments() and self.planes.value != "one" else "slices"
        return self.runner.start(self._prepare, self._show, unit=unit,
                                 inputs=lambda: (self.image.value, self.start_from.value),
                                 after=lambda: (self.after_slices,))

    def _prepare(self):
        """The work as ``fn(job)``, with everything read from the fields now."""
        reason = self.problem()
        if reason is not None:
            raise NapariUnetError(reason)
        layer = self.image.value
        if self.caution():
            toast("warning", self.caution(), "the scan looks like a label map")
        volume = L.volume_from_layer(layer)
        settings = self.settings(volume)
        load = self.picker.loader(layer_channels(layer), device=settings.device)
        start = self.start_from.value
        saved = (None if start is None
                 else start_labels(start, layer, self.picker.task(layer_channels(layer))))

        def fn(job):
            from ..inference.predictor import predict
            from ..inference.quality import assess

            model = load()
            pred = predict(volume, model, settings, progress=job.progress,
                           cancel=job.cancelled)
            return layer, volume, model, pred, (start, saved), assess(volume, model, pred)

        return fn

    def _show(self, result) -> None:
        layer, volume, model, pred, (start, saved), quality = result
        self.quality.value = quality.summary()
        tuples = L.prediction_layers(pred, layer, model, volume, labels=saved)
        self.last_layers = L.add_or_update(self.viewer, tuples)
        # a layer kept for its edits made napari rename the new one beside it
        kept = [kw["name"] for (_, kw, _), ly in zip(tuples, self.last_layers, strict=True)
                if ly.name != kw["name"] and L.has_edits(self.viewer.layers[kw["name"]])]
        plane = "?"
        with contextlib.suppress(ValueError, StopIteration):
            plane = axis_plane(pred.axis, volume.direction)
        at = ""
        if pred.net_size is not None:  # the slices went through the net resampled
            mm = " x ".join(f"{v:g}" for v in model.meta.pixel_spacing)
            at = f" (run at the model's {mm} mm pixels, results on the scan's grid)"
        how = "weighted" if pred.settings.planes == "auto" else "averaged"
        what = f"{plane} slices" if pred.planes == 1 else f"{pred.planes} planes, {how},"
        self.status.value = (f"{what} in {pred.seconds:.1f} s{at}: "
                             + ", ".join(ly.name for ly in self.last_layers)
                             + "".join(f"; {n!r} has edits and is kept as it was"
                                       for n in kept)
                             + "".join(f"; note: {note}" for note in pred.notes)
                             + self._continued(start, saved, pred))
        if start is not None and start not in self.last_layers:
            start.visible = False  # the result holds the same labels: paint there, not here
        if pred.notes:
            toast("warning", "; ".join(pred.notes), "UNet inference: see its notes")

    @staticmethod
    def _continued(start, saved, pred) -> str:
        if saved is None:
            return ""
        n = edited_slices(saved, pred.labels, pred.axis)
        differ = ("slice differs from the model and counts as your edit" if n == 1 else
                  "slices differ from the model and count as your edits")
        return f"; started from {start.name!r}: {n} {differ}"

    def _on_state(self, state: JobState) -> None:
        if state is JobState.DONE:  # what comes after the slices (the layers), for next time
            self.after_slices = self.runner.panel.seconds_after(0)
        running = state is JobState.RUNNING
        self.run_button.enabled = not running and self.problem() is None
        if running:
            self.status.value = f"running {self.picker.source.value}..."
            self.quality.value = ""
        elif state is JobState.CANCELLED:
            self.status.value = (f"cancelled{self.runner.cancelled_because}: no layer was "
                                 "changed")
        elif state is JobState.FAILED:
            self.status.value = f"failed: {error_message(self.runner.error)}"
