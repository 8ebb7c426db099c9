"""A widget's own progress: a bar, 'done/total, about m:ss left', and the Cancel button.

napari's activity dock is collapsed by default, so every widget shows its job's progress
where the user pressed Run. The time left comes from the pace measured in this run
(:class:`TimeLeft`), never from a constant: the first report is the start-up's end
(model loading, warm-up) and the interval after it is warm-up still, so the pace is
counted from the second report; a job made of stages of one
progress bar (:class:`napari_unet.progress.Stages`: learning, then re-predicting) adds
what its later stages are expected to take, as measured in an earlier run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from magicgui.widgets import Container, Label, ProgressBar, PushButton

PACE_AFTER_S = 0.5  # a pace measured over less than this is noise (others' jobs come
# and go on a shared machine)
PACE_REPORTS = 3  # reports in a stage before its pace is trusted: the first interval
# after the start-up still carries warm-up (new shapes, caches), so it is left out


def clock(seconds: float) -> str:
    """m:ss (or h:mm:ss) for a number of seconds."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class TimeLeft:
    """Seconds left of a job from its progress reports.

    ``after[k]`` is how long the job is expected to go on once stage ``k`` of
    ``len(after)`` equal parts of the bar has reported its last (the later stages and
    what follows the last report, e.g. a check or saving), as measured in an earlier
    run; None where that is not known yet: for the last stage, as long as the job took
    from ``began`` to its first report (what follows the last slice, assembling and
    showing the result, scales with the scan as the start-up does), for the others no
    estimate. ``budgets[k]``: the most seconds stage ``k`` may take (a time budget; its
    units may be seconds or iterations that end it first, as fine-tuning's do, so its pace
    is measured all the same and the budget caps it).
    """

    def __init__(self, after: Sequence[float | None] = (0.0,),
                 budgets: Sequence[float | None] = (), began: float | None = None):
        self.after = list(after) or [0.0]
        self.began = began
        self.budgets = list(budgets) + [None] * (len(self.after) - len(budgets))
        self.reports: dict[int, list[tuple[float, int]]] = {}  # stage: (time, done) seen
        self.latest: dict[int, float] = {}  # stage: time of its latest report
        self.total = 0

    @property
    def first(self) -> dict[int, tuple[float, int]]:
        """Stage: (time, done) of its first report."""
        return {k: seen[0] for k, seen in self.reports.items()}

    def stage(self, done: int, total: int) -> int:
        n = len(self.after)
        return min(n - 1, done * n // total) if total else 0

    def update(self, done: int, total: int, now: float) -> float | None:
        """Seconds left after this report (None while the pace is not known)."""
        k, self.total = self.stage(done, total), total
        seen = self.reports.setdefault(k, [])
        seen.append((now, done))
        self.latest[k] = now
        later = self._after(k)
        if later is None:
            return None
        ref_time, ref_done = seen[1] if len(seen) >= PACE_REPORTS else seen[0]
        elapsed, units = now - ref_time, done - ref_done
        n = len(self.after)
        end = total * (k + 1) // n
        if len(seen) >= PACE_REPORTS and units > 0 and elapsed >= PACE_AFTER_S:
            left = elapsed / units * max(0, end - done)
            if self.budgets[k] is not None:  # the budget ends the stage if the pace does not
                left = min(left, max(0.0, self.budgets[k] - (now - seen[0][0])))
            return left + later
        if k > 0 and self.after[k - 1] is not None and k - 1 in self.latest:
            # this stage's pace is not known yet: what was expected of it, minus its time
            left = self.after[k - 1] - (now - self.latest[k - 1])
            return left if left > 0 else None
        return None

    def _after(self, k: int) -> float | None:
        if self.after[k] is not None or k < len(self.after) - 1 or self.began is None:
            return self.after[k]
        firsts = [seen[0][0] for seen in self.reports.values()]
        return max(0.0, min(firsts) - self.began)

    def seconds_after(self, k: int, end: float) -> float | None:
        """How long the job went on after stage ``k`` (for next time): after its budget
        ran out, if it has one and its units did not end it first (reports stop while a
        validation runs), else after its last report; a stage over before it reported
        ended by a later stage's first."""
        seen = self.reports.get(k)
        if seen and self.budgets[k] is not None and self.total:
            t, done = seen[0]
            units = self.total / len(self.after)
            budget_end = t + (units * (k + 1) - done) * self.budgets[k] / units
            later = [r[0][0] for j, r in self.reports.items() if j > k]
            if not later or min(later) > budget_end:  # else its units ended it first
                return max(0.0, end - budget_end)
        last = self.latest.get(k)
        if last is None:
            later = [seen[0][0] for j, seen in self.reports.items() if j > k]
            last = min(later) if later else None
        return None if last is None else max(0.0, end - last)


def progress_text(done: int, total: int, left: float | None, unit: str = "") -> str:
    """'60/189 slices, about 0:12 left' once the pace is known (unit '%': '32%')."""
    if unit == "%" and total:
        text = f"{100 * done // total}%"
    else:
        text = (f"{done}/{total}" if total else f"{done}") + (f" {unit}" if unit else "")
    if left is not None and total and done < total:
        text += f", about {clock(left)} left"
    return text


class ProgressPanel(Container):
    """Bar, text and Cancel of one widget's job (driven by :class:`JobRunner`)."""

    def __init__(self):
        self.bar = ProgressBar(value=0, min=0, max=1, tooltip="progress of the running job")
        self.text = Label(value="")
        self.cancel_button = PushButton(text="Cancel", enabled=False,
                                        tooltip="stop the job within a second; "
                                                "nothing is changed by a cancelled run")
        super().__init__(widgets=[self.bar, self.text, self.cancel_button], labels=False)
        self.margins = (0, 0, 0, 0)
        for w in (self.bar, self.text, self.cancel_button):  # nothing before the first run
            w.visible = False
        self.started = self.ended = time.monotonic()
        self.unit = ""
        self.stage_names: list[str] = []
        self.time_left = TimeLeft()
        self.first_estimate: tuple[float, float] | None = None  # (elapsed, seconds left)

    def begin(self, unit: str = "", after: Sequence[float | None] = (0.0,),
              stages: Sequence[str] = (), budgets: Sequence[float | None] = ()) -> None:
        """A job starts; ``after`` and ``budgets`` as in :class:`TimeLeft`, ``stages``
        names its stages."""
        self.started, self.unit = time.monotonic(), unit
        self.time_left = TimeLeft(after, budgets, began=self.started)
        self.stage_names = list(stages)
        self.first_estimate = None
        # not Qt's busy bar until the first report: its animation repaints the window 30
        # times a second, each repaint holding the GIL the job needs (see worker.py)
        self.bar.max, self.bar.value = 1, 0
        self.text.value = "starting..."
        self.bar.visible = self.text.visible = self.cancel_button.visible = True
        self.cancel_button.enabled = True

    def show(self, done: int, total: int) -> None:
        if self.bar.max != total:
            self.bar.max = total
        self.bar.value = min(done, total) if total else done
        now = time.monotonic()
        left = self.time_left.update(done, total, now)
        if left is not None and self.first_estimate is None:
            self.first_estimate = (now - self.started, left)
        text = progress_text(done, total, left, self.unit)
        if self.stage_names:
            text = f"{self.stage_names[self.time_left.stage(done, total)]}: {text}"
        self.text.value = text

    def stopping(self) -> None:
        self.text.value = "stopping..."
        self.cancel_button.enabled = False

    def end(self, outcome: str) -> None:
        self.ended = time.monotonic()
        self.cancel_button.enabled = self.cancel_button.visible = False
        elapsed = clock(self.ended - self.started)
        if self.bar.max == 0:
            self.bar.max = 1
        if outcome == "done":
            self.bar.value = self.bar.max
            self.text.value = f"done in {elapsed}"
        else:
            self.text.value = f"{outcome} after {elapsed}"

    def seconds_after(self, k: int) -> float | None:
        """How long the last job went on after its stage ``k``'s last report."""
        return self.time_left.seconds_after(k, self.ended)

    def startup(self) -> float | None:
        """Seconds from the start of the last job to its first progress report."""
        firsts = [t for t, _ in self.time_left.first.values()]
        return min(firsts) - self.started if firsts else None
