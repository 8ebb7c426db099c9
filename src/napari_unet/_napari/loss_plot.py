"""A live training plot (loss and validation metrics) as a Qt widget: a picture, not numbers."""

from __future__ import annotations

import math


class LossPlot:
    """Matplotlib figure in napari's Qt binding; ``add(entry)`` appends one log step."""

    def __init__(self, height: float = 2.4):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, height), tight_layout=True)
        from qtpy.QtWidgets import QSizePolicy

        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setFixedHeight(int(height * 70))
        # follows the dock's width instead of asking for the figure's 4 inches
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

    def metric_keys(self) -> list[str]:
        keys = {k for e in self.history for k in e if k.startswith("val_")}
        return sorted(k for k in keys if _finite(self.history, k))

    def draw(self) -> None:
        ax, mx = self.loss_ax, self.metric_ax
        ax.clear()
        mx.clear()
        its = [e.get("iteration", i) for i, e in enumerate(self.history)]
        losses = [e.get("loss", math.nan) for e in self.history]
        ax.plot(its, losses, color="tab:blue", marker=".", label="training loss")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss", color="tab:blue")
        for key in self.metric_keys():
            vals = [e.get(key, math.nan) for e in self.history]
            mx.plot(its, vals, marker=".", label=key.removeprefix("val_"))
        if self.metric_keys():
            mx.set_ylabel("validation")
            mx.legend(loc="center right", fontsize="small")
        ax.set_title("training" if self.history else "training (not started)",
                     fontsize="small")
        self.canvas.draw_idle()


def _finite(history: list[dict], key: str) -> bool:
    vals = [e.get(key) for e in history]
    return any(isinstance(v, int | float) and math.isfinite(v) for v in vals)
