"""A live training plot (loss and the headline validation metric): a picture, not numbers.

Drawn for a narrow dark dock: small type, napari's dark colours, one metric (Dice for
segmentation, PSNR for denoising) named in the title rather than in a legend.
"""

from __future__ import annotations

import math

HEADLINE = ("val_dice", "val_psnr")  # the one figure per task worth a curve
BACKGROUND, FOREGROUND = "#262930", "#d1d2d4"  # napari's dark theme
LOSS_COLOR, METRIC_COLOR = "#56B4E9", "#E69F00"


class LossPlot:
    """Matplotlib figure in napari's Qt binding; ``add(entry)`` appends one log step."""

    def __init__(self, height: float = 2.2):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure
        from qtpy.QtWidgets import QSizePolicy

        self.figure = Figure(figsize=(3, height), layout="constrained",
                             facecolor=BACKGROUND)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setFixedHeight(int(height * 70))
        # follows the dock's width instead of asking for the figure's inches
        self.canvas.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.loss_ax = self.figure.add_subplot(111)
        self.metric_ax = self.loss_ax.twinx()
        self.history: list[dict] = []
        self.draw()

    def clear(self) -> None:
        self.history = []
        self.draw()

    def add(self, entry: dict) -> None:
        self.history.append(dict(entry))
        self.draw()

    def metric_key(self) -> str | None:
        """The headline validation metric present in the history, if any."""
        return next((k for k in HEADLINE if _finite(self.history, k)), None)

    def draw(self) -> None:
        ax, mx = self.loss_ax, self.metric_ax
        ax.clear()
        mx.clear()
        its = [e.get("iteration", i) for i, e in enumerate(self.history)]
        ax.plot(its, [e.get("loss", math.nan) for e in self.history], color=LOSS_COLOR,
                marker=".", markersize=3, linewidth=1)
        title = "loss" if self.history else "loss (not started)"
        key = self.metric_key()
        if key is not None:
            mx.plot(its, [e.get(key, math.nan) for e in self.history], color=METRIC_COLOR,
                    marker=".", markersize=3, linewidth=1)
            title = f"loss (blue), {key.removeprefix('val_')} (orange)"
        _style(ax, mx, title)
        self.canvas.draw_idle()


def _style(ax, mx, title: str) -> None:
    ax.set_facecolor(BACKGROUND)
    ax.set_title(title, fontsize=7, color=FOREGROUND)
    ax.set_xlabel("iteration", fontsize=7, color=FOREGROUND)
    for axis in (ax, mx):
        axis.tick_params(labelsize=6, colors=FOREGROUND)
        for spine in axis.spines.values():
            spine.set_color(FOREGROUND)


def _finite(history: list[dict], key: str) -> bool:
    vals = [e.get(key) for e in history]
    return any(isinstance(v, int | float) and math.isfinite(v) for v in vals)
