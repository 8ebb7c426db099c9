"""The optimisation loop shared by training and fine-tuning.

Stops after ``iterations`` or ``time_budget`` seconds (whichever comes first), reports
``progress(done, total)`` (iterations, or whole seconds of the budget), raises
:class:`~napari_unet.errors.Cancelled` as soon as ``cancel()`` returns True, and validates
every ``val_every`` iterations (or every tenth of the time budget) and at the end.
The learning rate warms up linearly over the first 3% of the run, then follows a cosine
from ``lr`` down to 5% of it (progress measured in iterations or in elapsed budget).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..errors import Cancelled

Batch = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]


@dataclass
class LoopConfig:
    iterations: int | None = None
    time_budget: float | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_every: int | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    channels_last: bool = True


@dataclass
class LoopOutcome:
    losses: list[float] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    iterations: int = 0
    seconds: float = 0.0
    stopped_by: str = "iterations"


def run_loop(net: torch.nn.Module, next_batch: Callable[[], Batch], loss_fn: Callable,
             cfg: LoopConfig, validate: Callable[[torch.nn.Module], dict] | None = None,
             params=None, progress=None, cancel=None, on_metrics=None,
             train_mode: Callable[[torch.nn.Module], None] | None = None) -> LoopOutcome:
    """Optimise ``net`` in place on batches ``(inputs, target, mask)`` from ``next_batch``."""
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    net.to(cfg.device, memory_format=fmt)
    params = [p for p in (params or net.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    out, start = LoopOutcome(), time.perf_counter()
    clock = _Clock(cfg, start)
    since_log: list[float] = []
    try:
        while not clock.done(out.iterations):
            if cancel is not None and cancel():
                raise _cancelled(out, start)
            _set_lr(opt, cfg.lr, clock.fraction(out.iterations))
            (train_mode or _train)(net)
            loss = _step(net, next_batch(), loss_fn, opt, cfg.device, fmt)
            out.losses.append(loss)
            since_log.append(loss)
            out.iterations += 1
            if progress is not None:
                progress(*clock.progress(out.iterations))
            if clock.validation_due(out.iterations) and not clock.done(out.iterations):
                _log(out, net, validate, since_log, opt, start, on_metrics)
        _log(out, net, validate, since_log, opt, start, on_metrics)
    finally:
        net.to(memory_format=torch.contiguous_format).eval()
    _finish(out, start, clock.stopped_by(out.iterations))
    return out


def _finish(out: LoopOutcome, start: float, stopped_by: str) -> None:
    out.seconds = time.perf_counter() - start
    out.stopped_by = stopped_by
    last = out.history[-1] if out.history else {}
    out.metrics = {k: v for k, v in last.items() if k.startswith("val_")}


def _cancelled(out: LoopOutcome, start: float) -> Cancelled:
    """The exception, carrying what was learnt so far (``.outcome``) for callers to keep."""
    _finish(out, start, "cancelled")
    exc = Cancelled(f"training cancelled after {out.iterations} iterations")
    exc.outcome = out
    return exc


def _train(net: torch.nn.Module) -> None:
    net.train()


def _step(net, batch: Batch, loss_fn, opt, device, fmt) -> float:
    x, target, mask = batch
    x = x.to(device).contiguous(memory_format=fmt)
    target = target.to(device)
    mask = None if mask is None else mask.to(device)
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(net(x), target, mask)
    loss.backward()
    opt.step()
    return float(loss.detach())


WARMUP = 0.03


def _set_lr(opt, lr: float, fraction: float) -> None:
    scale = 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, fraction)))
    scale *= min(1.0, 0.1 + 0.9 * fraction / WARMUP)
    for group in opt.param_groups:
        group["lr"] = lr * scale


def _log(out: LoopOutcome, net, validate, since_log: list[float], opt, start, on_metrics):
    entry = {"iteration": out.iterations,
             "loss": sum(since_log) / len(since_log) if since_log else float("nan"),
             "lr": opt.param_groups[0]["lr"],
             "seconds": round(time.perf_counter() - start, 3)}
    if validate is not None:
        net.eval()
        with torch.no_grad():
            entry.update(validate(net))
    since_log.clear()
    out.history.append(entry)
    if on_metrics is not None:
        on_metrics(dict(entry))


class _Clock:
    """When to stop, validate and how far along the run is."""

    def __init__(self, cfg: LoopConfig, start: float):
        self.cfg, self.start = cfg, start
        self.val_every = cfg.val_every or (max(1, cfg.iterations // 10) if cfg.iterations
                                           and not cfg.time_budget else None)
        self.next_val_time = (cfg.time_budget or 0) / 10

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def fraction(self, it: int) -> float:
        f = 0.0
        if self.cfg.iterations:
            f = it / self.cfg.iterations
        if self.cfg.time_budget:
            f = max(f, self.elapsed() / self.cfg.time_budget)
        return f

    def done(self, it: int) -> bool:
        return self.stopped_by(it) is not None

    def stopped_by(self, it: int) -> str | None:
        if self.cfg.iterations and it >= self.cfg.iterations:
            return "iterations"
        if self.cfg.time_budget and self.elapsed() >= self.cfg.time_budget:
            return "time_budget"
        return None

    def progress(self, it: int) -> tuple[int, int]:
        if self.cfg.iterations:
            return it, self.cfg.iterations
        total = math.ceil(self.cfg.time_budget)
        return min(total, int(self.elapsed())), total

    def validation_due(self, it: int) -> bool:
        if self.val_every:
            return it % self.val_every == 0
        if self.elapsed() >= self.next_val_time:
            self.next_val_time += self.cfg.time_budget / 10
            return True
        return False

