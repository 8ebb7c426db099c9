"""The callables every long job takes: ``progress(done, total)`` and ``cancel() -> bool``.

The widgets pass callables that feed a progress bar from a thread worker, the CLI a
terminal bar; the core only calls them (and raises ``Cancelled`` when ``cancel()``).
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


class Stages:
    """Splits one progress bar over ``n`` consecutive stages of a job."""

    def __init__(self, progress: Progress | None, n: int, steps: int = 100):
        self.progress, self.n, self.steps = progress, n, steps

    def __call__(self, k: int) -> Progress | None:
        """The progress callable of stage ``k`` (0-based)."""
        if self.progress is None:
            return None

        def report(done: int, total: int) -> None:
            frac = done / total if total else 1.0
            self.progress(int(self.steps * (k + frac)), self.steps * self.n)

        return report
