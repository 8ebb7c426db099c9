"""2.5D models: each slice goes in with its neighbours, in the same order in training,
fine-tuning and inference, and the model file says how many."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from napari_unet.cli.main import main
from napari_unet.errors import ModelFileError, SettingsError, TaskError
from napari_unet.inference.predictor import predict
from napari_unet.model.checkpoint import Model, load_model
from napari_unet.model.normalize import Normalization
from napari_unet.model.state_dict_import import import_state_dict
from napari_unet.model.tasks import make_task
from napari_unet.training import finetune, train
from napari_unet.training.data import with_context
from support.synthetic import TINY, blobs, smooth_volume
from support.tiny_models import tiny_model


class Pick(nn.Module):
    """A 'net' whose answer is known: foreground where input channel ``channel`` > 0.5."""

    def __init__(self, channel: int):
        super().__init__()
        self.channel = channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 40.0 * (x[:, self.channel:self.channel + 1] - 0.5)


def pick_model(channel: int, context: int = 1) -> Model:
    model = tiny_model(n_classes=1, normalization=Normalization("window", 0.0, 1.0))
    arch = replace(model.meta.architecture, in_channels=2 * context + 1)
    return Model(Pick(channel), replace(model.meta, architecture=arch, slice_context=context))


ON = np.array([1, 0, 0, 1, 1, 0, 1, 0, 0], dtype=np.float32)  # which slices are bright


def striped() -> np.ndarray:
    return np.broadcast_to(ON[:, None, None], (len(ON), 6, 7)).copy()


def shifted(offset: int) -> np.ndarray:
    """What slice z holds at ``offset`` slices away (edges repeat the end slice)."""
    return ON[np.clip(np.arange(len(ON)) + offset, 0, len(ON) - 1)]


@pytest.mark.parametrize("slices", [None, [0, 3, 4, 8], [8, 2]])
@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_each_slice_sees_its_neighbours_in_order(slices, batch_size):
    for channel, offset in [(0, -1), (1, 0), (2, 1)]:
        pred = predict(striped(), pick_model(channel), device="cpu", batch_size=batch_size,
                       slices=slices, precision="float32")
        done = list(range(len(ON))) if slices is None else sorted(slices)
        got = pred.labels[done, 3, 3]
        assert got.tolist() == shifted(offset)[done].astype(np.uint8).tolist(), channel


def test_a_single_slice_is_its_own_context():
    one = striped()[:1]
    for channel in range(5):
        pred = predict(one, pick_model(channel, context=2), device="cpu", precision="float32")
        assert pred.labels.shape == one.shape and (pred.labels == 1).all()


def test_training_stacks_neighbours_as_inference_does():
    stack = striped()[:, None]  # (S, C, H, W)
    ctx = with_context(stack, 2)
    assert ctx.shape == (len(ON), 5, 6, 7)
    for channel, offset in enumerate(range(-2, 3)):
        assert ctx[:, channel, 0, 0].tolist() == shifted(offset).tolist()
    assert with_context(stack, 0) is stack


def test_context_is_part_of_the_model_file_and_its_hash(tmp_path):
    img = smooth_volume(1)
    flat = train(img, task="denoise", iterations=2, seed=1, **TINY).model
    deep = train(img, task="denoise", iterations=2, seed=1, slice_context=2, **TINY).model
    assert deep.net.arch.in_channels == 5 and deep.meta.slice_context == 2
    path = deep.save(tmp_path / "deep.safetensors")
    back = load_model(path, device="cpu")
    assert back.meta.slice_context == 2 and back.hash == deep.meta.hash
    assert flat.save(tmp_path / "flat.safetensors") and "slice_context" not in (
        json.dumps(load_model(tmp_path / "flat.safetensors").meta.to_dict()))
    out = predict(img, back, device="cpu")
    assert out.image.shape == img.shape and np.isfinite(out.image).all()


@pytest.mark.parametrize("value", [-1, 9, 1.5, "1"])
def test_a_file_with_a_bad_slice_context_is_refused(tmp_path, value):
    from safetensors import safe_open
    from safetensors.torch import save_file

    model = tiny_model(kind="denoise")
    path = model.save(tmp_path / "m.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["napari_unet"])
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta["slice_context"] = value
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad), metadata={"napari_unet": json.dumps(meta)})
    with pytest.raises(ModelFileError, match="slice_context"):
        load_model(bad)


def test_a_net_whose_inputs_do_not_match_its_context_is_refused():
    model = tiny_model(kind="denoise")
    with pytest.raises(TaskError, match="1 x 3 slices"):
        replace(model.meta, slice_context=1)


def test_fine_tuning_keeps_the_parents_context_and_refuses_another():
    img, lab = blobs(2, shape=(8, 48, 48))
    parent = train(img, lab, iterations=3, slice_context=1, **TINY).model
    child = train(img, lab, iterations=2, init=parent, **TINY).model
    assert child.meta.slice_context == 1
    with pytest.raises(SettingsError, match="takes 1 neighbour"):
        train(img, lab, iterations=2, init=parent, slice_context=2, **TINY)
    trusted = np.zeros(lab.shape, bool)
    trusted[3] = True
    update = finetune(parent, img, lab, trusted=trusted, iterations=2, patch_size=(32, 32),
                      batch_size=2, device="cpu")
    assert update.model.meta.slice_context == 1
    assert predict(img, update.model, device="cpu").labels.shape == img.shape


def test_self_supervised_denoising_refuses_a_context():
    with pytest.raises(SettingsError, match="blind"):
        train(smooth_volume(2), task="denoise", self_supervised=True, slice_context=1,
              iterations=1, **TINY)


def test_held_out_slices_are_no_training_slice_s_context():
    img = smooth_volume(3, shape=(20, 32, 32))
    model = train(img, task="denoise", iterations=1, val_block=(8, 12), val_gap=0,
                  slice_context=2, **TINY).model
    assert model.meta.provenance["held_out_slices"] == [[8, 12]]
    assert model.meta.provenance["train_slices"] == [20 - 4 - 2 * 2]


def test_import_takes_the_context_of_2_5d_weights(tmp_path):
    from support.reference_unets import OriginalUNet

    path = tmp_path / "unet.pt"
    torch.save(OriginalUNet(3, 2, base=4).state_dict(), path)
    task = make_task("segment", n_classes=2)
    model = import_state_dict(path, task, slice_context=1)
    assert model.meta.slice_context == 1
    with pytest.raises(ModelFileError, match="slice-context"):
        import_state_dict(path, task)


def _nifti(path: Path, array: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array.T), np.eye(4)), str(path))
    return str(path)


def test_the_cli_trains_shows_and_runs_a_2_5d_model(tmp_path, capsys):
    image = _nifti(tmp_path / "clean.nii.gz", smooth_volume(4))
    model = tmp_path / "den.safetensors"
    assert main(["train", "--task", "denoise", "--images", image, "--iterations", "3",
                 "--slice-context", "1", "-o", str(model), "--base", "4", "--patch", "32",
                 "32", "--batch-size", "2", "-q"]) == 0
    with pytest.raises(SystemExit) as bad:  # argparse refuses it before anything runs
        main(["train", "--task", "denoise", "--images", image, "--iterations", "3",
              "--slice-context", "9", "-o", str(tmp_path / "x.safetensors")])
    assert bad.value.code == 2 and "slice context is 0..8" in capsys.readouterr().err
    exe = Path(sys.executable).with_name("napari-unet")
    info = subprocess.run([str(exe), "info", str(model)], capture_output=True, text=True,
                          check=True, env={**os.environ, "NO_COLOR": "1"}).stdout
    assert "slice context: 1 neighbour slice(s) either side (3 slices in" in info
    assert "in=3 out=1" in info
    out = tmp_path / "out"
    assert main(["predict", image, "-o", str(out), "--model", str(model), "--quiet"]) == 0
    written = nib.load(next(out.glob("*.nii.gz"))).get_fdata()
    assert written.shape == nib.load(image).shape and np.isfinite(written).all()
