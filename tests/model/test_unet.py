import pytest
import torch

from napari_unet.model.tasks import make_task
from napari_unet.model.unet import Architecture, UNet

SIZES = [(197, 233), (1, 1), (1, 7), (5, 3), (17, 31), (64, 48)]


@pytest.mark.parametrize("upsampling", ["bilinear", "transposed"])
@pytest.mark.parametrize("variant", ["original", "milesial"])
def test_any_size_gives_same_size_output(upsampling, variant):
    net = UNet(1, 3, base=4, upsampling=upsampling, variant=variant).eval()
    with torch.no_grad():
        for h, w in SIZES:
            assert net(torch.randn(2, 1, h, w)).shape == (2, 3, h, w)


@pytest.mark.parametrize(
    "task",
    [make_task("segment", n_classes=4), make_task("segment", n_classes=1),
     make_task("denoise", in_channels=1), make_task("denoise", in_channels=2)],
    ids=["multiclass", "binary", "denoise", "denoise-2ch"],
)
def test_shapes_for_every_task_at_odd_sizes(task):
    net = UNet(task.in_channels, task.out_channels, base=4).eval()
    x = torch.randn(1, task.in_channels, 37, 51)
    with torch.no_grad():
        out = task.decide(task.activate(net(x)))
    if task.kind == "denoise":
        assert out.shape == (1, task.in_channels, 37, 51)
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    else:
        assert out.shape == (1, 37, 51)
        assert int(out.max()) < task.n_labels


def test_default_width_matches_the_original():
    net = UNet(1, 2)
    assert net.arch == Architecture(1, 2, 64, "bilinear", "original")
    assert net.inc.conv.conv[0].out_channels == 64
    assert net.down4.mpconv[1].conv[3].out_channels == 512


def test_edge_padding_does_not_shift_content():
    """An object in the image keeps its place in the output at a size needing padding."""
    torch.manual_seed(0)
    net = UNet(1, 1, base=4).eval()
    x = torch.zeros(1, 1, 40, 40)
    x[..., 10:15, 20:25] = 1.0
    with torch.no_grad():
        full = net(x)
        cropped = net(x[..., :35, :37])
    # away from the cropped border the two agree closely: no global shift
    diff = (full[..., 5:25, 10:30] - cropped[..., 5:25, 10:30]).abs().max()
    assert float(diff) < 0.05 * float(full.abs().max())


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="upsampling"):
        UNet(1, 1, upsampling="nearest")
    with pytest.raises(ValueError, match=">= 1"):
        UNet(1, 0)


def test_flops_per_pixel_counts_first_conv():
    net = UNet(1, 1, base=8)
    # the first 3x3 conv alone is 2*9*1*8 FLOPs per pixel; the total must exceed it
    assert net.flops_per_pixel() > 2 * 9 * 8
