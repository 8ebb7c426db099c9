"""A fast inference copy of a net: folded BatchNorm, one dtype, channels-last, fused ReLU.

Profiling the bundled UNet on the CPU (bf16, ``bench/inference.py --profile``) showed the
convolutions at about 40 % of the time: ReLU passes, max-pooling (which also writes int64
indices), concatenation and upsampling took the rest. The copy made here removes what can
be removed without changing a single output value:

- BatchNorm folded into the preceding conv (``fuse_conv_bn_eval``);
- weights cast to the compute dtype (bf16 on CPUs with native bf16 and on CUDA), so no
  autocast casts weights or activations at every layer (CPU autocast also runs bilinear
  upsampling and concatenation in float32, doubling their memory traffic);
- on the CPU, each Conv2d -> ReLU pair runs as one oneDNN convolution with a ReLU
  post-op (``torch.ops.mkldnn._convolution_pointwise``, what ``torch.compile`` emits);
  the fused op is checked against the plain pair once per dtype and skipped if it differs;
- 2 x 2 max-pooling of even-sized inputs as two ``torch.maximum`` of strided views (no
  index tensor; the same values, about 2x faster on the CPU), otherwise ``F.max_pool2d``;
- on the CPU, each decoder block's ``conv(cat(skip, up))`` as ``conv(skip) + conv(up)``
  with the add and the ReLU fused into the second oneDNN convolution: the concatenation
  (channels-last, so a copy of a few channels per pixel) took 10 to 16 % of the time.

The copy is kept (one per net, for the last device and dtype asked) until a weight or
statistic of the net changes in place or the net is gone, so the planes of one run, the
rounds of a correction loop and a warm-up before the first Run share it.

``torch.compile`` was measured as well (about 2x on the CPU) but compiles for 8 to 30 s on
two cores before the first slice, longer than the whole sample-brain run, so it is not used.
"""

from __future__ import annotations

import copy
import functools
import itertools
import threading
import weakref

import torch
import torch.nn.functional as F
from torch import nn

_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def inference_copy(net: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """An eval-mode copy of ``net`` on ``device`` in ``dtype``; ``net`` itself is untouched.
    The copy made last for ``net`` is returned again while ``net`` is unchanged."""
    key = (str(torch.device(device)), dtype, _stamp(net))
    with _LOCK:
        held = _COPIES.get(net)
    if held is not None and held[0] == key:
        return held[1]
    fast = _fast_copy(net, torch.device(device), dtype)
    with _LOCK:
        _COPIES[net] = (key, fast)
    return fast


def _stamp(net: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer of ``net`` is replaced or changed in place."""
    return tuple((t.data_ptr(), t._version, t.dtype, str(t.device))
                 for t in itertools.chain(net.parameters(), net.buffers()))


def _fast_copy(net: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    fast = fuse_batchnorm(copy.deepcopy(net).eval())
    for p in fast.parameters():
        p.requires_grad_(False)
    fast = fast.to(device=device, dtype=dtype, memory_format=torch.channels_last)
    _replace_max_pools(fast)
    if device.type == "cpu" and mkldnn_conv_relu_works(dtype):
        _fuse_conv_relu(fast)
        _split_decoder_concats(fast)
    return fast


def fuse_batchnorm(net: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d that follows a Conv2d in a Sequential into the conv."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            pair = isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
            if pair and bn.running_mean is not None:
                seq[i] = fuse_conv_bn_eval(conv, bn)
                seq[i + 1] = nn.Identity()
    return net


class EvenMaxPool2d(nn.Module):
    """``nn.MaxPool2d(2)`` without the index tensor: pairwise maxima of strided views."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if x.dim() != 4 or h % 2 or w % 2:
            return F.max_pool2d(x, 2)
        rows = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
        return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def _plain_pool(m: nn.Module) -> bool:
    two = (2, (2, 2))
    return (isinstance(m, nn.MaxPool2d) and m.kernel_size in two
            and m.stride in (*two, None) and m.padding in (0, (0, 0))
            and m.dilation in (1, (1, 1)) and not m.ceil_mode and not m.return_indices)


def _replace_max_pools(net: nn.Module) -> None:
    for parent in net.modules():
        for name, child in parent.named_children():
            if _plain_pool(child):
                setattr(parent, name, EvenMaxPool2d())


class ConvReLU(nn.Module):
    """Conv2d followed by ReLU as one oneDNN call (CPU only)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        return torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, *self.args,
                                                       "relu", [], "")


def _fusable(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str))


def _fuse_conv_relu(net: nn.Module) -> None:
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq)):
            j = i + 1
            while j < len(seq) and isinstance(seq[j], nn.Identity):
                j += 1
            if _fusable(seq[i]) and j < len(seq) and type(seq[j]) is nn.ReLU:
                seq[i], seq[j] = ConvReLU(seq[i]), nn.Identity()


class SplitUp(nn.Module):
    """A UNet ``Up`` block without its concatenation (same result up to rounding).

    ``conv(cat([skip, up]))`` equals ``conv_skip(skip) + conv_up(up)`` with the weight
    split along its input channels; the sum and the ReLU are fused into the second conv.
    """

    def __init__(self, block: nn.Module):
        super().__init__()
        first = block.conv.conv[0]
        self.up, self.rest = block.up, nn.Sequential(*list(block.conv.conv)[1:])
        self.weight, self.bias, self.args = first.weight, first.bias, first.args
        self._split: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        x1 = self.up(x1)
        dy, dx = x2.shape[2] - x1.shape[2], x2.shape[3] - x1.shape[3]
        if dy or dx:
            x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        w_skip, w_up = self._weights(x2.shape[1])
        conv = torch.ops.mkldnn._convolution_pointwise
        cl = torch.channels_last
        skip = conv(x2.contiguous(memory_format=cl), w_skip, self.bias, *self.args, "none",
                    [], "")
        y = conv.binary(x1.contiguous(memory_format=cl), skip, w_up, None, *self.args, "add",
                        1.0, "relu", [], "")
        return self.rest(y)

    def _weights(self, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        if c not in self._split:
            w = self.weight
            self._split[c] = (w[:, :c].contiguous(memory_format=torch.channels_last),
                              w[:, c:].contiguous(memory_format=torch.channels_last))
        return self._split[c]


def _split_decoder_concats(net: nn.Module) -> None:
    from ..model.unet import Up

    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if type(child) is Up and isinstance(child.conv.conv[0], ConvReLU):
                setattr(parent, name, SplitUp(child))


@functools.cache
def mkldnn_conv_relu_works(dtype: torch.dtype) -> bool:
    """True where oneDNN's fused conv (+ReLU, +add+ReLU) exists here and computes right."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        with torch.device("meta"):  # weights from ``gen``: torch's global generator is not ours
            conv = nn.Conv2d(3, 5, 3, padding=1)
        conv = conv.to_empty(device="cpu")
        with torch.no_grad():
            for p in conv.parameters():
                p.copy_(torch.rand(p.shape, generator=gen) * 0.4 - 0.2)  # as Conv2d draws
        conv = conv.to(dtype=dtype, memory_format=torch.channels_last)
        x = torch.randn(2, 3, 9, 7, generator=gen).to(dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        fused = ConvReLU(conv)
        with torch.inference_mode():
            want = torch.relu(conv(x)).float()
            got = fused(x).float()
            plain = torch.ops.mkldnn._convolution_pointwise(x, fused.weight, fused.bias,
                                                            *fused.args, "none", [], "")
            summed = torch.ops.mkldnn._convolution_pointwise.binary(
                x, plain, fused.weight, None, *fused.args, "add", 1.0, "relu", [], "").float()
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    twice = torch.relu(2 * conv(x).float() - conv.bias.float()[:, None, None])
    return (got.shape == want.shape and bool(torch.allclose(got, want, atol=tol, rtol=tol))
            and bool(torch.allclose(summed, twice, atol=4 * tol, rtol=4 * tol)))
