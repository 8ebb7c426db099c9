"""Opening scans through napari's doors: drag and drop, File > Open Sample, and
``viewer.open`` without choosing a plugin.

The first tests run whole napari sessions in fresh processes with their own settings
file, as a user starts napari from a shell, so that "the first time" and "after a
restart" are real; the others run in this process's viewer.
"""

from __future__ import annotations

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest
from napari.settings import NapariSettings, get_settings

from support.dicom_factory import write_dicom_series
from support.napari_doors import DISPLAY_NAME, PLUGIN, drop, napari_session, watch_dialogs

pytestmark = pytest.mark.gui


@pytest.fixture
def scans(tmp_path):
    """One of each: .nii, .nii.gz, a single .dcm slice and a DICOM series folder."""
    data = np.random.default_rng(0).integers(0, 400, (6, 8, 10)).astype(np.int16)
    nib.Nifti1Image(data, np.diag([1.0, 1.2, 2.0, 1.0])).to_filename(str(tmp_path / "a.nii"))
    nib.Nifti1Image(data, np.eye(4)).to_filename(str(tmp_path / "b.nii.gz"))
    files = write_dicom_series(data.transpose(2, 1, 0), tmp_path / "series",
                               spacing=(2.0, 0.9, 0.9))
    return {"nii": tmp_path / "a.nii", "nii.gz": tmp_path / "b.nii.gz",
            "dcm": files[0], "folder": tmp_path / "series"}


@pytest.fixture
def dialogs(qtbot):
    with watch_dialogs() as seen:
        yield seen


@pytest.fixture
def own_settings(monkeypatch):
    """Default napari settings for this test, never saved to disk."""
    from napari import settings

    monkeypatch.setattr(settings, "_SETTINGS", NapariSettings(config_path=None))
    return settings.get_settings()


EVERY_KIND = ("nii", "nii.gz", "dcm", "folder")
OPENED = [[PLUGIN, [10, 8, 6], "image"]]


@pytest.mark.slow
def test_first_drop_asks_once_and_napari_unet_is_remembered_after_restart(tmp_path, scans):
    config = tmp_path / "napari" / "settings.yaml"
    first = napari_session(config, [
        ("choose", DISPLAY_NAME), ("drop", [scans["nii.gz"]]),
        ("choose", None), ("drop", [scans["nii"], scans["dcm"]]), ("drop", [scans["folder"]]),
    ])
    # napari itself asks, once, when two readers claim a file (napari-unet is offered)
    assert first["titles"] == ["Choose reader"] and DISPLAY_NAME in first["offered"][0]
    assert first["preselected"] == [DISPLAY_NAME]  # the user only presses OK
    assert first["steps"][1]["layers"] == OPENED
    # from then on every NIfTI/DICOM file and folder opens with napari-unet, no dialog
    assert [s["dialogs"] for s in first["steps"]] == [0, 1, 1, 1, 1]
    assert first["steps"][3]["layers"] == [*OPENED, [PLUGIN, [1, 8, 6], "image"]]
    assert first["steps"][4]["layers"] == OPENED
    assert first["prefs"]["*.nii.gz"] == first["prefs"]["*/"] == PLUGIN

    after_restart = napari_session(config, [
        ("drop", [scans[k] for k in EVERY_KIND]), ("open", scans["nii.gz"]),
    ])
    assert after_restart["titles"] == []
    assert [layer[0] for layer in after_restart["steps"][0]["layers"]] == [PLUGIN] * 4
    assert after_restart["steps"][1]["layers"] == OPENED


@pytest.mark.slow
def test_after_a_sample_from_the_menu_drops_open_without_asking(tmp_path, scans):
    config = tmp_path / "napari" / "settings.yaml"
    session = napari_session(config, [
        ("menu", "napari-unet.brain_t1"),  # File > Open Sample > napari-unet
        ("drop", [scans[k] for k in EVERY_KIND]),
    ])
    assert session["titles"] == []
    assert [layer[0] for layer in session["steps"][1]["layers"]] == [PLUGIN] * 4


def test_viewer_open_without_choosing_a_plugin(own_settings, make_napari_viewer, dialogs,
                                               scans):
    """``plugin=None`` is how napari's GUI and command line open paths: it follows the
    reader preferences. (``viewer.open(path)`` alone means napari's builtin reader.)"""
    viewer = make_napari_viewer()
    viewer.open(str(scans["nii"]), plugin=PLUGIN)  # napari-unet has run once
    for kind in EVERY_KIND:
        [layer] = viewer.open(str(scans[kind]), plugin=None)
        assert layer.source.reader_plugin == PLUGIN, kind
        assert layer.axis_labels == ("I→S", "A→P", "R→L"), kind
    drop(viewer, [scans[k] for k in EVERY_KIND])
    assert [layer.source.reader_plugin for layer in viewer.layers] == [PLUGIN] * 9
    assert dialogs.titles == []


def test_a_reader_the_user_chose_is_kept(own_settings, make_napari_viewer, scans):
    viewer = make_napari_viewer()
    get_settings().plugins.extension2reader = {"*.gz": "napari", "*.dcm": "napari"}
    viewer.open(str(scans["nii"]), plugin=PLUGIN)
    prefs = get_settings().plugins.extension2reader
    assert prefs["*.gz"] == prefs["*.dcm"] == "napari"
    assert "*.nii.gz" not in prefs and "*.DCM" in prefs  # only unclaimed patterns
    assert prefs["*.nii"] == PLUGIN


def test_a_folder_without_dicom_goes_back_to_napari(own_settings, make_napari_viewer,
                                                    dialogs, scans, tmp_path):
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i in range(3):
        iio.imwrite(pictures / f"p{i}.png", np.full((8, 9), 40 * i, np.uint8))
    viewer = make_napari_viewer()
    viewer.open(str(scans["nii"]), plugin=PLUGIN)
    dialogs.choose = "napari builtins"
    drop(viewer, [pictures])
    assert dialogs.titles == ["Choose reader"]
    assert dialogs.offered == [["napari builtins"]]  # napari-unet declined the folder
    assert viewer.layers[-1].source.reader_plugin == "napari"
    assert viewer.layers[-1].data.shape == (3, 8, 9)
