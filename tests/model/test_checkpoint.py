import json

import pytest
import torch

from napari_unet.errors import ModelFileError, TaskError
from napari_unet.model.checkpoint import (
    Model,
    ModelMeta,
    load_model,
    read_header,
    resolve_model_path,
)
from napari_unet.model.normalize import Normalization
from napari_unet.model.tasks import make_task
from napari_unet.model.unet import Architecture


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = Model.new(make_task("segment", n_classes=3, class_names=["bg", "gm", "wm"]),
                      base=4, normalization=Normalization("window", -100, 300), name="tiny",
                      default_axis=2, patch_size=(64, 96))
    path = model.save(tmp_path / "tiny.safetensors", data=["scan.nii.gz"], iterations=7)
    return model, path


def test_round_trip_keeps_weights_and_metadata(saved):
    model, path = saved
    loaded = load_model(path, device="cpu")
    x = torch.randn(1, 1, 32, 48)
    with torch.no_grad():
        assert torch.equal(model.net.eval()(x), loaded.net(x))
    meta = loaded.meta
    assert meta.task.class_names == ("bg", "gm", "wm")
    assert meta.normalization == Normalization("window", -100, 300)
    assert meta.default_axis == 2 and meta.patch_size == (64, 96)
    assert meta.provenance["iterations"] == 7 and meta.provenance["data"] == ["scan.nii.gz"]
    assert "created" in meta.provenance
    assert meta.hash.startswith("sha256:") and meta.hash == model.meta.hash


def test_header_is_plain_json_in_safetensors(saved):
    _, path = saved
    n = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["napari_unet"])
    assert meta["task"]["kind"] == "segment" and meta == read_header(path)


def test_truncated_file_gives_clear_error(saved, tmp_path):
    _, path = saved
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="truncated.safetensors"):
        load_model(bad)


def test_flipped_weight_byte_is_detected_by_hash(saved, tmp_path):
    _, path = saved
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # inside the last tensor's bytes
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"corrupt\.safetensors.*hash mismatch"):
        load_model(bad)


@pytest.mark.parametrize("content", [b"", b"\x00" * 3, b"garbage that is not a model" * 10])
def test_garbage_files_are_refused(tmp_path, content):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(content)
    with pytest.raises(ModelFileError, match="bad.safetensors"):
        load_model(bad)


def test_missing_model_names_bundled_choices(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file or bundled model"):
        resolve_model_path(tmp_path / "nope.safetensors")


def test_metadata_must_agree_with_architecture():
    with pytest.raises(TaskError, match="needs 3"):
        ModelMeta(Architecture(1, 2, 4), make_task("segment", n_classes=3))


def test_save_is_atomic_and_leaves_no_temp(saved, tmp_path):
    _, path = saved
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
