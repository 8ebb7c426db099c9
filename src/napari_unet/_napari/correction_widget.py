"""Correction loop widget: correct slices with the paint tools, let the model learn, review.

The logic is :class:`napari_unet.correction.session.CorrectionSession` (no Qt); this widget
binds a session to a Labels layer made by the inference widget (the session edits the
layer's data in place) and shows the edited-slice count live. Learning runs in the
widget's :class:`JobRunner` and ends in a proposal: its summary and a preview layer of the
voxels that would change. Only Accept writes it (never into slices edited meanwhile);
a proposal the acceptance check advises against needs a deliberate extra click.
"""

from __future__ import annotations

import weakref

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FileEdit,
    Label,
    PushButton,
    SpinBox,
)
from qtpy.QtCore import QTimer

from ..errors import NapariUnetError
from . import change_preview as P
from . import layers as L
from .continued import labels_layers
from .dock import DockWidget, compact, row, wrapping
from .fitting import FOOTER_LINES, file_field
from .user_files import AutoPath
from .worker import JobRunner, JobState, error_message, report_error

SESSION_KEY = "napari_unet_session"
REDRAW_MS = 250  # long enough for the canvas to draw between two layer removals
LEARN_STAGES = ("learning", "re-predicting")  # the two stages of compute_update's bar
# per session, as measured in its last round: seconds a Learn went on after learning
# (re-predicting, the check), after re-predicting (the check), and how long it learned
_MEASURED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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
                                predict_settings=result.get("settings"),
                                slice_scores=result.get("slice_scores"))
    layer.metadata[SESSION_KEY] = session
    return session


class CorrectionWidget(DockWidget):
    """Edited-slice count, Learn, Accept/Discard, Undo, Review next, Save."""

    TAB_TITLE, TAB_ORDER = "Correction", 1

    def __init__(self, napari_viewer):
        viewer = napari_viewer
        self.labels_layer = compact(ComboBox(
            label="labels", choices=lambda _w: result_labels_layers(viewer),
            tooltip="a segmentation made by the UNet inference widget"))
        self.edited = wrapping(Label(value="edited slices: 0"))
        self.budget = SpinBox(label="learning (s)", min=1, max=3600, value=30,
                              tooltip="how long the model may learn from your corrections; "
                                      "re-predicting the other slices comes after")
        self.plan = wrapping(Label(value=""))
        self.learn_button = PushButton(
            text="Learn from edits",
            tooltip="Fine-tune the model on the slices you corrected, then propose new "
                    "labels for the slices nobody edited. Nothing changes until Accept.")
        self.runner = JobRunner("Learning from corrections")
        self.proposal_text = wrapping(Label(value="", visible=False), FOOTER_LINES)
        self.anyway = CheckBox(text="accept anyway", value=False, visible=False,
                               tooltip="the check advises against this update; tick to "
                                       "allow Accept")
        self.accept_button = PushButton(text="Accept", enabled=False,
                                        tooltip="write the proposed labels (undoable)")
        self.discard_button = PushButton(text="Discard", enabled=False,
                                         tooltip="drop the proposal; nothing changes")
        self.undo_button = PushButton(text="Undo", enabled=False,
                                      tooltip="take back the last accepted update")
        self.review_button = PushButton(text="Review next",
                                        tooltip="go to the least trusted slice (lowest "
                                                "quality score) that nobody has reviewed "
                                                "or edited")
        self.reviewed = wrapping(Label(value="reviewed: none"))
        self.model_path = file_field(FileEdit(label="model file", mode="w",
                                              filter="*.safetensors"))
        self.save_model_button = PushButton(text="Save model")
        self.labels_path = file_field(FileEdit(label="labels file", mode="w",
                                               filter="*.nii.gz *.dcm"))
        self.save_labels_button = PushButton(text="Save labels")
        self.status = wrapping(Label(value=""), FOOTER_LINES)
        super().__init__(viewer, [
            self.labels_layer, self.reviewed, self.model_path, self.save_model_button,
            self.labels_path, self.save_labels_button,
        ], footer=[
            self.edited, self.budget, self.plan, self.learn_button, self.runner.panel,
            self.proposal_text, self.anyway, row(self.accept_button, self.discard_button),
            row(self.undo_button, self.review_button), self.status])
        self.model_file = AutoPath(self.model_path, "models", ".safetensors", "corrected")
        self.labels_file = AutoPath(self.labels_path, "labels", ".nii.gz", "labels")
        self.proposal = self._proposed_for = None
        self._bound = None
        self.learn_button.changed.connect(self.learn)
        self.accept_button.changed.connect(self.accept)
        self.discard_button.changed.connect(self.discard)
        self.anyway.changed.connect(self._enable_decision)
        self.undo_button.changed.connect(self.undo)
        self.review_button.changed.connect(self.review_next)
        self.save_model_button.changed.connect(self.save_model)
        self.save_labels_button.changed.connect(self.save_labels)
        self.labels_layer.changed.connect(self._bind)
        self.budget.changed.connect(self._show_plan)
        self.runner.state_changed.connect(self._on_state)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        # napari announces a paint before writing it: recount once the strokes settle
        self._recount = QTimer()
        self._recount.setSingleShot(True)
        self._recount.setInterval(100)
        self._recount.timeout.connect(self.update_count)
        self._bind()

    @property
    def cancel_button(self):
        return self.runner.panel.cancel_button

    @property
    def session(self):
        layer = self.labels_layer.value
        return None if layer is None else session_for(layer)

    def _bind(self, *_):
        """Follow paint/fill/erase on the chosen layer to keep the count live."""
        old, self._bound = self._bound, self.labels_layer.value
        if old is not None:
            self._drop_proposal(old)
            self._follow(old, False)
        if self._bound is not None:
            self._follow(self._bound, True)
            session = self._session_or_none()
            if session is not None:
                self.model_file.propose(f"{session.model.name}-corrected")
                from ..inference.warmup import warm_up_soon  # the first Learn's costs, now

                warm_up_soon(lambda: session.model, session.predict_settings, learning=True,
                             key=session.model.hash or id(session))
        self.update_count()

    def _follow(self, layer, on: bool) -> None:
        """Recount after paint, fill, erase or new data on ``layer`` (or stop doing so)."""
        for name in ("paint", "labels_update", "data"):
            event = getattr(layer.events, name)
            if on:
                event.connect(self._schedule_count)
            else:
                event.disconnect(self._schedule_count)

    def _on_layer_removed(self, *_):
        """The labels layer was deleted: let go of it (its proposal and preview too)."""
        self.form.reset_choices()
        if self._bound is not None and self._bound not in self.viewer.layers:
            self._bind()

    def closed(self) -> None:
        """Closing the dock stops learning (the runner does); nothing is left behind."""
        self._drop_proposal()
        self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        if self._bound is not None:
            self._follow(self._bound, False)

    def reset_choices(self, *_) -> None:
        """Layers came or went (napari calls this): the hint may change too."""
        super().reset_choices()
        self.update_count()

    def _how_to_start(self) -> str:
        """What to do first; labels opened from a file go through the inference widget."""
        results = result_labels_layers(self.viewer)
        opened = [ly.name for ly in labels_layers(self.viewer) if ly not in results]
        if opened:
            return (f"to go on with {opened[0]!r}: choose it under 'continue from labels' "
                    "in the inference widget and Run")
        return "run the inference widget with a segmentation model first"

    def _schedule_count(self, *_):
        self._recount.start()

    def update_count(self, *_):
        session = self._session_or_none()
        if session is None:
            self.edited.value = "edited slices: 0 (" + self._how_to_start() + ")"
            self._enable(False)
            return
        from .planes import axis_plane

        n = len(session.edited_slices())
        plane = axis_plane(session.axis, session.volume.direction)
        self.edited.value = f"edited slices: {n} ({plane})"
        self._enable(not self.runner.running)
        self._show_plan()

    # -- the wait, in plain words -----------------------------------------------------------

    def after_learning(self) -> tuple[float | None, float]:
        """Seconds a Learn is expected to go on after learning (re-predicting and the
        check) and after re-predicting (the check): measured in this session's last
        round, else the time the model took over the whole scan (the inference run)."""
        layer = self.labels_layer.value
        session = None if layer is None else layer.metadata.get(SESSION_KEY)
        if session is not None and session in _MEASURED:
            return _MEASURED[session][:2]
        result = {} if layer is None else layer.metadata.get(L.RESULT_KEY, {})
        return result.get("seconds"), 0.0

    def learning_seconds(self) -> float | None:
        """How long this session's last round learned (None before its first round)."""
        layer = self.labels_layer.value
        session = None if layer is None else layer.metadata.get(SESSION_KEY)
        return _MEASURED[session][2] if session in _MEASURED else None

    def _show_plan(self, *_) -> None:
        """'learn about 4 s (at most 30 s) + about 12 s to re-predict': the whole wait."""
        if self.labels_layer.value is None:
            self.plan.value = ""
            return
        budget, extra = int(self.budget.value), self.after_learning()[0]
        learned = self.learning_seconds()
        learn = (f"learn at most {budget} s" if learned is None or learned >= budget
                 else f"learn about {max(1, round(learned))} s (at most {budget} s)")
        self.plan.value = (f"{learn}, then re-predict the other slices" if extra is None
                           else f"{learn} + about {max(1, round(extra))} s to re-predict")

    def _remember_timing(self) -> None:
        """After a round: how long learning, re-predicting and the check took, for the next."""
        layer = self.labels_layer.value
        session = None if layer is None else layer.metadata.get(SESSION_KEY)
        panel = self.runner.panel
        after = panel.seconds_after(0)
        learned = None if after is None else panel.ended - panel.started - after
        measured = after, panel.seconds_after(1), learned
        if session is not None and None not in measured:
            _MEASURED[session] = measured

    def _session_or_none(self):
        try:
            return self.session
        except NapariUnetError as exc:
            self.status.value = str(exc)
            return None

    def _enable(self, on: bool):
        """Buttons on (when ``on``) only while a segmentation is there to work on."""
        session = self._session_or_none() if on else None
        for b in (self.learn_button, self.review_button, self.save_model_button,
                  self.save_labels_button):
            b.enabled = session is not None
        self.undo_button.enabled = bool(session is not None and session.can_undo)
        self._enable_decision()

    # -- learning: a proposal, then Accept or Discard ----------------------------------------

    def learn(self, *_):
        """The Learn button: fine-tune and propose an update in a thread worker."""
        self._drop_proposal()
        return self.runner.start(self._prepare_learning, self._propose, unit="%",
                                 inputs=lambda: (self.labels_layer.value,),
                                 after=self.after_learning, stages=LEARN_STAGES,
                                 budgets=lambda: (float(self.budget.value), None))

    def _prepare_learning(self):
        layer, budget = self.labels_layer.value, float(self.budget.value)
        session = None if layer is None else session_for(layer)
        if session is None:
            raise NapariUnetError("no segmentation to correct: run the inference widget first")
        if not session.edited_slices():
            raise NapariUnetError("no corrected slices yet: correct a few slices with the "
                                  "paint, fill or erase tools first")
        from ..training import FinetuneSettings

        settings = FinetuneSettings(time_budget=budget, device=session.predict_settings.device)
        return lambda job: (layer, session, session.compute_update(
            settings, progress=job.progress, cancel=job.cancelled))

    def _propose(self, result) -> None:
        """Show the update learned for ``layer``'s ``session``, if both are still current."""
        layer, session, update = result
        if layer not in self.viewer.layers:
            raise NapariUnetError(f"{layer.name!r} was deleted while the model learned; "
                                  "nothing changed")
        if (layer is not self.labels_layer.value
                or layer.metadata.get(SESSION_KEY) is not session):
            raise NapariUnetError(f"{layer.name!r} was replaced by a new run, or another "
                                  "layer was chosen, while the model learned; nothing "
                                  "changed: learn again")
        update = session.still_open(update)  # slices edited meanwhile are not shown
        self.proposal, self._proposed_for = update, session
        P.show_preview(self.viewer, layer, session, update)
        self.proposal_text.value = (update.summary() + " (magenta on the image; white: would "
                                    "become background). Accept or Discard?")
        self.proposal_text.visible = True
        self.anyway.value = False
        self.anyway.visible = not update.recommended
        self._enable_decision()

    def _enable_decision(self, *_):
        pending = self.proposal is not None and not self.runner.running
        ok = pending and (self.proposal.recommended or bool(self.anyway.value))
        self.accept_button.enabled = ok
        self.discard_button.enabled = pending

    def accept(self, *_):
        """Write the proposal into the labels (slices edited meanwhile are kept)."""
        update, layer = self.proposal, self.labels_layer.value
        if update is None:
            return None
        if self.session is not self._proposed_for:  # the model was run again meanwhile
            self._drop_proposal()
            self.status.value = "the labels were replaced by a new run: learn again"
            return None
        kept = int(self.session.edited_mask()[update.slices].sum())
        changed = self.session.apply_update(update)
        self._drop_proposal()
        layer.refresh()
        self.status.value = (f"accepted: {len(changed)} slices updated"
                             + (f", {kept} you edited meanwhile kept" if kept else ""))
        self.update_count()
        return changed

    def discard(self, *_):
        self._drop_proposal()
        self.status.value = "discarded: your labels are unchanged"

    def _drop_proposal(self, layer=None) -> None:
        """Forget the proposal and remove its preview (over ``layer``, else the bound one).

        When ``layer`` itself has just been deleted, the preview goes a moment later, once
        the canvas has drawn: two Labels layers removed before a redraw can crash vispy's
        OpenGL (seen under Mesa).
        """
        self.proposal = self._proposed_for = None
        self.proposal_text.value = ""
        self.proposal_text.visible = False
        self.anyway.visible = False
        layer = layer or self._bound
        if layer is not None and layer not in self.viewer.layers:
            QTimer.singleShot(REDRAW_MS, lambda: P.remove_preview(self.viewer, layer))
        else:
            P.remove_preview(self.viewer, layer)
        self._enable_decision()

    def undo(self, *_):
        self._drop_proposal()
        try:
            restored = self.session.undo()
        except NapariUnetError as exc:
            report_error("Undo", exc, self.status)
            return
        self.labels_layer.value.refresh()
        self.status.value = f"undone: restored {len(restored)} slices and the previous model"
        self.update_count()

    def _on_state(self, state: JobState) -> None:
        self._enable(state is not JobState.RUNNING)
        if state is JobState.RUNNING:
            self.status.value = "learning from your corrections..."
        elif state is JobState.CANCELLED:
            self.status.value = (f"learning cancelled{self.runner.cancelled_because}: your "
                                 "labels are unchanged")
        elif state is JobState.FAILED:
            self.status.value = f"learning failed: {error_message(self.runner.error)}"
        elif state is JobState.DONE:
            self.status.value = ""
            self._remember_timing()
            self._show_plan()

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
            self.viewer.add_points(point[None], name=name, size=6, face_color="yellow",
                                   symbol="star", **L.geometry_kwargs(layer))
            self.viewer.layers.selection.active = layer

    # -- saving -----------------------------------------------------------------------------

    def save_model(self, *_):
        out = self._save("model", self.model_file, lambda s: s.save_model)
        if out is not None:
            self.status.value = f"saved model {out}"
        return out

    def save_labels(self, *_):
        out = self._save("labels", self.labels_file, lambda s: s.save_labels)
        if out is not None:
            self.status.value = "saved " + ", ".join(str(p) for p in out)
        return out

    def _save(self, what: str, where: AutoPath, saver):
        """Run one of the session's savers (``saver(session)``); failures become
        notifications, not crashes."""
        try:
            session = self.session
            if session is None:
                raise NapariUnetError(f"no {what} to save: run the inference widget first")
            path = where.target()
            if path is None:
                raise NapariUnetError(f"choose a {what} file name first")
            written = saver(session)(path)  # beside a file already there, never over it
        except Exception as exc:  # noqa: BLE001 - shown to the user
            report_error(f"Saving {what}", exc, self.status)
            return None
        where.saved(written[0] if isinstance(written, list) else written)
        return written
