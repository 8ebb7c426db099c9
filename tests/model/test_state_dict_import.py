import os
import pickle

import pytest
import torch

from napari_unet.cli.main import main
from napari_unet.errors import ModelFileError
from napari_unet.model.checkpoint import load_model
from napari_unet.model.state_dict_import import import_state_dict
from napari_unet.model.tasks import make_task
from support.reference_unets import MilesialUNet, OriginalUNet, randomise_bn

LAYOUTS = [
    ("original", "bilinear", lambda: OriginalUNet(1, 3, base=8, bilinear=True)),
    ("original", "transposed", lambda: OriginalUNet(1, 3, base=8, bilinear=False)),
    ("milesial", "bilinear", lambda: MilesialUNet(1, 3, base=8, bilinear=True)),
    ("milesial", "transposed", lambda: MilesialUNet(1, 3, base=8, bilinear=False)),
]


@pytest.mark.parametrize(
    "layout, upsampling, build", LAYOUTS, ids=[f"{a}-{b}" for a, b, _ in LAYOUTS]
)
def test_import_reproduces_reference_outputs(tmp_path, layout, upsampling, build):
    torch.manual_seed(1)
    ref = randomise_bn(build())
    path = tmp_path / "weights.pth"
    torch.save(ref.state_dict(), path)
    model = import_state_dict(path, make_task("segment", n_classes=3))
    arch = model.meta.architecture
    assert (arch.variant, arch.upsampling, arch.base) == (layout, upsampling, 8)
    x = torch.randn(2, 1, 64, 80)  # divisible by 16: the originals work there
    with torch.no_grad():
        torch.testing.assert_close(model.net(x), ref(x), rtol=1e-5, atol=1e-5)
    assert model.meta.provenance["source_layout"] == layout


def test_cli_import_writes_a_loadable_model(tmp_path, capsys):
    torch.manual_seed(2)
    ref = randomise_bn(MilesialUNet(1, 1, base=4, bilinear=False))
    src = tmp_path / "milesial.pth"
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, src)
    out = tmp_path / "imported.safetensors"
    code = main(["import", str(src), "-o", str(out), "--task", "segment", "--in-channels", "1",
                 "--classes", "1", "--class-names", "lesion", "--class-codes", "Neoplasm"])
    assert code == 0 and "binary segmentation" in capsys.readouterr().out
    model = load_model(out, device="cpu")
    assert model.task.is_binary and model.task.class_names == ("background", "lesion")
    neoplasm = model.meta.class_codes[1]  # DICOM CID 7151, as pydicom has it
    assert (neoplasm.type.value, neoplasm.category.meaning) == (
        "108369006", "Morphologically Abnormal Structure")
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.net(x), ref(x), rtol=1e-5, atol=1e-5)
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "lesion" in text and "pixel spacing: the scan's own" in text
    assert model.meta.pixel_spacing is None


def test_cli_import_records_the_pixel_spacing_the_weights_learned_at(tmp_path, capsys):
    ref = MilesialUNet(1, 2, base=4, bilinear=True)
    src = tmp_path / "w.pth"
    torch.save(ref.state_dict(), src)
    out = tmp_path / "imported.safetensors"
    argv = ["import", str(src), "-o", str(out), "--task", "segment", "--in-channels", "1",
            "--classes", "2", "--pixel-spacing"]
    assert main([*argv, "0.7", "0.7"]) == 0
    assert load_model(out, device="cpu").meta.pixel_spacing == (0.7, 0.7)
    with pytest.raises(SystemExit) as exc:
        main([*argv, "0", "nan"])
    assert exc.value.code == 2 and "a pixel spacing is a size in mm > 0" in \
        capsys.readouterr().err


def test_shape_mismatch_with_task_is_rejected(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(OriginalUNet(1, 2, base=4).state_dict(), path)
    with pytest.raises(ModelFileError, match="2 output channels.*needs 1 -> 3"):
        import_state_dict(path, make_task("segment", n_classes=3))
    with pytest.raises(ModelFileError, match="1 -> 1"):
        import_state_dict(path, make_task("denoise"))


def test_damaged_tensor_shapes_are_rejected(tmp_path):
    state = OriginalUNet(1, 2, base=4).state_dict()
    state["up2.conv.conv.0.weight"] = torch.zeros(3, 3, 3, 3)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    with pytest.raises(ModelFileError, match="do not fit a original UNet with base width 4"):
        import_state_dict(path, make_task("segment", n_classes=2))


class _Exploit:
    """Unpickling this would create a file: the classic pickle attack."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    state = OriginalUNet(1, 2, base=4).state_dict()
    torch.save({"state_dict": state, "payload": _Exploit(str(marker))}, path)
    with pytest.raises(ModelFileError, match="evil.pth: refused"):
        import_state_dict(path, make_task("segment", n_classes=2))
    assert not marker.exists()
    code = main(["import", str(path), "-o", str(tmp_path / "m.safetensors"), "--task",
                 "segment", "--in-channels", "1", "--classes", "2"])
    assert code == 2 and not marker.exists()
    assert not (tmp_path / "m.safetensors").exists()


def test_plain_pickle_of_a_module_is_refused(tmp_path):
    path = tmp_path / "module.pkl"
    with open(path, "wb") as f:
        pickle.dump({"x": os.getcwd}, f)
    with pytest.raises(ModelFileError, match="refused"):
        import_state_dict(path, make_task("segment", n_classes=2))


def test_unknown_layout_names_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.0.weight": torch.zeros(1)}, path)
    with pytest.raises(ModelFileError, match="unknown UNet key layout.*encoder.0.weight"):
        import_state_dict(path, make_task("segment", n_classes=2))
