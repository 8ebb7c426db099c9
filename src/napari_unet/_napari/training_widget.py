"""Training widget: a new segmentation or denoising UNet from layers or files, on a budget.

Settings become a :class:`napari_unet.training.TrainSettings`; the work is
:func:`napari_unet.training.train` in a thread_worker, whose ``on_metrics`` feeds a live
loss/metric plot. The trained model is saved to the chosen file.
"""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
)

from ..errors import NapariUnetError
from . import layers as L
from .inference_widget import image_layers
from .loss_plot import LossPlot
from .worker import Job

LAYERS, FILES = "layers", "files"


def labels_layers(viewer) -> list:
    import napari

    return [ly for ly in viewer.layers if isinstance(ly, napari.layers.Labels)]


class TrainingWidget(Container):
    """Train a model and watch its loss; the model file is the result."""

    def __init__(self, viewer):
        from ..training.settings import NOISE_KINDS

        self.viewer = viewer
        self.task = ComboBox(label="task", choices=["segment", "denoise"], value="segment")
        self.source = ComboBox(label="data from", choices=[LAYERS, FILES], value=LAYERS)
        self.image = ComboBox(label="image", choices=lambda _w: image_layers(viewer))
        self.labels_layer = ComboBox(label="labels", choices=lambda _w: labels_layers(viewer))
        self.image_files = FileEdit(label="image files", mode="rm")
        self.label_files = FileEdit(label="label files", mode="rm")
        self.classes = SpinBox(label="classes", min=0, max=255, value=0,
                               tooltip="0 = from the labels; 1 = binary; N >= 2 = N classes")
        self.noise = ComboBox(label="noise", choices=list(NOISE_KINDS), value="gaussian")
        self.noise_level = FloatSpinBox(label="noise level", min=0.005, max=0.5, step=0.005,
                                        value=0.05, tooltip="fraction of the intensity range")
        self.self_supervised = CheckBox(text="self-supervised (images are noisy scans)")
        self.axis = ComboBox(label="slice axis", choices=[0, 1, 2], value=0)
        self.base = SpinBox(label="base width", min=2, max=128, value=16)
        self.budget = SpinBox(label="time budget (s)", min=1, max=86400, value=120)
        self.output = FileEdit(label="save model to", mode="w", filter="*.safetensors")
        self.train_button = PushButton(text="Train")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        super().__init__(widgets=[self.task, self.source, self.image, self.labels_layer,
                                  self.image_files, self.label_files, self.classes, self.noise,
                                  self.noise_level, self.self_supervised, self.axis, self.base,
                                  self.budget, self.output, self.train_button,
                                  self.cancel_button, self.status])
        self.plot = LossPlot()
        self.native.layout().addWidget(self.plot.canvas)
        self.job = Job(self._on_state, desc="UNet training")
        self.result = None
        self.train_button.changed.connect(self.train)
        self.cancel_button.changed.connect(self.job.cancel)
        for w in (self.task, self.source):
            w.changed.connect(self._update)
        viewer.layers.events.inserted.connect(self.reset_choices)
        viewer.layers.events.removed.connect(self.reset_choices)
        self._update()

    def _update(self, *_):
        """Show only settings that make sense for the task (no classes for denoising)."""
        seg, layers = self.task.value == "segment", self.source.value == LAYERS
        self.image.visible, self.image_files.visible = layers, not layers
        self.labels_layer.visible = layers and seg
        self.label_files.visible = not layers and seg
        self.classes.visible = seg
        for w in (self.noise, self.noise_level, self.self_supervised):
            w.visible = not seg

    def settings(self):
        from ..training.settings import TrainSettings

        seg = self.task.value == "segment"
        return TrainSettings(
            task=self.task.value, n_classes=(self.classes.value or None) if seg else None,
            noise=self.noise.value, noise_level=float(self.noise_level.value),
            self_supervised=bool(self.self_supervised.value) and not seg,
            axis=int(self.axis.value), base=int(self.base.value),
            time_budget=float(self.budget.value), name=self._model_name())

    def _model_name(self) -> str | None:
        path = str(self.output.value)
        return None if path in ("", ".") else Path(path).name.removesuffix(".safetensors")

    def data(self) -> tuple[list, list | None]:
        """Training images and labels (Volumes from layers, or file paths)."""
        seg = self.task.value == "segment"
        if self.source.value == FILES:
            images = [str(p) for p in (self.image_files.value or [])]
            labels = [str(p) for p in (self.label_files.value or [])] if seg else None
            if not images:
                raise NapariUnetError("choose one or more image files to train on")
            return images, labels
        if self.image.value is None:
            raise NapariUnetError("open a scan to train on (or switch 'data from' to files)")
        images = [L.volume_from_layer(self.image.value)]
        if not seg:
            return images, None
        if self.labels_layer.value is None:
            raise NapariUnetError("segmentation training needs a Labels layer with the "
                                  "ground truth (or switch 'data from' to files)")
        return images, [L.volume_from_layer(self.labels_layer.value)]

    def _job(self):
        from superqt.utils import ensure_main_thread

        settings, (images, labels) = self.settings(), self.data()
        output = None if self._model_name() is None else Path(str(self.output.value))
        self.plot.clear()
        add = ensure_main_thread(self.plot.add)

        def fn(progress, cancel):
            from ..training import train

            result = train(images, labels, settings=settings, progress=progress,
                           cancel=cancel, on_metrics=add)
            if output is not None:
                result.model.save(output)
            return result

        return fn

    def _on_done(self, result) -> None:
        self.result = result
        if not self.plot.history:
            for entry in result.history:
                self.plot.add(entry)
        metrics = ", ".join(f"{k} {v:.3g}" for k, v in result.metrics.items()
                            if isinstance(v, int | float))
        where = f"saved to {result.model.path}" if result.model.path else "not saved"
        self.status.value = (f"{result.iterations} iterations in {result.seconds:.0f} s; "
                             f"{metrics}; {where}")

    def train(self, *_, sync: bool = False):
        """Train (in a thread_worker unless ``sync``); the result is ``self.result``."""
        try:
            fn = self._job()
        except NapariUnetError as exc:
            self.job._fail(exc)
            return None
        if sync:
            return self.job.run_sync(fn, self._on_done, progress=None)
        return self.job.start(fn, self._on_done)

    def run_sync(self):
        return self.train(sync=True)

    def _on_state(self, state: str) -> None:
        running = state == "running"
        self.cancel_button.enabled = running
        self.train_button.enabled = not running
        if state in ("cancelled", "failed"):
            self.status.value = f"training {state}"
        elif running:
            self.status.value = "training..."
