"""Training widget: a new segmentation or denoising UNet from layers or files, on a budget.

The fields become a :class:`~napari_unet.training.TrainSettings`; the work is
:func:`~napari_unet.training.train` in the widget's :class:`JobRunner`, whose Metrics
updates feed a live loss/metric plot. Work is never lost: the model is saved to a unique
file in ``~/napari-unet/models`` unless the user picks another, Save writes it (again)
anywhere, and a cancelled run keeps the model trained so far for Save.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)

from ..errors import NapariUnetError
from ..io.formats import scans_from_files
from ..io.new_files import write_new
from . import layers as L
from .dock import DockWidget, auto_choice, compact, wrapping
from .inference_widget import image_layers
from .loss_plot import HEADLINE, LossPlot
from .planes import AUTO, CHOICES, PLANE_TOOLTIP, resolved_axis
from .user_files import AutoPath
from .worker import JobRunner, JobState, Metrics, error_message, report_error

LAYERS, FILES, BIDS = "layers", "files", "BIDS dataset"
POOR_DICE = 0.5


def labels_layers(viewer) -> list:
    import napari

    return [ly for ly in viewer.layers if isinstance(ly, napari.layers.Labels)]


def layer_class_names(layer) -> list[str]:
    """Class names a reader or the inference widget stored in the layer's features."""
    features = getattr(layer, "features", None)
    if features is None or "class" not in features:
        return []
    rows = features.sort_values("index") if "index" in features else features
    return [str(n) for n in rows["class"]]


def class_count(names: list[str], top_label: int | None) -> int | None:
    """Classes for named labels: one per name, or binary when two names meet 0/1 labels."""
    if not names:
        return None
    if len(names) == 2 and top_label is not None and top_label <= 1:
        return 1
    return len(names)


def poor_dice_warning(metrics: dict) -> str | None:
    """Words for a validation Dice too low to trust the model, else None."""
    dice = metrics.get("val_dice")
    if isinstance(dice, int | float) and dice < POOR_DICE:
        return (f"validation Dice {dice:.2f} is under {POOR_DICE}: this model segments the "
                "held-out slices poorly. Train longer, with more labelled slices, or check "
                "that the labels match the scan.")
    return None


class TrainingWidget(DockWidget):
    """Train a model and watch its loss; the model file is the result."""

    def __init__(self, napari_viewer):
        from ..training.settings import NOISE_KINDS

        viewer = napari_viewer
        self.task = ComboBox(label="task", choices=["segment", "denoise"], value="segment")
        self.source = ComboBox(label="data from", choices=[LAYERS, FILES, BIDS], value=LAYERS)
        self.image = compact(ComboBox(label="scan", choices=lambda _w: image_layers(viewer)))
        self.labels_layer = compact(ComboBox(label="labels",
                                             choices=lambda _w: labels_layers(viewer),
                                             tooltip="the correct labels for the scan"))
        self.image_files = FileEdit(label="scan files", mode="rm",
                                    tooltip="NIfTI files, or the files of DICOM series "
                                            "(each series counts as one scan)")
        self.label_files = FileEdit(label="label files", mode="rm",
                                    tooltip="one labels file per scan file, in the same order")
        self.bids_root = FileEdit(label="BIDS dataset", mode="d",
                                  tooltip="the dataset's folder (with dataset_description.json)")
        self.bids_suffix = LineEdit(label="images", value="T1w",
                                    tooltip="BIDS suffixes of the images, comma-separated "
                                            "(T1w, T2w, FLAIR, ...)")
        self.bids_labels = FileEdit(label="labels dataset", mode="d",
                                    tooltip="a derivative dataset whose dseg images are the "
                                            "labels (each pairs with the image of the same "
                                            "subject, session and run)")
        self.classes = auto_choice(
            "classes", [("1 (binary)", 1), *range(2, 33)],
            "from labels: one class per class name, or counted from the labels. "
            "1: one structure against the background; 2 or more: that many classes, "
            "background included", auto="from labels")
        self.class_names = LineEdit(label="class names",
                                    tooltip="comma-separated, background first; taken from "
                                            "the labels layer when it has names")
        self.noise = ComboBox(label="noise", choices=list(NOISE_KINDS), value="gaussian",
                              tooltip="the kind of noise in your scans (MRI: rician)")
        self.noise_level = FloatSpinBox(label="noise level", min=0.005, max=0.5, step=0.005,
                                        value=0.05, tooltip="noise strength as a fraction of "
                                        "the intensity range (0.05 = 5%)")
        self.self_supervised = CheckBox(text="scans are noisy (no clean ones)",
                                        tooltip="learn from the noisy scans themselves "
                                                "(blind-spot training)")
        self.plane = compact(ComboBox(label="slices", choices=list(CHOICES), value=AUTO,
                                      tooltip=PLANE_TOOLTIP))
        self.base = SpinBox(label="model width", min=2, max=128, value=16,
                            tooltip="channels of the first layer: 16 is a good start; "
                                    "wider learns more and runs slower")
        self.context = SpinBox(label="neighbour slices", min=0, max=8, value=0,
                               tooltip="slices either side that go in with each slice "
                                       "(2.5D): 1 lets a denoiser see the same anatomy under "
                                       "independent noise; 0 is plain 2D")
        self.all_planes = CheckBox(text="learn from 3 planes",
                                   tooltip="also cut each scan along its other two planes: "
                                           "about 3x the distinct slices (scans with "
                                           "near-cubic voxels only); the model then "
                                           "predicts along all 3 planes too, averaged")
        self.budget = SpinBox(label="training (s)", min=1, max=86400, value=120,
                              tooltip="how long to train (seconds)")
        self.output = FileEdit(label="save to", mode="w", filter="*.safetensors",
                               tooltip="where the trained model is saved")
        self.train_button = PushButton(text="Train")
        self.runner = JobRunner("UNet training")
        self.plot = LossPlot()
        self.save_button = PushButton(text="Save model", enabled=False,
                                      tooltip="save the last trained model to 'save to'")
        self.status = wrapping(Label(value=""))
        super().__init__(viewer, [
            self.task, self.source, self.image, self.labels_layer, self.image_files,
            self.label_files, self.bids_root, self.bids_suffix, self.bids_labels, self.classes,
            self.class_names, self.noise, self.noise_level,
            self.self_supervised, self.plane, self.base, self.context, self.all_planes,
            self.budget,
            self.output,
            self.train_button, self.runner.panel, self.save_button, self.status])
        self.form.native.layout().insertWidget(len(self.form) - 2, self.plot.canvas)
        self.output_file = AutoPath(self.output, "models", ".safetensors", "unet-segment")
        self.result = None
        self.train_button.changed.connect(self.train)
        self.save_button.changed.connect(self.save)
        self.runner.state_changed.connect(self._on_state)
        for w in (self.task, self.source, self.self_supervised):
            w.changed.connect(self._update)
        self.labels_layer.changed.connect(self._names_from_layer)
        self._update()
        self._names_from_layer()

    @property
    def cancel_button(self):
        return self.runner.panel.cancel_button

    def _update(self, *_):
        """Show only settings that make sense for the task (no classes for denoising)."""
        seg, layers = self.task.value == "segment", self.source.value == LAYERS
        files, bids = self.source.value == FILES, self.source.value == BIDS
        for widget, shown in ((self.image, layers), (self.image_files, files),
                              (self.labels_layer, layers and seg),
                              (self.label_files, files and seg), (self.bids_root, bids),
                              (self.bids_suffix, bids), (self.bids_labels, bids and seg),
                              (self.classes, seg),
                              (self.class_names, seg), (self.noise, not seg),
                              (self.noise_level, not seg), (self.self_supervised, not seg),
                              (self.all_planes, seg),
                              (self.context, not self._blind_spot())):
            self.set_shown(widget, shown)
        self.output_file.propose(f"unet-{self.task.value}")

    def _blind_spot(self) -> bool:
        """Self-supervised denoising: its blind spot takes no neighbour slices."""
        return self.task.value == "denoise" and bool(self.self_supervised.value)

    def _names_from_layer(self, *_):
        names = [] if self.labels_layer.value is None else layer_class_names(
            self.labels_layer.value)
        if names:
            self.class_names.value = ", ".join(names)

    # -- settings ---------------------------------------------------------------------------

    def typed_class_names(self) -> list[str]:
        return [s.strip() for s in str(self.class_names.value).split(",") if s.strip()]

    def settings(self, top_label: int | None = None):
        """The TrainSettings these fields describe (the slice axis is set per scan)."""
        from ..training.settings import TrainSettings

        seg = self.task.value == "segment"
        names = self.typed_class_names() if seg else []
        n = (self.classes.value or class_count(names, top_label)) if seg else None
        return TrainSettings(
            task=self.task.value, n_classes=n, class_names=names or None,
            noise=self.noise.value, noise_level=float(self.noise_level.value),
            self_supervised=self._blind_spot(), base=int(self.base.value),
            slice_context=0 if self._blind_spot() else int(self.context.value),
            all_planes=seg and bool(self.all_planes.value), time_budget=float(self.budget.value),
            name=self._model_name())

    def _model_name(self) -> str | None:
        path = str(self.output.value)
        return None if path in ("", ".") else Path(path).name.removesuffix(".safetensors")

    def data(self) -> tuple[list, list | None]:
        """Training images and labels (Volumes from layers, or file paths)."""
        seg = self.task.value == "segment"
        if self.source.value == BIDS:
            pairs = self.bids_pairs()
            return pairs.images, pairs.labels
        if self.source.value == FILES:
            images = scans_from_files([str(p) for p in (self.image_files.value or [])])
            labels = [str(p) for p in (self.label_files.value or [])] if seg else None
            if not images:
                raise NapariUnetError("choose one or more scan files to train on")
            return images, labels
        if self.image.value is None:
            raise NapariUnetError("open a scan to train on (or switch 'data from' to files)")
        images = [L.volume_from_layer(self.image.value)]
        if not seg:
            return images, None
        if self.labels_layer.value is None:
            raise NapariUnetError("segmentation training needs a Labels layer with the "
                                  "correct labels (or switch 'data from' to files)")
        return images, [L.volume_from_layer(self.labels_layer.value)]

    def bids_pairs(self):
        """The BIDS dataset's images (and, to segment, their labels): the core's pairing."""
        from ..training.bids_pairs import bids_training_pairs

        root = str(self.bids_root.value)
        if root in ("", "."):
            raise NapariUnetError("choose the BIDS dataset's folder to train on")
        labels = str(self.bids_labels.value) if self.task.value == "segment" else None
        if labels in ("", "."):
            raise NapariUnetError("choose the derivative dataset that holds the labels (dseg)")
        suffixes = tuple(s.strip() for s in str(self.bids_suffix.value).split(",") if s.strip())
        return bids_training_pairs(root, labels, suffixes=suffixes or ("T1w",))

    # -- running ----------------------------------------------------------------------------

    def train(self, *_):
        """The Train button: train in a thread worker, plot as it learns, save the model."""
        return self.runner.start(self._prepare, self._finished, unit="s",
                                 on_update=self._on_update, on_cancelled=self._keep_partial)

    def _prepare(self):
        images, labels = self.data()
        top = None
        if labels and self.source.value == LAYERS:
            top = int(labels[0].array.max())
        settings, plane = self.settings(top), self.plane.value
        suffixes = ([s.strip() for s in str(self.bids_suffix.value).split(",") if s.strip()]
                    if self.source.value == BIDS else [])
        output = self.output_file.target()
        self.plot.clear()
        self.result = None

        def fn(job):
            from ..io import read_volume
            from ..training import train

            first = images[0] if not isinstance(images[0], str) else read_volume(images[0])
            s = replace(settings, axis=resolved_axis(plane, first))
            from ..training.bids_pairs import with_bids_provenance

            result = train(images, labels, settings=s, progress=job.progress,
                           cancel=job.cancelled, on_metrics=lambda e: job.post(Metrics(e)))
            with_bids_provenance(result.model, suffixes)  # predict's default for BIDS data
            return result, *_save_quietly(result.model, output)

        return fn

    def _on_update(self, update) -> None:
        if isinstance(update, Metrics):
            self.plot.add(update.entry)

    def _finished(self, out) -> None:
        from ..training.planes import one_plane_note

        result, written, save_error = out
        self.result = result
        if written is not None:
            self.output_file.saved(written)
        if not self.plot.history:
            for entry in result.history:
                self.plot.add(entry)
        metrics = ", ".join(f"validation {k.removeprefix('val_')} {result.metrics[k]:.3g}"
                            for k in HEADLINE
                            if isinstance(result.metrics.get(k), int | float))
        if save_error is None and result.model.path:
            where = f"saved to {result.model.path}"
        else:
            where = "NOT saved: press Save model"
            if save_error is not None:
                report_error("Saving the trained model", save_error)
        self.status.value = "; ".join(part for part in (
            f"{result.iterations} iterations in {result.seconds:.0f} s", metrics, where,
            one_plane_note(result.model.meta.provenance)) if part)
        warning = poor_dice_warning(result.metrics)
        if warning:
            from napari.utils.notifications import show_warning

            show_warning(warning)
            self.status.value += f". Warning: {warning}"

    def _keep_partial(self, exc) -> None:
        partial = getattr(exc, "partial", None)
        if partial is None:
            return
        self.result = partial
        self.status.value = (f"cancelled after {partial.iterations} iterations: the model "
                             "trained so far is kept but not saved; press Save model to "
                             "keep it")

    def save(self, *_) -> Path | None:
        """Save the last trained (or cancelled) model to the 'save to' file."""
        if self.result is None:
            return None
        try:
            path = self.output_file.target()
            if path is None:
                raise NapariUnetError("choose a file to save the model to")
            path, _ = write_new(path, self.result.model.save)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            report_error("Saving the model", exc)
            return None
        self.output_file.saved(path)
        self.status.value = f"saved to {path}"
        return path

    def _on_state(self, state: JobState) -> None:
        running = state is JobState.RUNNING
        self.train_button.enabled = not running
        self.save_button.enabled = not running and self.result is not None
        if running:
            self.status.value = "training..."
        elif state is JobState.FAILED:
            self.status.value = f"training failed: {error_message(self.runner.error)}"
        elif state is JobState.CANCELLED and self.result is None:
            self.status.value = "training cancelled"


def _save_quietly(model, path: Path | None) -> tuple[Path | None, BaseException | None]:
    """Save in the worker, beside a file already there (``io.new_files``); returns where
    it went, or the failure (reported on the GUI thread) so the model is kept."""
    if path is None:
        return None, None
    try:
        written, _ = write_new(path, model.save)
    except Exception as exc:  # noqa: BLE001 - reported on the GUI thread
        return None, exc
    return written, None
