"""Inference widget: pick an image and a model, press Run, get aligned result layers.

The widget only gathers settings and turns the core's Prediction into layers; the work is
:func:`napari_unet.inference.predictor.predict`, run in a napari thread_worker (``run``) or in the
calling thread (``run_sync``, for tests and scripts).
"""

from __future__ import annotations

import contextlib

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
)

from ..errors import NapariUnetError
from . import layers as L
from .model_picker import ModelPicker
from .worker import Job


def image_layers(viewer) -> list:
    import napari

    return [ly for ly in viewer.layers if isinstance(ly, napari.layers.Image)]


def layer_channels(layer) -> int:
    return layer.data.shape[-1] if getattr(layer, "rgb", False) else 1


class InferenceWidget(Container):
    """Run a UNet over the slices of an image layer."""

    def __init__(self, viewer):
        from ..devices import available_devices

        self.viewer = viewer
        self.image = ComboBox(label="image", choices=lambda _w: image_layers(self.viewer))
        self.picker = ModelPicker(allow_new=True)
        self.axis = ComboBox(label="slice axis", choices=["auto", 0, 1, 2], value="auto",
                             tooltip="auto = the model's default axis")
        self.roi = SpinBox(label="ROI size", min=0, max=4096, value=0,
                           tooltip="sliding-window tile size in pixels; 0 = whole slices "
                           "when they fit in memory, else the model's patch size")
        self.overlap = FloatSpinBox(label="overlap", min=0.0, max=0.9, step=0.05, value=0.25)
        self.batch = SpinBox(label="batch size", min=0, max=1024, value=0,
                             tooltip="slices per batch; 0 = chosen from free memory")
        devices = available_devices()
        self.device = ComboBox(label="device", choices=[f"auto ({devices[0]})", *devices])
        self.tta = CheckBox(text="test-time augmentation (flips)", value=False)
        self.probs = CheckBox(text="probabilities and uncertainty", value=False)
        self.status = Label(value="")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        super().__init__(widgets=[self.image, self.picker, self.axis, self.roi, self.overlap,
                                  self.batch, self.device, self.tta, self.probs, self.status,
                                  self.run_button, self.cancel_button])
        self.job = Job(self._on_state, desc="UNet inference")
        self.last_layers: list = []
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.job.cancel)
        for w in (self.image, self.picker.source, self.picker.file, self.picker.kind,
                  self.picker.classes, self.picker.class_names):
            w.changed.connect(self._check)
        viewer.layers.events.inserted.connect(self.reset_choices)
        viewer.layers.events.removed.connect(self.reset_choices)
        self._check()

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
        ch = layer_channels(layer)
        try:
            task = self.picker.task(ch)
        except (NapariUnetError, OSError) as exc:
            return str(exc)
        if task.in_channels != ch:
            return (f"the model expects {task.in_channels}-channel images but "
                    f"{layer.name!r} has {ch}; pick another model or image")
        return None

    def _check(self, *_):
        reason = self.problem()
        self.status.value = "" if reason is None else reason
        self.run_button.enabled = reason is None and not self.job.running
        if reason is None and not self.picker.is_new:
            with contextlib.suppress(NapariUnetError, OSError):
                axis = self.picker.default_axis()
                self.axis.tooltip = f"auto = the model's default axis ({axis})"

    def predict_kwargs(self) -> dict:
        return {
            "axis": self.axis.value,
            "roi_size": self.roi.value or None,
            "overlap": float(self.overlap.value),
            "batch_size": self.batch.value or None,
            "device": self.device_name(),
            "tta": bool(self.tta.value),
            "probabilities": bool(self.probs.value),
        }

    # -- running ----------------------------------------------------------------------------

    def _job(self):
        """The work as ``fn(progress, cancel)``, with everything read from the GUI now."""
        reason = self.problem()
        if reason is not None:
            raise NapariUnetError(reason)
        layer = self.image.value
        volume = L.volume_from_layer(layer)
        kwargs = self.predict_kwargs()
        load = self.picker.loader(layer_channels(layer), device=kwargs["device"])

        def fn(progress, cancel):
            from ..inference.predictor import predict

            model = load()
            pred = predict(volume, model, progress=progress, cancel=cancel, **kwargs)
            return layer, volume, model, pred

        return fn

    def _on_done(self, result) -> None:
        layer, volume, model, pred = result
        self.last_layers = L.add_or_update(self.viewer,
                                           L.prediction_layers(pred, layer, model, volume))
        self.status.value = f"done: {', '.join(ly.name for ly in self.last_layers)}"

    def run_sync(self):
        """Run in the calling thread; returns the result layers (None after an error)."""
        try:
            fn = self._job()
        except NapariUnetError as exc:
            self.job._fail(exc)
            return None
        self.job.run_sync(fn, self._on_done)
        return self.last_layers if self.job.state == "done" else None

    def run(self, *_):
        """Start the job in a thread_worker (the Run button)."""
        try:
            fn = self._job()
        except NapariUnetError as exc:
            self.job._fail(exc)
            return None
        return self.job.start(fn, self._on_done)

    def _on_state(self, state: str) -> None:
        running = state == "running"
        self.cancel_button.enabled = running
        self.run_button.enabled = not running and self.problem() is None
        if state in ("cancelled", "failed"):
            self.status.value = state
        elif running:
            self.status.value = "running..."
