import pytest
import torch

from napari_unet.errors import TaskError
from napari_unet.model.tasks import TaskSpec, make_task


def test_multiclass_softmax_argmax():
    t = make_task("segment", n_classes=3, class_names=["bg", "gm", "wm"])
    assert t.out_channels == 3 and not t.is_binary and t.n_labels == 3
    logits = torch.tensor([[[[0.0]], [[5.0]], [[1.0]]]])
    probs = t.activate(logits)
    assert torch.allclose(probs.sum(1), torch.ones(1, 1, 1))
    assert t.decide(probs).item() == 1
    assert "3 classes" in t.describe() and "gm" in t.describe()


def test_binary_sigmoid_threshold():
    t = make_task("segment", n_classes=1, threshold=0.7)
    assert t.out_channels == 1 and t.is_binary and t.class_names == ("background", "foreground")
    probs = t.activate(torch.tensor([[[[0.0, 1.0]]]]))  # sigmoid: 0.5, 0.73
    assert t.decide(probs).tolist() == [[[0, 1]]]


def test_denoise_out_equals_in():
    t = make_task("denoise", in_channels=2)
    assert t.out_channels == 2 and t.n_classes == 0
    out = t.decide(t.activate(torch.randn(1, 2, 4, 4)))
    assert out.shape == (1, 2, 4, 4) and float(out.max()) <= 1.0


def test_label_dtype_grows_past_255_classes():
    assert make_task("segment", n_classes=256).label_dtype == "uint8"
    assert make_task("segment", n_classes=300).label_dtype == "uint16"


@pytest.mark.parametrize(
    "kwargs, hint",
    [
        (dict(kind="denoise", in_channels=1, out_channels=3), "out_channels=1"),
        (dict(kind="denoise", n_classes=3), "--task segment"),
        (dict(kind="segment", n_classes=0), "1 for binary"),
        (dict(kind="segment"), "--classes"),
        (dict(kind="segment", n_classes=3, out_channels=2), "one output channel per class"),
        (dict(kind="segment", n_classes=3, class_names=["a", "b"]), "give 3"),
        (dict(kind="classify"), "'segment' or 'denoise'"),
        (dict(kind="segment", n_classes=2, in_channels=0), "in_channels"),
    ],
)
def test_contradictions_raise_one_clear_error(kwargs, hint):
    kind = kwargs.pop("kind")
    with pytest.raises(TaskError, match=hint.replace("(", r"\(").replace("-", r"\-")):
        make_task(kind, **kwargs)


def test_round_trip_dict():
    t = make_task("segment", n_classes=1, class_names=["tumour"])
    assert TaskSpec.from_dict(t.to_dict()) == t
    assert t.class_names == ("background", "tumour")
