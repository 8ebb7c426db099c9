"""The first Run without the cold start: a process's one-off costs, paid in advance.

The first prediction in a process pays for work that later ones do not: importing MONAI,
SimpleITK and the inference modules, building the net's inference copy (folded BatchNorm,
bf16), testing oneDNN's fused convolutions, and oneDNN / cuDNN creating their kernels.
The first Learn of a correction loop also imports what torch's optimisers bring along
and runs its first backward pass. On the sample brain (three planes, 1 torch thread) a
fresh process's first ``predict`` took 1.3x the second (``bench/cold_start.py``).

:func:`warm_up` does all of that on a tiny volume and, given the scan, runs the net once on
each input shape the scan's prediction will give it (the kernels are made per shape:
crops of a head's slices come in 40 to 60 sizes and batch sizes over three planes, about
25 ms each); :func:`warm_up_soon` does it in a background thread: the widgets call it
when a model or a scan is chosen, while the person still picks settings, so the first
Run costs what a later one does.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Callable

import numpy as np

_DONE: set = set()  # (what was warmed, device, precision, learning)
_LOCK = threading.Lock()
_STOP = threading.Event()  # a job starts: the scan's kernels wait for the next warm-up
_THREADS: list[threading.Thread] = []


def stop_warming(wait: float = 30.0) -> None:
    """Stop making a scan's kernels in the background (within one shape, about 60 ms)
    and wait for the warm-up to end (its first part, a tiny prediction, cannot be
    stopped: a second or two in a fresh process): a job never shares the CPU, or torch's
    thread count (which decides how its sums are split, so its last bits), with it."""
    _STOP.set()
    for thread in list(_THREADS):
        thread.join(wait)


# A warm-up still inside torch when the interpreter exits (napari closed, a script ended a
# second after choosing a model) is frozen there, and the process aborted ("terminate called
# without an active exception", exit 134) instead of exiting.
atexit.register(stop_warming)


def warm_up(model, settings=None, learning: bool = False, volume=None,
            cancel: Callable[[], bool] | None = None) -> float:
    """Run ``model`` once on a tiny volume the way ``predict`` runs it with ``settings``
    (an :class:`~napari_unet.inference.predictor.InferenceSettings`, default: the
    defaults), and with ``learning`` one fine-tuning step on a copy of its net; with a
    ``volume`` (the scan the person will run it on), once on every input shape its
    prediction will give the net (:func:`~.predictor.make_kernels`, until ``cancel()``).
    Returns the seconds it took. ``model`` itself is not changed."""
    from .predictor import InferenceSettings, predict

    start = time.perf_counter()
    settings = settings or InferenceSettings()
    channels = model.task.in_channels
    shape = (8, 48, 48) if channels == 1 else (8, 48, 48, channels)
    tiny = np.random.default_rng(0).random(shape, dtype=np.float32)
    tiny[:, :8] = 0  # some air, so the crop's path runs too
    predict(tiny, model, settings, planes="one", axis=0, probabilities=False,
            uncertainty=False)
    if learning:
        _one_step(model, settings)
    if volume is not None:
        make_scan_kernels(model, settings, volume, cancel)
    return time.perf_counter() - start


def make_scan_kernels(model, settings, volume, cancel=None) -> int:
    """The kernels for ``volume``'s planes as ``predict`` would run them with ``settings``
    (until ``cancel()``)."""
    from .planes import one_plane_reason, planes_wanted
    from .predictor import _unpack, make_kernels, resolve_axis

    array, spacing, name = _unpack(volume)
    axis = resolve_axis(settings.axis, spacing, model.meta.default_axis,
                        getattr(volume, "direction", None), array.shape)
    three = planes_wanted(settings.planes, model) and \
        one_plane_reason(array, spacing, model, name) is None
    return make_kernels(volume, model, settings, (0, 1, 2) if three else (axis,), cancel)


def _one_step(model, settings) -> None:
    """One optimiser step on a copy of the net: the optimiser's imports, autocast, the
    first backward pass's kernels."""
    import copy

    import torch

    from ..devices import autocast_for, resolve_device
    from ..training.trainer import training_autocast

    device = resolve_device(settings.device)
    net = copy.deepcopy(model.net).to(device).train()
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-6)
    gen = torch.Generator().manual_seed(0)  # not torch's global one: a seeded run may be on
    x = torch.rand(2, model.meta.architecture.in_channels, 32, 32, generator=gen).to(device)
    with autocast_for(device, training_autocast(device, "auto", model.task)):
        loss = net(x.contiguous(memory_format=torch.channels_last)).float().mean()
    loss.backward()
    opt.step()


def warm_up_soon(load: Callable, settings=None, learning: bool = False,
                 key: object = None, volume: Callable | None = None
                 ) -> threading.Thread | None:
    """:func:`warm_up` in a daemon thread on the model ``load()`` returns (and the scan
    ``volume()`` returns, if given); None when the same ``key`` (e.g. the model's name or
    file, and the scan) was warmed already for these settings. Failures are ignored: the
    real run reports its own."""
    from .predictor import InferenceSettings

    settings = settings or InferenceSettings()
    mark = (key, str(settings.device), settings.precision, learning)
    with _LOCK:
        if key is not None and mark in _DONE:
            return None
        _DONE.add(mark)

    def work():
        try:
            warm_up(load(), settings, learning, volume() if volume else None, _STOP.is_set)
        except Exception:  # noqa: BLE001 - a warm-up never fails anything
            _STOP.set()
        if _STOP.is_set():  # failed or stopped by a job: the next choice warms again
            with _LOCK:
                _DONE.discard(mark)

    def run():
        try:
            work()
        finally:
            _THREADS.remove(thread)

    _STOP.clear()
    thread = threading.Thread(target=run, name="napari-unet warm-up", daemon=True)
    _THREADS.append(thread)
    thread.start()
    return thread
