"""The optimisation loop shared by training and fine-tuning.

Stops after ``iterations`` or ``time_budget`` seconds (whichever comes first), reports
``progress(done, total)`` (iterations, or whole seconds of the budget), raises
:class:`~napari_unet.errors.Cancelled` as soon as ``cancel()`` returns True, and validates
every ``val_every`` iterations (or every fifth of the run) and at the end.
The learning rate warms up linearly over the first 3% of the run, then follows a cosine
from ``lr`` down to 5% of it (progress measured in iterations or in elapsed budget, so
a time budget gets the whole schedule whatever the machine's speed).

Device speed: the forward pass runs under ``autocast`` (bf16 on GPUs and on CPUs with
native bf16; the loss in float32), inputs in channels-last, and the loss stays on the
device: it is read back every ``log_every`` iterations (one host sync), not every step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..devices import autocast_for
from ..errors import Cancelled, NapariUnetError

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
    autocast: torch.dtype | None = None  # mixed precision of the forward pass; None: float32
    log_every: int = 50  # iterations between reads of the loss on the host


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
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=cfg.device.type == "cuda" or None)
    scaler = torch.amp.GradScaler("cuda") if cfg.autocast == torch.float16 else None
    out, start = LoopOutcome(), time.perf_counter()
    clock = _Clock(cfg, start)
    losses = _Losses(out)
    try:
        while not clock.done(out.iterations):
            if cancel is not None and cancel():
                losses.flush()
                raise _cancelled(out, start)
            _set_lr(opt, cfg.lr, clock.fraction(out.iterations))
            (train_mode or _train)(net)
            losses.add(_step(net, next_batch(), loss_fn, opt, cfg, fmt, scaler))
            out.iterations += 1
            if out.iterations % max(1, cfg.log_every) == 0:
                losses.flush()
            if progress is not None:
                progress(*clock.progress(out.iterations))
            if clock.validation_due(out.iterations) and not clock.done(out.iterations):
                _log(out, net, validate, losses, opt, start, on_metrics)
        _log(out, net, validate, losses, opt, start, on_metrics)
    finally:
        net.to(memory_format=torch.contiguous_format).eval()
    _finish(out, start, clock.stopped_by(out.iterations))
    return out


class _Losses:
    """Per-iteration losses kept on the device until read back in one go."""

    def __init__(self, out: LoopOutcome):
        self.out, self.pending, self.since_log = out, [], []

    def add(self, loss: torch.Tensor) -> None:
        self.pending.append(loss)

    def flush(self) -> None:
        if not self.pending:
            return
        values = torch.stack(self.pending).float().cpu().tolist()
        self.pending.clear()
        self.out.losses.extend(values)
        self.since_log.extend(values)
        if not all(math.isfinite(v) for v in values):
            raise NapariUnetError(
                f"training diverged: the loss became {values[-1]} by iteration "
                f"{len(self.out.losses)}; lower the learning rate or check the inputs")

    def mean_since_log(self) -> float:
        self.flush()
        mean = sum(self.since_log) / len(self.since_log) if self.since_log else float("nan")
        self.since_log.clear()
        return mean


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


def _step(net, batch: Batch, loss_fn, opt, cfg: LoopConfig, fmt, scaler) -> torch.Tensor:
    x, target, mask = batch
    x = x.to(cfg.device, non_blocking=True).contiguous(memory_format=fmt)
    target = target.to(cfg.device, non_blocking=True)
    mask = None if mask is None else mask.to(cfg.device, non_blocking=True)
    opt.zero_grad(set_to_none=True)
    with autocast_for(cfg.device, cfg.autocast):
        logits = net(x)
    loss = loss_fn(logits.float(), target, mask)
    if scaler is None:
        loss.backward()
        opt.step()
    else:  # float16 needs loss scaling; bf16 does not
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return loss.detach()


WARMUP = 0.03


def _set_lr(opt, lr: float, fraction: float) -> None:
    scale = 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, fraction)))
    scale *= min(1.0, 0.1 + 0.9 * fraction / WARMUP)
    for group in opt.param_groups:
        group["lr"] = lr * scale


def _log(out: LoopOutcome, net, validate, losses: _Losses, opt, start, on_metrics):
    entry = {"iteration": out.iterations, "loss": losses.mean_since_log(),
             "lr": opt.param_groups[0]["lr"],
             "seconds": round(time.perf_counter() - start, 3)}
    if validate is not None:
        net.eval()
        with torch.no_grad():
            entry.update(validate(net))
    out.history.append(entry)
    if on_metrics is not None:
        on_metrics(dict(entry))


VALIDATIONS = 5  # per run, unless val_every says otherwise


class _Clock:
    """When to stop, validate and how far along the run is."""

    def __init__(self, cfg: LoopConfig, start: float):
        self.cfg, self.start = cfg, start
        self.val_every = cfg.val_every or (max(1, cfg.iterations // VALIDATIONS)
                                           if cfg.iterations and not cfg.time_budget else None)
        self.next_val_time = (cfg.time_budget or 0) / VALIDATIONS

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
            self.next_val_time += self.cfg.time_budget / VALIDATIONS
            return True
        return False

