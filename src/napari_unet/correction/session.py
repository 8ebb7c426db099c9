"""The annotation-correction loop: a clinician corrects slices, the model learns from them.

A :class:`CorrectionSession` holds the scan, the model, the labels the user edits and the
model's last output. Edited slices are found by difference from that output (along the
prediction axis), so no paint tool has to report what it changed. ``learn`` fine-tunes on
the edited slices only and re-predicts only the slices nobody edited: a person's edit is
never overwritten, and every update can be undone. No Qt here: the widget runs
:meth:`CorrectionSession.compute_update` in a thread and :meth:`apply_update` on the GUI
thread, so edits made while the model learns are protected too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import NapariUnetError, TaskError
from ..io.formats import nifti_stem
from ..progress import Cancel, Progress, Stages
from .check import Agreement, acceptance, held_out_tiles

if TYPE_CHECKING:
    from ..inference.predictor import InferenceSettings
    from ..io.volume import Volume
    from ..model.checkpoint import Model
    from ..training.settings import FinetuneSettings


@dataclass
class Update:
    """What one round of learning produced, before it touches the user's labels.

    A proposal: the widget shows :meth:`summary` (and may preview the changes) and the
    user accepts it (:meth:`CorrectionSession.apply_update`) or discards it.
    """

    model: Model
    slices: np.ndarray  # indices (along the axis) that were re-predicted
    labels: np.ndarray  # new labels for those slices, stacked on axis 0
    uncertainty: np.ndarray | None  # per re-predicted slice, or None
    n_trusted: int
    history: list = field(default_factory=list)
    changed_voxels: int = 0  # voxels of unedited slices whose label would change
    changed_slices: int = 0  # how many unedited slices would change at all
    changed_per_slice: np.ndarray | None = None  # voxels that would change, per slice
    check: dict | None = None  # acceptance check on held-out corrected voxels, if made
    recommended: bool = True  # False: the check says the update would make things worse
    answer: np.ndarray | None = None  # the new model's labels on every slice (axis 0)
    scores: np.ndarray | None = None  # per re-predicted slice: its quality score, or NaN

    def summary(self) -> str:
        """One sentence for the person deciding whether to accept."""
        text = (f"learned from {self.n_trusted} corrected slice(s); accepting changes "
                f"{self.changed_voxels:,} voxels on {self.changed_slices} of "
                f"{len(self.slices)} unedited slices")
        if self.check:
            c = self.check
            text += (f"; on {c['held_out_voxels']:,} corrected voxels kept back as a check, "
                     f"{c['measure']} {c['before']:.3f} before, {c['after']:.3f} after")
        return text if self.recommended else (text + ": not recommended, the new model "
                                              "agrees less with your corrections")


@dataclass
class _UndoStep:
    model: Model
    slices: np.ndarray
    labels: np.ndarray  # labels before the update, stacked on axis 0
    output: np.ndarray  # model output before the update, stacked on axis 0
    written: np.ndarray  # what the update wrote, to detect edits made after it
    uncertainty: np.ndarray | None
    answer: np.ndarray  # the model's answer on every slice before the update
    scores: np.ndarray | None = None


class CorrectionSession:
    """One scan, one model, the user's labels and the model's last output.

    ``labels`` is edited in place by the user (it can be a napari Labels layer's data);
    ``output`` is what the model last predicted. Both are indexed like ``volume.array``.
    """

    def __init__(self, volume: Volume, model: Model, output: np.ndarray, axis: int,
                 labels: np.ndarray | None = None,
                 slice_uncertainty: np.ndarray | None = None,
                 predict_settings: InferenceSettings | None = None,
                 slice_scores: np.ndarray | None = None):
        if model.task.kind != "segment":
            raise TaskError(f"the correction loop needs a segmentation model; {model.name!r} "
                            f"does {model.task.describe()}")
        if tuple(output.shape) != tuple(volume.spatial_shape):
            raise ValueError(f"model output {output.shape} does not match the scan "
                             f"{volume.spatial_shape}")
        self.volume = volume
        self.model = model
        self.parent = model
        self.axis = int(axis)
        self.output = np.array(output, copy=True)
        self.labels = self.output.copy() if labels is None else labels
        if tuple(self.labels.shape) != tuple(output.shape):
            raise ValueError(f"labels {self.labels.shape} do not match the model output "
                             f"{output.shape}")
        n = self.n_slices
        unc = None if slice_uncertainty is None else np.asarray(slice_uncertainty, float)
        self.slice_uncertainty = unc if unc is not None and unc.shape == (n,) else None
        # each slice's quality score (inference.quality.slice_scores; NaN: too little of
        # the structures to score): Review next starts from the least trusted
        score = None if slice_scores is None else np.asarray(slice_scores, float)
        self.slice_scores = score if score is not None and score.shape == (n,) else None
        # re-predictions use the settings of the first run (ROI, overlap, TTA, device,
        # precision); the axis is the session's and only labels are needed
        self.predict_settings = _repredict_settings(predict_settings, self.axis)
        self.reviewed: set[int] = set()
        self._undo: list[_UndoStep] = []
        self.rounds = 0
        # the current model's own answer on every slice, edited ones too: what the
        # acceptance check compares with, without predicting the old model again
        self._answer = self.output.copy()

    @classmethod
    def start(cls, volume: Volume, model: Model, settings: InferenceSettings | None = None,
              progress: Progress | None = None, cancel: Cancel | None = None,
              ) -> CorrectionSession:
        """Run the model over the scan and open a session on its output."""
        from ..inference.predictor import predict
        from ..inference.quality import prediction_slice_scores

        pred = predict(volume, model, settings, progress=progress, cancel=cancel)
        return cls(volume, model, pred.labels, pred.axis,
                   slice_uncertainty=pred.slice_uncertainty, predict_settings=pred.settings,
                   slice_scores=prediction_slice_scores(pred))

    # -- what the user did ------------------------------------------------------------

    @property
    def n_slices(self) -> int:
        return self.output.shape[self.axis]

    def _along(self, a: np.ndarray) -> np.ndarray:
        return np.moveaxis(a, self.axis, 0)

    def edited_mask(self) -> np.ndarray:
        """Per slice along the axis: True where the user's labels differ from the output."""
        return self._edited(np.asarray(self.labels))

    def edited_slices(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.edited_mask())]

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    # -- learning -----------------------------------------------------------------------

    def compute_update(self, settings: FinetuneSettings | None = None, *,
                       progress: Progress | None = None,
                       cancel: Cancel | None = None) -> Update:
        """Fine-tune on edited slices, re-predict the others; touches nothing yet.

        Part of each corrected slice is held out of fine-tuning for the acceptance check
        (:mod:`.check`); the update is ``recommended`` when the new model agrees with the
        corrections there at least as well as the current one (whose answer the session
        keeps: it is not predicted again). Safe to run off the GUI thread: it works on a
        snapshot of the labels.
        """
        from ..training import FinetuneSettings, finetune

        labels = np.array(self.labels, copy=True)
        trusted = self._edited(labels)
        if not trusted.any():
            raise NapariUnetError("no corrected slices yet: correct the labels on a few "
                                  "slices with the paint, fill or erase tools, then learn")
        settings = settings or FinetuneSettings(device=self.predict_settings.device)
        corrected = np.flatnonzero(trusted)
        held = self._held_out(corrected, settings.seed)
        stage = Stages(progress, 2)
        result = finetune(self.model, self.volume, labels, self._trust(trusted, held),
                          settings, axis=self.axis, progress=stage(0), cancel=cancel)
        new, unc, scores = self._predict_slices(result.model, np.arange(self.n_slices),
                                                stage(1), cancel)
        check, recommended = self._check(new[corrected], corrected, held,
                                         self._along(labels)[corrected])
        todo = np.flatnonzero(~trusted)
        changed = new[todo] != self._along(labels)[todo]
        per_slice = changed.reshape(len(todo), -1).sum(axis=1)
        return Update(result.model, todo, new[todo], None if unc is None else unc[todo],
                      len(corrected), list(result.history),
                      changed_voxels=int(per_slice.sum()),
                      changed_slices=int((per_slice > 0).sum()),
                      changed_per_slice=per_slice, check=check, recommended=recommended,
                      answer=new, scores=None if scores is None else scores[todo])

    def _edited(self, labels: np.ndarray) -> np.ndarray:
        return differing_slices(self._along(labels), self._along(self.output))

    def _held_out(self, corrected: np.ndarray, seed: int) -> np.ndarray:
        """Per corrected slice (stacked on axis 0): the tiles kept for the check."""
        plane = self._along(self.output).shape[1:]
        return np.stack([held_out_tiles(plane, seed + int(i)) for i in corrected])

    def _trust(self, trusted: np.ndarray, held: np.ndarray) -> np.ndarray:
        """Voxels fine-tuning may learn from: corrected slices minus the held-out tiles."""
        trust = np.zeros(self.output.shape, bool)
        along = self._along(trust)
        along[trusted] = ~held
        return trust

    def _check(self, new: np.ndarray, corrected: np.ndarray, held: np.ndarray,
               truth: np.ndarray):
        """Old and new model against the corrections on the held-out tiles."""
        old = self._along(self._answer)[corrected]
        n = self.model.task.n_labels
        before = Agreement.of(old[held], truth[held], n)
        after = Agreement.of(new[held], truth[held], n)
        return acceptance(before, after, int(held.sum()))

    def still_open(self, update: Update) -> Update:
        """``update`` without the slices edited since it was computed: what Accept would
        write, so that a preview and its counts never show a change to a person's edit."""
        keep = ~self.edited_mask()[update.slices]
        if keep.all():
            return update
        per = (update.changed_per_slice[keep] if update.changed_per_slice is not None
               else None)
        unc = None if update.uncertainty is None else update.uncertainty[keep]
        scores = None if update.scores is None else update.scores[keep]
        return replace(update, slices=update.slices[keep], labels=update.labels[keep],
                       uncertainty=unc, scores=scores, changed_per_slice=per,
                       changed_voxels=int(per.sum()) if per is not None else 0,
                       changed_slices=int((per > 0).sum()) if per is not None else 0)

    def apply_update(self, update: Update) -> list[int]:
        """Write an update into the labels, skipping slices edited meanwhile; undoable.
        Returns the slices whose labels changed."""
        still = ~self.edited_mask()[update.slices]
        slices, new = update.slices[still], update.labels[still]
        lab, out = self._along(self.labels), self._along(self.output)
        differs = differing_slices(lab[slices], new)
        self._undo.append(_UndoStep(self.model, slices, lab[slices].copy(), out[slices].copy(),
                                    new.copy(), self._uncertainty_of(slices), self._answer,
                                    None if self.slice_scores is None
                                    else self.slice_scores[slices].copy()))
        lab[slices] = new
        out[slices] = new
        if update.answer is not None:
            self._answer = np.moveaxis(update.answer, 0, self.axis).copy()
        else:  # an update made elsewhere: its model's answer is known where it wrote
            self._answer = self._answer.copy()
            self._along(self._answer)[slices] = new
        if self.slice_uncertainty is not None and update.uncertainty is not None:
            self.slice_uncertainty[slices] = update.uncertainty[still]
        if self.slice_scores is not None and update.scores is not None:
            self.slice_scores[slices] = update.scores[still]
        self.model = update.model
        self.rounds += 1
        return [int(i) for i in slices[differs]]

    def learn(self, settings: FinetuneSettings | None = None, *,
              progress: Progress | None = None, cancel: Cancel | None = None) -> list[int]:
        """Compute an update and apply it if recommended; returns the slices it changed."""
        update = self.compute_update(settings, progress=progress, cancel=cancel)
        return self.apply_update(update) if update.recommended else []

    def undo(self) -> list[int]:
        """Restore the previous model and the re-predicted slices not edited since;
        returns the slices whose labels changed back."""
        if not self._undo:
            raise NapariUnetError("nothing to undo: no learning step has been applied")
        step = self._undo.pop()
        lab, out = self._along(self.labels), self._along(self.output)
        current = lab[step.slices]
        untouched = (current == step.written).reshape(len(step.slices), -1).all(axis=1)
        idx = step.slices[untouched]
        differs = differing_slices(current[untouched], step.labels[untouched])
        lab[idx] = step.labels[untouched]
        out[step.slices] = step.output
        if self.slice_uncertainty is not None and step.uncertainty is not None:
            self.slice_uncertainty[step.slices] = step.uncertainty
        if self.slice_scores is not None and step.scores is not None:
            self.slice_scores[step.slices] = step.scores
        self.model = step.model
        self._answer = step.answer
        self.rounds -= 1
        return [int(i) for i in idx[differs]]

    def _uncertainty_of(self, slices: np.ndarray) -> np.ndarray | None:
        return None if self.slice_uncertainty is None else self.slice_uncertainty[slices].copy()

    def _predict_slices(self, model: Model, slices: np.ndarray, progress: Progress | None,
                        cancel: Cancel | None):
        """Labels (stacked on axis 0), per-slice uncertainty and quality scores (or None)
        for ``slices`` only."""
        from ..inference.predictor import predict_slices
        from ..inference.quality import prediction_slice_scores

        pred = predict_slices(self.volume, model, slices, self.predict_settings,
                              progress=progress, cancel=cancel)
        labels = self._along(pred.labels)[slices]
        unc, scores = pred.slice_uncertainty, prediction_slice_scores(pred)
        return (labels, None if unc is None else np.asarray(unc, float)[slices],
                None if scores is None else scores[slices])

    # -- review -------------------------------------------------------------------------

    def review_order(self) -> np.ndarray:
        """Every slice, least trusted first: by quality score (lowest first), then slices
        with too little of the structures to score, by mean uncertainty (highest first);
        without either figure, in order."""
        n = self.n_slices
        score = self.slice_scores if self.slice_scores is not None else np.full(n, np.nan)
        unc = (self.slice_uncertainty if self.slice_uncertainty is not None
               else np.zeros(n))
        unscored = ~np.isfinite(score)
        # np.lexsort: the last key sorts first; stable, so ties keep slice order
        return np.lexsort((-np.nan_to_num(unc, nan=-1.0), np.where(unscored, 0.0, score),
                           unscored))

    def review_next(self) -> int | None:
        """The unreviewed, unedited slice that is least trusted (:meth:`review_order`);
        marks it reviewed. None when all are reviewed or edited."""
        skip = self.edited_mask()
        skip[list(self.reviewed)] = True
        best = next((int(i) for i in self.review_order() if not skip[i]), None)
        if best is not None:
            self.reviewed.add(best)
        return best

    # -- saving -------------------------------------------------------------------------

    def save_model(self, path: str | os.PathLike) -> Path:
        """Save the fine-tuned model with provenance: parent model and corrections. A file
        already at ``path`` is kept: the model goes beside it (``io.new_files``); returns
        where it went."""
        from ..io.new_files import write_new

        n = len(self.edited_slices())
        provenance = {"parent": {"name": self.parent.name, "hash": self.parent.hash},
                      "corrected_slices": n, "correction_axis": self.axis,
                      "learning_rounds": self.rounds}
        return write_new(Path(path), lambda p: self.model.save(p, **provenance))[0]

    def save_labels(self, path: str | os.PathLike, dicom_seg: bool | None = None) -> list[Path]:
        """Labels in the scan's geometry: NIfTI at ``path``, plus DICOM SEG for DICOM scans.

        A ``.dcm`` path writes DICOM SEG only; ``dicom_seg=None`` adds ``<name>_seg.dcm``
        next to the NIfTI when the scan came from DICOM. A file already there (labels
        saved earlier, a person's own) is never replaced: the new one goes beside it
        (``io.new_files``); returns the files written.
        """
        from ..io import write_dicom_seg, write_volume
        from ..io.new_files import write_new

        path = Path(path)
        names = list(self.model.task.class_names)
        labels = np.asarray(self.labels)

        def seg_to(target: Path):
            return write_dicom_seg(labels, target, like=self.volume, class_names=names,
                                   algorithm=self.model.name,
                                   class_codes=self.model.meta.class_codes)

        if path.suffix.lower() == ".dcm":
            return [write_new(path, seg_to)[0]]
        nifti, _ = write_new(path, lambda target: write_volume(
            labels, target, like=self.volume, class_names=names))
        written = [nifti]
        if dicom_seg is None:
            dicom_seg = is_dicom(self.volume)
        if dicom_seg:
            written.append(write_new(nifti.with_name(nifti_stem(nifti) + "_seg.dcm"),
                                     seg_to)[0])
        return written


def differing_slices(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per slice (stacked on axis 0): whether any voxel of ``a`` and ``b`` differs."""
    return (a != b).reshape(len(a), -1).any(axis=1)


def is_dicom(volume: Volume) -> bool:
    """Whether the scan was read from DICOM (so a DICOM SEG can reference it)."""
    from ..io.source import DicomSource

    return isinstance(volume.source, DicomSource)


def _repredict_settings(settings: InferenceSettings | None, axis: int) -> InferenceSettings:
    from ..inference.predictor import InferenceSettings

    return replace(settings or InferenceSettings(), axis=axis, probabilities=False)
