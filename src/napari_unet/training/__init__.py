"""Training and fine-tuning of the UNet (segmentation and denoising).

:func:`train` (settings: :class:`TrainSettings`) and :func:`finetune` (settings:
:class:`FinetuneSettings`) both return a :class:`TrainResult`; their docstrings and the
settings classes are the reference. Modules: ``trainer`` and ``finetune`` (the two
entry points), ``recipes`` (what a batch and a validation mean per task), ``data``
(inputs, slices, the device-resident :class:`~.data.PatchSampler`), ``augment``
(batched augmentation and domain randomisation), ``planes`` (the other planes'
slices), ``loop`` (the optimisation loop), ``losses``, ``noise``, ``blindspot``,
``metrics``, ``determinism``.
"""

from __future__ import annotations

from .finetune import finetune
from .settings import FinetuneSettings, TrainResult, TrainSettings
from .trainer import train

__all__ = ["train", "finetune", "FinetuneSettings", "TrainSettings", "TrainResult"]
