"""Model files from anyone: every metadata field checked on load, sizes checked before a
network is built, a missing hash refused, nothing from the file printed raw."""

from __future__ import annotations

import math

import pytest
import torch

from napari_unet.cli.main import main
from napari_unet.errors import ModelFileError
from napari_unet.model.checkpoint import Model, load_model
from napari_unet.model.tasks import make_task
from napari_unet.model.unet import Architecture, UNet, activation_bytes, state_size
from support.hostile import rewrite_model_meta, tiny_model_file
from support.reference_unets import OriginalUNet

LIVER = {"category": {"scheme": "SCT", "value": "91723000", "meaning": "Anatomical Structure"},
         "type": {"scheme": "SCT", "value": "10200004", "meaning": "Liver"}}


@pytest.fixture
def good(tmp_path):
    return tiny_model_file(tmp_path / "tiny.safetensors")


def edited(good, tmp_path, path: str, value, rehash=True):
    """``good`` with the metadata field at dotted ``path`` set (or deleted for ...)."""
    *parents, key = path.split(".")

    def edit(meta):
        for p in parents:
            meta = meta[p]
        if value is ...:
            del meta[key]
        else:
            meta[key] = value

    return rewrite_model_meta(good, tmp_path / "edited.safetensors", edit, rehash)


def test_base_200000_is_refused_before_the_network_is_built(good, tmp_path, capsys):
    """Issue case 8: `info` on such a file tried to allocate 1.44 TB."""
    bad = edited(good, tmp_path, "architecture.base", 200000)
    with pytest.raises(ModelFileError) as err:
        load_model(bad)
    message = str(err.value)
    assert str(bad) in message and "base width 200000" in message
    assert "TB of memory, over the limit" in message
    assert main(["info", str(bad)]) == 2
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1 and "base width 200000" in err_text


def test_pth_with_a_100000_wide_conv_is_refused_by_import(tmp_path, capsys):
    """Issue case 8: a 3.6 MB .pth whose first conv is 100000 wide made import try 360 GB."""
    state = OriginalUNet(1, 3, base=2).state_dict()
    state["inc.conv.conv.0.weight"] = torch.zeros(100000, 1, 3, 3)
    src = tmp_path / "wide.pth"
    torch.save(state, src)
    out = tmp_path / "wide.safetensors"
    code = main(["import", str(src), "-o", str(out), "--task", "segment",
                 "--in-channels", "1", "--classes", "3"])
    err = capsys.readouterr().err
    assert code == 2 and str(src) in err and "base width 100000" in err
    assert "over the limit" in err and "Traceback" not in err and not out.exists()


@pytest.mark.parametrize(("field", "value", "says"), [
    ("patch_size", [-1, 0], "patch_size must be two integers >= 1 (got [-1, 0])"),
    ("patch_size", [256], "patch_size must be two integers"),
    ("default_axis", 3, "default_axis must be an integer in 0..2"),
    ("default_axis", "0", "default_axis must be an integer"),
    ("architecture.base", 2.5, "architecture.base must be an integer >= 1"),
    ("architecture.base", True, "architecture.base must be an integer >= 1"),
    ("architecture.base", 0, "architecture.base must be an integer >= 1"),
    ("architecture.upsampling", "nearest", "architecture.upsampling must be one of"),
    ("architecture.depth", 7, "architecture.depth is not a known field"),
    ("task.n_classes", -1, "task.n_classes must be an integer in 0..65536"),
    ("task.threshold", math.nan, "task.threshold must be a finite number"),
    ("task.class_names", ["bg", 3, "x"], "task.class_names must be a list of texts"),
    ("normalization.lower", "0", "normalization.lower must be a finite number"),
    ("normalization.upper", math.inf, "normalization.upper must be a finite number"),
    ("name", 5, "name must be a text"),
    ("name", "x" * 201, "name must be a text of at most 200 characters"),
    ("format_version", 2, "written by a newer napari-unet"),
    ("owner", "me", "owner is not a known field"),
    ("task", ..., "task is missing"),
    ("provenance", [], "provenance must be a JSON object"),
    ("class_codes", [None, {"category": {"scheme": "99NAPUNET", "value": "C1",
                                         "meaning": "x"}, "type": {}}, None],
     "class_codes entry 1 category scheme '99NAPUNET' is not a standard coding scheme"),
    ("class_codes", [None, {"category": {}, "type": {}, "colour": [1, 2, 3]}],
     "class_codes entry 1 must be an object with a category, a type and optionally a color"),
    ("class_codes", "GrayMatter", "class_codes must be a list"),
])
def test_every_field_is_checked_on_load(good, tmp_path, field, value, says):
    bad = edited(good, tmp_path, field, value, rehash=False)
    with pytest.raises(ModelFileError) as err:
        load_model(bad)
    assert str(bad) in str(err.value) and says in str(err.value), str(err.value)


@pytest.mark.parametrize(("field", "value", "says"), [
    ("normalization.lower", 200.0, "lower < upper"),
    ("architecture.out_channels", 2, "architecture has 2 output channels but"),
    ("task.threshold", 1.0, "threshold must lie in (0, 1)"),
    ("class_codes", [None, LIVER, None, None], "4 class codes for 3 label values"),
])
def test_fields_that_contradict_each_other(good, tmp_path, field, value, says):
    bad = edited(good, tmp_path, field, value, rehash=False)
    with pytest.raises(ModelFileError, match="invalid model metadata") as err:
        load_model(bad)
    assert says in str(err.value)


@pytest.mark.parametrize("value", ["", ..., "sha256:", "md5:" + "0" * 32])
def test_a_missing_or_emptied_hash_is_an_error_not_a_skip(good, tmp_path, value):
    """Issue case 16: an emptied hash field used to skip the integrity check."""
    bad = edited(good, tmp_path, "hash", value, rehash=False)
    with pytest.raises(ModelFileError, match=r"hash (is missing|must be 'sha256:')"):
        load_model(bad)


def test_info_prints_no_escape_sequences(tmp_path, capsys):
    """Issue case 16: `info` printed ANSI escape sequences from the metadata."""
    torch.manual_seed(0)
    evil = "\x1b[2J\x1b]0;pwned\x07red\x1b[0m"
    model = Model.new(make_task("segment", n_classes=2, class_names=["bg", evil]), base=2,
                      name=evil)
    path = model.save(tmp_path / "evil.safetensors", **{evil: evil})
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "model:         ]0;pwned red (" in out  # the text is kept, made harmless
    assert main(["info", "--json", str(path)]) == 0
    assert "\x1b" not in capsys.readouterr().out


def test_size_estimates_match_a_built_network():
    arch = Architecture(1, 3, 8, "transposed", "milesial")
    net = UNet.from_architecture(arch)
    assert state_size(arch) == sum(t.numel() for t in net.state_dict().values())
    assert state_size(Architecture(1, 3, 10**12)) == -1  # too large even to describe
    # one 256 x 256 patch of the default width-64 UNet: about 200 MB of activations
    assert 100e6 < activation_bytes(Architecture(1, 3, 64), (256, 256)) < 400e6


def test_class_codes_are_part_of_the_content_hash(good, tmp_path):
    coded = edited(good, tmp_path, "class_codes", [None, LIVER, None])  # rehashed: loads
    model = load_model(coded)
    assert model.meta.class_codes[1].type.meaning == "Liver"
    assert model.hash != load_model(good).hash
    forged = rewrite_model_meta(coded, tmp_path / "forged.safetensors",
                                lambda meta: meta["class_codes"][1]["type"].update(
                                    value="10200005"), rehash=False)
    with pytest.raises(ModelFileError, match="content hash mismatch"):
        load_model(forged)


def test_good_models_still_load(good):
    model = load_model(good, device="cpu")
    assert model.meta.patch_size == (32, 32) and model.meta.hash.startswith("sha256:")
