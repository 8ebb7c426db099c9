"""Training and fine-tuning of the UNet (segmentation and denoising).

API summary (see each function's docstring):

``train(images, labels=None, *, task='segment'|'denoise', n_classes=None, class_names=None,
noise='gaussian'|'rician'|'poisson', noise_level=0.05, self_supervised=False, axis=0,
init=None, base=16, patch_size=(128, 128), batch_size=8, iterations=None,
time_budget=None, lr=1e-2, val_fraction=0.15, val_block=None, val_gap=0, val_every=None,
seed=0, device='auto', normalization=None, augment=True, name=None,
progress=None, cancel=None, on_metrics=None) -> TrainResult``

- ``images``/``labels``: a Volume, a path or an array, or lists of them (paired in order).
- Slices along ``axis``; a contiguous held-out block (``val_fraction`` of the slices around
  the middle, or ``val_block=(start, stop)``) is never trained on and gives validation
  Dice per class (segmentation) or PSNR (denoising).
- ``n_classes`` defaults from the labels: max label 1 -> binary (1 sigmoid channel),
  else max + 1 classes (softmax).
- Denoising: clean ``images``; noise is added in the normalised domain with sigma =
  ``noise_level`` x the intensity range (a ``(low, high)`` pair samples a level per patch).
  ``self_supervised=True``: ``images`` are noisy scans, trained with blind-spot masking;
  ``labels`` may then hold clean references used only for validation PSNR.
- Stops after ``iterations`` or ``time_budget`` seconds (first reached; 500 iterations if
  neither). ``progress(done, total)``, ``cancel()`` -> :class:`~napari_unet.errors.Cancelled`,
  ``on_metrics(dict)`` at each validation (iteration, loss, lr, seconds, val_*).
- Same seed + data + iterations -> identical weights on CPU.

``TrainResult``: ``.model`` (a :class:`~napari_unet.model.checkpoint.Model`, provenance filled:
data file names, date, iterations, seconds, seed, metrics, held-out slices, noise),
``.history`` (list of dicts), ``.metrics`` (final ``val_*``), ``.losses`` (every
iteration), ``.iterations``, ``.seconds``, ``.stopped_by``.

``finetune(model, volume, labels, trusted, settings=FinetuneSettings(), *, axis=None,
progress=None, cancel=None, on_metrics=None, **overrides) -> TrainResult``

- A NEW model (the input is never changed), trained only on what a person checked:
  ``trusted`` is a per-slice (1-D along ``axis``, default the model's axis) or per-voxel
  boolean mask; unchecked labels are zeroed before sampling and masked out of the loss.
- 30 s on the CPU when neither ``iterations`` nor ``time_budget`` is given.
- Provenance adds ``parent`` (name, hash), ``corrected_slices`` and ``finetune`` details;
  ``.metrics`` holds ``trusted_dice_before`` / ``trusted_dice`` (fit to the checked voxels).

``TrainSettings``: the same options as a dataclass (what the CLI and the widget build).
"""

from __future__ import annotations

from .finetune import finetune
from .settings import FinetuneSettings, TrainResult, TrainSettings
from .trainer import train

__all__ = ["train", "finetune", "FinetuneSettings", "TrainSettings", "TrainResult"]
