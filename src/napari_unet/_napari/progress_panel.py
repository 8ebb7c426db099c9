"""A widget's own progress: a bar, 'done/total, about m:ss left', and the Cancel button.

napari's activity dock is collapsed by default, so every widget shows its job's progress
where the user pressed Run.
"""

from __future__ import annotations

import time

from magicgui.widgets import Container, Label, ProgressBar, PushButton

ETA_AFTER_S = 0.5  # a time left guessed from less than this is noise


def clock(seconds: float) -> str:
    """m:ss (or h:mm:ss) for a number of seconds."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def progress_text(done: int, total: int, elapsed: float, unit: str = "") -> str:
    """'60/189 slices, about 0:12 left' once the pace is known (unit '%': '32%')."""
    if unit == "%" and total:
        text = f"{100 * done // total}%"
    else:
        text = (f"{done}/{total}" if total else f"{done}") + (f" {unit}" if unit else "")
    if total and 0 < done < total and elapsed >= ETA_AFTER_S:
        text += f", about {clock(elapsed / done * (total - done))} left"
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
        self._start = time.monotonic()
        self.unit = ""

    def begin(self, unit: str = "") -> None:
        self._start, self.unit = time.monotonic(), unit
        self.bar.max, self.bar.value = 0, 0  # busy until the first report
        self.text.value = "starting..."
        self.bar.visible = self.text.visible = self.cancel_button.visible = True
        self.cancel_button.enabled = True

    def show(self, done: int, total: int) -> None:
        if self.bar.max != total:
            self.bar.max = total
        self.bar.value = min(done, total) if total else done
        self.text.value = progress_text(done, total, time.monotonic() - self._start,
                                        self.unit)

    def stopping(self) -> None:
        self.text.value = "stopping..."
        self.cancel_button.enabled = False

    def end(self, outcome: str) -> None:
        self.cancel_button.enabled = self.cancel_button.visible = False
        elapsed = clock(time.monotonic() - self._start)
        if self.bar.max == 0:
            self.bar.max = 1
        if outcome == "done":
            self.bar.value = self.bar.max
            self.text.value = f"done in {elapsed}"
        else:
            self.text.value = f"{outcome} after {elapsed}"
