"""The 2D UNet of the original PyTorch implementation, fixed to accept any H x W.

Module names follow the original code (``inc.conv.conv.0``, ``down1.mpconv.1.conv.0``,
``up1.conv.conv.0``, ``outc.conv``) so its state_dicts load directly; the widely used
milesial layout differs in channel plan and conv bias, selected by ``variant``.
The original padded height and width in swapped order and broke on sizes that are not
multiples of 16; here the input is edge-padded to a multiple of 16 and the output
cropped back, so every size (down to 1 x 1) gives an output of the input's size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Upsampling = Literal["bilinear", "transposed"]
Variant = Literal["original", "milesial"]
DEPTH = 4
MULTIPLE = 2**DEPTH


@dataclass(frozen=True)
class Architecture:
    """Everything needed to rebuild the network; stored in every model file."""

    in_channels: int = 1
    out_channels: int = 1
    base: int = 64
    upsampling: Upsampling = "bilinear"
    variant: Variant = "original"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Architecture:
        keys = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in keys})


class DoubleConv(nn.Module):
    """(Conv3x3 -> BN -> ReLU) twice; ``.conv`` keeps the original's key names."""

    def __init__(self, cin: int, cout: int, mid: int | None = None, bias: bool = True):
        super().__init__()
        mid = mid or cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, mid, 3, padding=1, bias=bias),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 3, padding=1, bias=bias),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class InConv(nn.Module):
    def __init__(self, cin: int, cout: int, bias: bool):
        super().__init__()
        self.conv = DoubleConv(cin, cout, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Down(nn.Module):
    def __init__(self, cin: int, cout: int, bias: bool):
        super().__init__()
        self.mpconv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(cin, cout, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mpconv(x)


class Up(nn.Module):
    """Upsample, pad to the skip's size (height and width in the right order), concat."""

    def __init__(self, up: nn.Module, conv: DoubleConv):
        super().__init__()
        self.up = up
        self.conv = conv

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        x1 = self.up(x1)
        dy = x2.shape[2] - x1.shape[2]
        dx = x2.shape[3] - x1.shape[3]
        if dy or dx:
            x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([x2, x1], dim=1))


class OutConv(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _bilinear() -> nn.Module:
    return nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)


def _channel_plan(arch: Architecture) -> tuple[list[int], list[tuple[int, int, int | None]]]:
    """Encoder widths and (in, out, mid) of each up block for the two known layouts."""
    b = arch.base
    if arch.variant == "original":
        enc = [b, 2 * b, 4 * b, 8 * b, 8 * b]
        ups = [(16 * b, 4 * b, None), (8 * b, 2 * b, None), (4 * b, b, None), (2 * b, b, None)]
        return enc, ups
    f = 2 if arch.upsampling == "bilinear" else 1
    enc = [b, 2 * b, 4 * b, 8 * b, 16 * b // f]
    ups = []
    for cin, cout in [(16 * b, 8 * b // f), (8 * b, 4 * b // f), (4 * b, 2 * b // f), (2 * b, b)]:
        ups.append((cin, cout, cin // 2 if f == 2 else None))
    return enc, ups


def _up_block(arch: Architecture, cin: int, cout: int, mid: int | None, bias: bool) -> Up:
    if arch.upsampling == "bilinear":
        return Up(_bilinear(), DoubleConv(cin, cout, mid, bias=bias))
    if arch.variant == "original":  # ConvTranspose keeps the channel count of the deep path
        return Up(nn.ConvTranspose2d(cin // 2, cin // 2, 2, stride=2), DoubleConv(cin, cout))
    return Up(nn.ConvTranspose2d(cin, cin // 2, 2, stride=2), DoubleConv(cin, cout, bias=bias))


class UNet(nn.Module):
    """UNet(in_channels, out_channels, base=64, upsampling='bilinear').

    ``out_channels`` comes from the task rules (:mod:`napari_unet.model.tasks`), never guessed.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base: int = 64,
        upsampling: Upsampling = "bilinear",
        variant: Variant = "original",
    ):
        super().__init__()
        if upsampling not in ("bilinear", "transposed"):
            raise ValueError(f"upsampling must be 'bilinear' or 'transposed', not {upsampling!r}")
        if variant not in ("original", "milesial"):
            raise ValueError(f"variant must be 'original' or 'milesial', not {variant!r}")
        if base < 1 or in_channels < 1 or out_channels < 1:
            raise ValueError("in_channels, out_channels and base must all be >= 1")
        self.arch = Architecture(in_channels, out_channels, base, upsampling, variant)
        bias = variant == "original"
        enc, ups = _channel_plan(self.arch)
        self.inc = InConv(in_channels, enc[0], bias)
        self.down1 = Down(enc[0], enc[1], bias)
        self.down2 = Down(enc[1], enc[2], bias)
        self.down3 = Down(enc[2], enc[3], bias)
        self.down4 = Down(enc[3], enc[4], bias)
        self.up1, self.up2, self.up3, self.up4 = (
            _up_block(self.arch, cin, cout, mid, bias) for cin, cout, mid in ups
        )
        self.outc = OutConv(ups[-1][1], out_channels)

    @classmethod
    def from_architecture(cls, arch: Architecture) -> UNet:
        return cls(**arch.to_dict())

    @classmethod
    def to_load(cls, arch: Architecture) -> UNet:
        """The net ``arch`` describes with uninitialised weights, for a state_dict to fill.

        Drawing initial weights that a file replaces would take numbers from torch's global
        generator: a model loaded in a background thread (a warm-up) would then change the
        weights that a seeded ``Model.new`` elsewhere (training, a test) draws at the time.
        """
        with torch.device("meta"):
            net = cls.from_architecture(arch)
        return net.to_empty(device="cpu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % MULTIPLE, (-w) % MULTIPLE
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2], mode="replicate")
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x = self.up1(self.down4(x4), x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.outc(self.up4(x, x1))
        if ph or pw:
            x = x[..., ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
        return x

    def flops_per_pixel(self) -> float:
        """Multiply-adds x2 per input pixel (convs only), for benchmarks' FLOP/s."""
        total = 0.0
        scale = 1.0
        for name, m in self.named_modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                level = _level(name)
                scale = 4.0 ** -level
                k = m.kernel_size[0] * m.kernel_size[1]
                total += 2.0 * k * m.in_channels * m.out_channels / m.groups * scale
        return total


def receptive_field(depth: int = DEPTH, convs: int = 2, kernel: int = 3) -> int:
    """Pixels across the region of the input that one output pixel depends on (theory).

    ``depth`` 2x2 poolings with ``convs`` ``kernel`` x ``kernel`` convolutions at every level
    of the encoder and the decoder, bilinear upsampling between them: 230 pixels for this
    UNet. Most of that reach carries almost no weight (the effective receptive field is
    much narrower, see :mod:`napari_unet.inference.crop`).
    """
    grow = convs * (kernel - 1)
    field, step = 1, 1
    for _ in range(depth):  # encoder: convs at this level, then pool
        field += grow * step + step
        step *= 2
    field += grow * step  # the bottom level
    for _ in range(depth):  # decoder: upsample (two source pixels), then convs
        field += step
        step //= 2
        field += grow * step
    return field


def _level(name: str) -> int:
    """Resolution level (0 = full) at which a named conv runs."""
    top = name.split(".")[0]
    if top in ("inc", "outc", "up4"):
        return 0 if not name.startswith("up4.up") else 1
    kind, idx = top[:-1], int(top[-1])
    if kind == "down":
        return idx
    return (DEPTH - idx) + (1 if name.startswith(f"{top}.up") else 0)


# --- sizes, checked before a UNet is built from a file's numbers -----------------------------


def state_size(arch: Architecture) -> int:
    """Numbers in the state_dict of the UNet ``arch`` describes, counted without allocating
    them (the network is built on torch's meta device); -1 when even that overflows."""
    try:
        with torch.device("meta"):
            net = UNet.from_architecture(arch)
    except (RuntimeError, OverflowError):
        return -1
    return sum(t.numel() for t in net.state_dict().values())


def activation_bytes(arch: Architecture, patch: tuple[int, int]) -> int:
    """A sane estimate of one float32 patch's activations in a forward pass: at each level
    a double conv keeps a few tensors of its width alive besides the skip connections."""
    h, w = (-(-int(n) // MULTIPLE) * MULTIPLE for n in patch)
    widths, _ = _channel_plan(arch)
    per_pixel = sum(6 * c / 4**level for level, c in enumerate(widths))
    per_pixel += arch.in_channels + 2 * arch.out_channels  # input, logits, probabilities
    return int(4 * h * w * per_pixel)


def check_size(arch: Architecture, patch: tuple[int, int], what: str, error: type) -> None:
    """Raise ``error`` when building ``arch`` and running it on one ``patch`` would need
    more memory than ``limits`` allows (weights twice: as read and as the network's)."""
    from ..limits import check_allocation

    numbers = state_size(arch)
    if numbers < 0:
        raise error(f"{what}: a UNet of base width {arch.base} has tensors too large to "
                    "describe; the file is damaged or not a UNet")
    check_allocation(8 * numbers + activation_bytes(arch, patch),
                     f"{what}: a UNet of base width {arch.base} ({numbers:,} weights) on "
                     f"{patch[0]} x {patch[1]} patches", error)
