"""Correction loop widget: correct slices with the paint tools, let the model learn, repeat.

The logic is :class:`napari_unet.correction.session.CorrectionSession` (no Qt); this widget binds
a session to a Labels layer made by the inference widget (the session edits the layer's
data in place), shows the edited-slice count live, and runs learning in a thread_worker.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton, SpinBox
from qtpy.QtCore import QTimer

from ..errors import NapariUnetError
from . import layers as L
from .worker import Job

SESSION_KEY = "napari_unet_session"


def result_labels_layers(viewer) -> list:
    import napari

    return [ly for ly in viewer.layers
            if isinstance(ly, napari.layers.Labels) and L.RESULT_KEY in ly.metadata]


def session_for(layer):
    """The layer's correction session, created from its model result on first use."""
    from ..correction.session import CorrectionSession

    session = layer.metadata.get(SESSION_KEY)
    if session is not None:
        return session
    result, volume = layer.metadata[L.RESULT_KEY], L.layer_volume(layer)
    if volume is None:
        raise NapariUnetError(f"{layer.name!r} has no source scan; run the model again")
    data = layer.data
    if not isinstance(data, np.ndarray):
        raise NapariUnetError(f"{layer.name!r} is not an in-memory array")
    session = CorrectionSession(volume, result["model"], result["output"], result["axis"],
                                labels=data, slice_uncertainty=result["slice_uncertainty"],
                                predict_settings=result.get("settings"))
    layer.metadata[SESSION_KEY] = session
    return session


class CorrectionWidget(Container):
    """Edited-slice count, Learn from corrections, Undo, Review next, Save."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.labels_layer = ComboBox(label="labels",
                                     choices=lambda _w: result_labels_layers(viewer),
                                     tooltip="a segmentation made by the UNet inference widget")
        self.edited = Label(value="edited slices: 0")
        self.budget = SpinBox(label="time budget (s)", min=1, max=3600, value=30)
        self.learn_button = PushButton(text="Learn from corrections")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.undo_button = PushButton(text="Undo", enabled=False)
        self.review_button = PushButton(text="Review next")
        self.reviewed = Label(value="reviewed: none")
        self.model_path = FileEdit(label="model file", mode="w", filter="*.safetensors")
        self.save_model_button = PushButton(text="Save model...")
        self.labels_path = FileEdit(label="labels file", mode="w", filter="*.nii.gz *.dcm")
        self.save_labels_button = PushButton(text="Save labels...")
        self.status = Label(value="")
        super().__init__(widgets=[self.labels_layer, self.edited, self.budget, self.learn_button,
                                  self.cancel_button, self.undo_button, self.review_button,
                                  self.reviewed, self.model_path, self.save_model_button,
                                  self.labels_path, self.save_labels_button, self.status])
        self.job = Job(self._on_state, desc="Learning from corrections")
        self._bound = None
        self.learn_button.changed.connect(self.learn)
        self.cancel_button.changed.connect(self.job.cancel)
        self.undo_button.changed.connect(self.undo)
        self.review_button.changed.connect(self.review_next)
        self.save_model_button.changed.connect(self.save_model)
        self.save_labels_button.changed.connect(self.save_labels)
        self.labels_layer.changed.connect(self._bind)
        # napari announces a paint before writing it: recount once the strokes settle
        self._recount = QTimer()
        self._recount.setSingleShot(True)
        self._recount.setInterval(100)
        self._recount.timeout.connect(self.update_count)
        viewer.layers.events.inserted.connect(self.reset_choices)
        viewer.layers.events.removed.connect(self.reset_choices)
        self._bind()

    @property
    def session(self):
        layer = self.labels_layer.value
        return None if layer is None else session_for(layer)

    def _bind(self, *_):
        """Follow paint/fill/erase on the chosen layer to keep the count live."""
        events = ("paint", "labels_update", "data")
        if self._bound is not None:
            for name in events:
                getattr(self._bound.events, name).disconnect(self._schedule_count)
        self._bound = self.labels_layer.value
        if self._bound is not None:
            for name in events:
                getattr(self._bound.events, name).connect(self._schedule_count)
        self.update_count()

    def _schedule_count(self, *_):
        self._recount.start()

    def update_count(self, *_):
        session = self._session_or_none()
        if session is None:
            self.edited.value = "edited slices: 0 (run the inference widget first)"
            self._enable(False)
            return
        n = len(session.edited_slices())
        self.edited.value = f"edited slices: {n} (along axis {session.axis})"
        self._enable(not self.job.running)

    def _session_or_none(self):
        try:
            return self.session
        except NapariUnetError as exc:
            self.status.value = str(exc)
            return None

    def _enable(self, on: bool):
        session = self._session_or_none() if on else None
        for b in (self.learn_button, self.review_button, self.save_model_button,
                  self.save_labels_button):
            b.enabled = on
        self.undo_button.enabled = bool(on and session is not None and session.can_undo)

    # -- learning ---------------------------------------------------------------------------

    def _learn_fn(self):
        session, budget = self.session, float(self.budget.value)
        if session is None:
            raise NapariUnetError("no segmentation to correct: run the inference widget first")
        if not session.edited_slices():
            raise NapariUnetError("no corrected slices yet: correct a few slices with the "
                                  "paint, fill or erase tools first")
        from ..training import FinetuneSettings

        settings = FinetuneSettings(time_budget=budget, device=session.predict_settings.device)
        return lambda progress, cancel: session.compute_update(settings, progress=progress,
                                                               cancel=cancel)

    def _apply(self, update) -> None:
        changed = self.session.apply_update(update)
        self.labels_layer.value.refresh()
        self.status.value = f"{update.summary()}; applied to {len(changed)} slices"
        self.update_count()

    def learn(self, *_, sync: bool = False):
        """Fine-tune on the edited slices and re-predict the rest (thread unless ``sync``)."""
        try:
            fn = self._learn_fn()
        except NapariUnetError as exc:
            self.job._fail(exc)
            return None
        if sync:
            return self.job.run_sync(fn, self._apply)
        return self.job.start(fn, self._apply)

    def run_sync(self):
        return self.learn(sync=True)

    def undo(self, *_):
        try:
            restored = self.session.undo()
        except NapariUnetError as exc:
            self.job._fail(exc)
            return
        self.labels_layer.value.refresh()
        self.status.value = f"undone: restored {len(restored)} slices and the previous model"
        self.update_count()

    def _on_state(self, state: str) -> None:
        self.cancel_button.enabled = state == "running"
        self._enable(state != "running")
        if state != "running":
            self.update_count()
        if state in ("cancelled", "failed"):
            self.status.value = f"learning {state}"
        elif state == "running":
            self.status.value = "learning..."

    # -- review -----------------------------------------------------------------------------

    def review_next(self, *_) -> int | None:
        """Jump to the most uncertain slice nobody has reviewed, and mark it reviewed."""
        session, layer = self.session, self.labels_layer.value
        if session is None:
            return None
        index = session.review_next()
        if index is None:
            self.status.value = "every slice has been reviewed or edited"
            return None
        self._show_slice(layer, session.axis, index)
        done = sorted(session.reviewed)
        self.reviewed.value = f"reviewed ({len(done)}): " + ", ".join(map(str, done[-12:]))
        self._mark(layer, session, index)
        return index

    def _show_slice(self, layer, axis: int, index: int) -> None:
        center = [s / 2 for s in layer.data.shape]
        center[axis] = index
        world = np.asarray(layer.data_to_world(center))
        dims = self.viewer.dims
        if dims.ndisplay == 2 and dims.not_displayed and axis not in dims.not_displayed:
            order = list(dims.order)
            order.remove(axis)
            dims.order = (axis, *order)
        dims.set_point(axis, float(world[axis]))

    def _mark(self, layer, session, index: int) -> None:
        """A 'reviewed' marker on the slice (a Points layer aligned with the labels)."""
        name = f"{layer.name} reviewed"
        point = np.array([s / 2 for s in layer.data.shape], float)
        point[session.axis] = index
        if name in self.viewer.layers:
            pts = self.viewer.layers[name]
            pts.data = np.vstack([pts.data, point])
        else:
            pts = self.viewer.add_points(point[None], name=name, size=6, face_color="yellow",
                                         symbol="star", **L.geometry_kwargs(layer))
            self.viewer.layers.selection.active = layer

    # -- saving -----------------------------------------------------------------------------

    def save_model(self, *_):
        out = self._save("model", self.model_path, self.session.save_model)
        if out is not None:
            self.status.value = f"saved model {out}"
        return out

    def save_labels(self, *_):
        out = self._save("labels", self.labels_path, self.session.save_labels)
        if out is not None:
            self.status.value = "saved " + ", ".join(str(p) for p in out)
        return out

    def _save(self, what: str, path_widget, save):
        """Run one of the session's savers; failures become notifications, not crashes."""
        path = str(path_widget.value)
        if path in ("", "."):
            self.job._fail(NapariUnetError(f"choose a {what} file name first"))
            return None
        try:
            return save(path)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.job._fail(exc)
            return None
