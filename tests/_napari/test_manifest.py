"""The root napari.yaml is the one manifest napari loads, editable install and wheel alike."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def test_npe2_validate_passes():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(ROOT / "napari.yaml")
    assert manifest.name == "napari-unet"
    res = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-unet"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "valid" in res.stdout + res.stderr


def test_napari_preselects_napari_unet_when_it_asks_for_a_reader():
    """napari's "Choose reader" dialog lists display names sorted and checks the first."""
    from npe2 import PluginManifest

    from support.napari_doors import DISPLAY_NAME
    from support.widget_helpers import DISPLAY_NAME as SHOWN

    name = PluginManifest.from_file(ROOT / "napari.yaml").display_name
    assert name == DISPLAY_NAME == SHOWN
    assert sorted([name, "napari builtins", "napari-itk-io", "napari-nifti"])[0] == name


def test_installed_manifest_is_the_root_file():
    """What the napari.manifest entry point loads is byte-for-byte the root napari.yaml."""
    from importlib.metadata import entry_points
    from importlib.resources import files

    (ep,) = [e for e in entry_points(group="napari.manifest") if e.name == "napari-unet"]
    package, resource = ep.value.split(":")
    installed = files(package).joinpath(resource).read_text()
    assert installed == (ROOT / "napari.yaml").read_text()


def test_every_manifest_command_resolves():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(ROOT / "napari.yaml")
    for cmd in manifest.contributions.commands:
        module, attr = cmd.python_name.split(":")
        assert callable(getattr(__import__(module, fromlist=[attr]), attr)), cmd.python_name


@pytest.mark.slow
def test_wheel_carries_root_manifest_models_and_samples(tmp_path):
    res = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                          "--outdir", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next(tmp_path.glob("napari_unet-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert zf.read("napari_unet/napari.yaml").decode() == (ROOT / "napari.yaml").read_text()
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        assert "napari_unet:napari.yaml" in zf.read(entry).decode()
    assert "napari_unet/_sample_data/brain_t1.nii.gz" in names
    bundled = {n for n in names if n.startswith("napari_unet/model/bundled/")}
    assert {p.relative_to(ROOT / "src").as_posix() for p in
            (ROOT / "src/napari_unet/model/bundled").glob("*.safetensors")} <= bundled


def test_widgets_take_the_viewer_the_way_napari_injects_it():
    """napari injects the viewer only into ``napari_viewer`` (or a Viewer annotation)."""
    import inspect

    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(ROOT / "napari.yaml")
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    for widget in manifest.contributions.widgets:
        module, attr = commands[widget.command].split(":")
        cls = getattr(__import__(module, fromlist=[attr]), attr)
        params = list(inspect.signature(cls).parameters)
        assert params == ["napari_viewer"], (widget.display_name, params)
