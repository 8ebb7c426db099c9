"""Tiny models (base-4 UNets with non-trivial BatchNorm) and small synthetic scans."""

from __future__ import annotations

import numpy as np
import torch

from napari_unet.io.volume import Volume
from napari_unet.model.checkpoint import Model
from napari_unet.model.tasks import make_task


def tiny_model(kind="segment", n_classes=None, in_channels=1, patch=(32, 32), seed=0,
               normalization=None, default_axis=0) -> Model:
    torch.manual_seed(seed)
    task = make_task(kind, in_channels=in_channels, n_classes=n_classes)
    model = Model.new(task, base=4, normalization=normalization, patch_size=patch,
                      default_axis=default_axis)
    _randomise_batchnorm(model.net)
    return model.to("cpu")


def _randomise_batchnorm(net) -> None:
    """Non-trivial running stats, so folding BN into the convs is really exercised."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    net.eval()


def scan(shape=(5, 20, 24), seed=0, spacing=(1.0, 1.0, 1.0), dtype=np.float32) -> Volume:
    rng = np.random.default_rng(seed)
    zz = np.linspace(-1, 1, shape[0])[:, None, None]
    yy = np.linspace(-1, 1, shape[1])[None, :, None]
    xx = np.linspace(-1, 1, shape[2])[None, None, :]
    blob = 1000.0 * ((zz**2 + yy**2 + xx**2) < 0.5) + 100 * rng.standard_normal(shape[:3])
    array = blob.astype(dtype)
    if len(shape) == 4:
        array = np.stack([array * (c + 1) for c in range(shape[3])], axis=-1)
    return Volume(array, spacing=spacing, name=f"scan{shape}")


def constant_model(p_foreground: float, kind: str = "segment", n_classes: int = 2,
                   seed: int = 0) -> Model:
    """A tiny model whose output ignores its input: the last convolution's weights are
    zero and its bias gives class 1 the probability ``p_foreground`` everywhere (the other
    classes share the rest), so its own Dice estimate is known by hand."""
    import math

    model = tiny_model(kind, n_classes=n_classes, seed=seed)
    conv = model.net.outc.conv
    with torch.no_grad():
        conv.weight.zero_()
        if n_classes == 1:  # sigmoid
            conv.bias.fill_(math.log(p_foreground / (1 - p_foreground)))
        else:  # softmax: class 1 gets p, the others (1 - p) / (n - 1) each
            rest = (1 - p_foreground) / (n_classes - 1)
            conv.bias.fill_(math.log(rest))
            conv.bias[1] = math.log(p_foreground)
    return model
