"""``napari-unet predict <bids_root>``: images chosen by entities, a derivative dataset out.

Checked by the tools people open it with next: the official BIDS validator, pybids'
``BIDSLayout(derivatives=...)``, nibabel and SimpleITK; voxels against the same model run
on the same file outside BIDS (the plain folder mode).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from support.batch_data import tiny_model
from support.bids_data import T1W, assert_valid, bids_dataset, bids_image, validate
from support.cli_run import console, load_report, run_cli

pytestmark = pytest.mark.slow

CLASSES = ["background", "grey", "white"]  # tiny_model's class names


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return bids_dataset(tmp_path_factory.mktemp("bids") / "raw").resolve()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("models")
    return {"segment": tiny_model(where / "seg.safetensors"),
            "denoise": tiny_model(where / "den.safetensors", kind="denoise")}


@pytest.fixture(scope="module")
def segmented(raw, models, tmp_path_factory):
    """One segmentation run with probability maps (the outputs several tests read)."""
    out = tmp_path_factory.mktemp("deriv") / "napari-unet"
    proc = console("predict", raw, "-o", out, "--model", models["segment"], "--probabilities")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def _files(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*")
            if p.is_file() and ".napari-unet" not in p.parts}


def _stem(rel: str) -> str:
    """``sub-02/ses-2/anat/sub-02_ses-2_run-1_T1w`` -> ``sub-02_ses-2_run-1``."""
    return rel.rsplit("/", 1)[1].removesuffix("_T1w")


def _folder(rel: str) -> str:
    return rel.rsplit("/", 1)[0]


def test_segmentation_makes_a_derivative_dataset_the_validator_accepts(segmented):
    out, proc = segmented
    expected = {"dataset_description.json", "README.md", ".bidsignore", "report.json",
                "index.html"}
    for rel in T1W:
        base = f"{_folder(rel)}/{_stem(rel)}_space-orig"
        expected |= {f"{base}_dseg.nii.gz", f"{base}_dseg.json", f"{base}_dseg.tsv",
                     f"{base}_uncertainty.nii.gz", f"{base}_uncertainty.json",
                     f"{rel.split('/')[0]}/figures/{_stem(rel)}_space-orig_dseg.png"}
        for label in ("Grey", "White"):
            expected |= {f"{base}_label-{label}_probseg.nii.gz",
                         f"{base}_label-{label}_probseg.json"}
    assert _files(out) == expected
    found = assert_valid(out)
    assert found["summary"]["subjects"] and sorted(found["summary"]["subjects"]) == ["01", "02"]
    n = len(T1W)
    assert f"{n} ok, 0 failed" in proc.stderr and f"BIDS: {n} images chosen by" in proc.stderr


def test_the_description_names_napari_unet_the_model_and_the_source(segmented, raw, models):
    from napari_unet import __version__
    from napari_unet.model.checkpoint import load_model

    out, _ = segmented
    desc = json.loads((out / "dataset_description.json").read_text())
    model = load_model(models["segment"])
    assert desc["DatasetType"] == "derivative"
    (generated,) = desc["GeneratedBy"]
    assert generated["Name"] == "napari-unet" and generated["Version"] == __version__
    assert model.name in generated["Description"] and model.hash in generated["Description"]
    assert desc["DatasetLinks"]["raw"] == raw.as_uri() == desc["SourceDatasets"][0]["URL"]


def test_pybids_indexes_every_output_with_its_entities(segmented, raw):
    from bids import BIDSLayout

    out, _ = segmented
    layout = BIDSLayout(raw, derivatives=out)
    found = {(f.entities.get("subject"), f.entities.get("session"), f.entities.get("run"),
              f.entities.get("label"), f.entities["suffix"])
             for f in layout.get(scope="derivatives", extension=".nii.gz")}
    expected = set()
    for rel in T1W:
        source = layout.get_file(raw / f"{rel}.nii.gz").entities
        key = (source["subject"], source.get("session"), source.get("run"))
        expected |= {(*key, None, "dseg"), (*key, "Grey", "probseg"),
                     (*key, "White", "probseg"), (*key, None, "uncertainty")}
    assert found == expected


def test_sidecars_and_class_tables(segmented, raw, models):
    out, _ = segmented
    for rel in T1W:
        base = out / _folder(rel) / f"{_stem(rel)}_space-orig"
        car = json.loads(Path(f"{base}_dseg.json").read_text())
        source = f"bids:raw:{rel}.nii.gz"
        assert car["Sources"] == [source] and car["SpatialReference"] == source
        assert (raw / car["Sources"][0].split(":", 2)[2]).is_file()  # the URI resolves
        assert car["Model"]["Hash"].startswith("sha256:")
        assert car["Settings"]["inference"]["probabilities"] is True
        with open(f"{base}_dseg.tsv", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        assert [(int(r["index"]), r["name"]) for r in rows] == list(enumerate(CLASSES))


def test_outputs_equal_the_plain_folder_results_in_the_source_geometry(segmented, raw, models,
                                                                       tmp_path):
    out, _ = segmented
    rel = "sub-02/ses-2/anat/sub-02_ses-2_run-1_T1w"
    plain_in = tmp_path / "plain" / "scan.nii.gz"
    plain_in.parent.mkdir()
    shutil.copy(raw / f"{rel}.nii.gz", plain_in)
    code, text = run_cli("predict", plain_in, "-o", tmp_path / "plain_out", "--model",
                         models["segment"], "--probabilities", "--quiet")
    assert code == 0, text
    plain = nib.load(tmp_path / "plain_out" / "scan_labels.nii.gz")
    dseg_path = out / _folder(rel) / "sub-02_ses-2_run-1_space-orig_dseg.nii.gz"
    dseg, src = nib.load(dseg_path), nib.load(raw / f"{rel}.nii.gz")
    assert np.array_equal(np.asarray(dseg.dataobj), np.asarray(plain.dataobj))
    assert np.allclose(dseg.affine, src.affine)
    itk_out, itk_src = sitk.ReadImage(str(dseg_path)), sitk.ReadImage(str(raw / f"{rel}.nii.gz"))
    assert np.allclose(itk_out.GetOrigin(), itk_src.GetOrigin())
    assert np.allclose(itk_out.GetDirection(), itk_src.GetDirection())
    assert np.allclose(itk_out.GetSpacing(), itk_src.GetSpacing())
    # the probability maps: background is what grey and white leave; their argmax is dseg
    grey, white = (np.asarray(nib.load(out / _folder(rel) /
                   f"sub-02_ses-2_run-1_space-orig_label-{c}_probseg.nii.gz").dataobj)
                   for c in ("Grey", "White"))
    probs = np.stack([1 - grey - white, grey, white], axis=-1)
    assert probs.min() > -1e-5 and probs.max() < 1 + 1e-5
    agree = np.mean(np.argmax(probs, axis=-1) == np.asarray(dseg.dataobj))
    assert agree >= 0.999


def test_resume_and_overwrite_on_a_bids_output(raw, models, tmp_path):
    out = tmp_path / "derivatives" / "napari-unet"
    out.parent.mkdir()  # not a dataset's own derivatives/: napari-unet would not make it
    args = ("predict", raw, "-o", out, "--model", models["segment"], "--no-qc")
    assert console(*args).returncode == 0
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}
    again = console(*args)
    assert again.returncode == 0 and f"0 ok, 0 failed, {len(T1W)} skipped" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")} == stamps
    # a person corrected one segmentation: --overwrite redoes the others, never that one
    edited = out / "sub-01/anat/sub-01_space-orig_dseg.nii.gz"
    img = nib.load(edited)
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = 2 - data[0, 0, 0] // 2
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(edited))
    kept = edited.read_bytes()
    redo = console(*args, "--overwrite")
    assert redo.returncode == 1
    report = load_report(out)
    status = {e["name"]: (e["status"], e["error"]) for e in report["scans"]}
    assert status["sub-01_T1w"][0] == "failed"
    assert "changed after napari-unet wrote it" in status["sub-01_T1w"][1]
    assert {s for n, (s, _) in status.items() if n != "sub-01_T1w"} == {"ok"}
    assert edited.read_bytes() == kept
    assert {e["entities"]["subject"] for e in report["scans"]} == {"01", "02"}
    assert_valid(out)


def test_denoising_writes_desc_denoised_images_with_their_suffix(raw, models, tmp_path):
    out = tmp_path / "den"
    proc = console("predict", raw, "-o", out, "--model", models["denoise"],
                   "--bids-filter", "suffix=T1w,T2w", "session=1", "--no-input-paths")
    assert proc.returncode == 0, proc.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))
    assert written == ["sub-02/ses-1/anat/sub-02_ses-1_desc-denoised_T1w.nii.gz",
                       "sub-02/ses-1/anat/sub-02_ses-1_desc-denoised_T2w.nii.gz"]
    car = json.loads((out / written[0].replace(".nii.gz", ".json")).read_text())
    assert car["SkullStripped"] is False
    assert car["Sources"] == ["bids:raw:sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz"]
    desc = json.loads((out / "dataset_description.json").read_text())
    # --no-input-paths: the source's location (a path) is left out; so are report inputs
    assert "DatasetLinks" not in desc and "SourceDatasets" not in desc
    assert str(raw) not in (out / "report.json").read_text()
    assert all(e["input"] is None for e in load_report(out)["scans"])
    assert_valid(out)
    # a segmentation model into the same folder: both models are in GeneratedBy
    proc = console("predict", raw / "sub-02" / "ses-1", "-o", out, "--model",
                   models["segment"], "--no-input-paths", "--no-qc")
    assert proc.returncode == 0, proc.stderr
    generated = json.loads((out / "dataset_description.json").read_text())["GeneratedBy"]
    assert [g["Description"].split()[1] for g in generated] == ["tiny-segment", "tiny-denoise"]
    assert (out / "sub-02/ses-1/anat/sub-02_ses-1_space-orig_dseg.nii.gz").is_file()
    assert_valid(out)
    # a derivative dataset is an input too: segment the denoised T1w images
    chain = tmp_path / "chain"
    proc = console("predict", out, "-o", chain, "--model", models["segment"], "--no-qc",
                   "--bids-filter", "desc=denoised")
    assert proc.returncode == 0, proc.stderr
    car = json.loads((chain / "sub-02/ses-1/anat/sub-02_ses-1_space-orig_dseg.json").read_text())
    assert car["Sources"] == ["bids:source:sub-02/ses-1/anat/sub-02_ses-1_desc-denoised_T1w.nii.gz"]
    assert json.loads((chain / "dataset_description.json").read_text())["DatasetLinks"] == {
        "source": out.resolve().as_uri()}
    assert_valid(chain)


def test_a_subject_folder_and_bids_apps_flags_choose_images(raw, models, tmp_path):
    filt = tmp_path / "filter.json"
    filt.write_text(json.dumps({"session": "2", "run": "2"}))
    proc = console("predict", raw / "sub-02", "-o", tmp_path / "out", "--model",
                   models["segment"], "--bids-filter-file", filt, "--participant-label",
                   "sub-02", "--no-qc")
    assert proc.returncode == 0, proc.stderr
    report = load_report(tmp_path / "out")
    assert [e["name"] for e in report["scans"]] == ["sub-02_ses-2_run-2_T1w"]
    assert report["bids"]["query"]["subject"] == ["02"]


def test_identifying_labels_fail_their_scan_and_name_no_file(models, tmp_path):
    images = {"sub-19800101/anat/sub-19800101_T1w": 1, "sub-HOSP123/anat/sub-HOSP123_T1w": 2,
              "sub-03/anat/sub-03_T1w": 3}
    root = bids_dataset(tmp_path / "raw", images)
    # a converter kept the patient fields (dcm2niix -ba n) and the ID became the label
    bids_image(root / "sub-HOSP123/anat/sub-HOSP123_T1w.nii.gz", 2,
               sidecar={"PatientID": "HOSP123", "PatientName": "Doe^Jane"})
    out = tmp_path / "out"
    proc = console("predict", root, "-o", out, "--model", models["segment"],
                   "--no-input-paths")
    assert proc.returncode == 1
    report = load_report(out)
    errors = sorted(e["error"] for e in report["scans"] if e["status"] == "failed")
    assert len(errors) == 2
    assert "patient's name or ID" in errors[0] + errors[1]
    assert "looks like a date" in errors[0] + errors[1]
    assert [p.name for p in out.rglob("*.nii.gz")] == ["sub-03_space-orig_dseg.nii.gz"]
    for text in (proc.stdout + proc.stderr, (out / "report.json").read_text(),
                 (out / "index.html").read_text(), *(p.name for p in out.rglob("*"))):
        assert "19800101" not in text and "HOSP123" not in text


@pytest.mark.parametrize("case", ["two datasets", "bids and plain", "filter without bids",
                                  "nothing matches", "unknown entity", "into the source",
                                  "another dataset's folder", "broken description"])
def test_bids_usage_errors_exit_2_before_any_work(raw, models, tmp_path, case):
    other = bids_dataset(tmp_path / "other", {"sub-09/anat/sub-09_T1w": 9})
    plain = bids_image(tmp_path / "plain" / "scan.nii.gz", 1)
    broken = bids_dataset(tmp_path / "broken", {"sub-01/anat/sub-01_T1w": 1})
    (broken / "dataset_description.json").write_text("{not json")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    inputs, out, flags, words = {
        "two datasets": ([raw, other], tmp_path / "o", [], "several BIDS datasets"),
        "bids and plain": ([raw, plain], tmp_path / "o", [], "not in the BIDS dataset"),
        "filter without bids": ([plain], tmp_path / "o", ["--bids-filter", "suffix=T1w"],
                                "no input is one"),
        "nothing matches": ([raw], tmp_path / "o", ["--bids-filter", "suffix=FLAIR"],
                            "no image of this BIDS dataset matches"),
        "unknown entity": ([raw], tmp_path / "o", ["--bids-filter", "sesion=1"],
                           "'sesion' is not a BIDS entity"),
        "into the source": ([raw], raw, [], "is the BIDS dataset or holds it"),
        "another dataset's folder": ([raw], foreign, [], "did not write"),
        "broken description": ([broken], tmp_path / "o", [],
                               "dataset_description.json: not a readable BIDS dataset"),
    }[case]
    before = _files(raw)
    code, text = run_cli("predict", *inputs, "-o", out, "--model", models["segment"], *flags)
    assert code == 2, text
    assert words in text and "Traceback" not in text
    assert _files(raw) == before
    if case != "another dataset's folder":
        assert not (tmp_path / "o").exists()


def test_a_subject_folder_that_is_a_link_is_never_written_through(raw, models, tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "sub-01").symlink_to(elsewhere, target_is_directory=True)
    proc = console("predict", raw, "-o", out, "--model", models["segment"], "--no-qc")
    assert proc.returncode == 1
    status = {e["name"]: (e["status"], e["error"]) for e in load_report(out)["scans"]}
    assert status["sub-01_T1w"][0] == "failed" and "symbolic link" in status["sub-01_T1w"][1]
    assert {s for n, (s, _) in status.items() if n != "sub-01_T1w"} == {"ok"}
    assert list(elsewhere.iterdir()) == []


def test_an_output_folder_inside_the_dataset_but_not_under_derivatives_is_refused(
        models, tmp_path):
    """``-o my_study/sub-01`` hid sub-01's images from the run and wrote a derivative
    dataset into the raw one (the validator then finds 18 errors in it)."""
    raw = bids_dataset(tmp_path / "raw", {"sub-01/anat/sub-01_T1w": 1,
                                          "sub-02/anat/sub-02_T1w": 2})
    link = tmp_path / "link"  # a link outside the dataset, to a folder inside it
    link.symlink_to(raw / "sub-02" / "anat", target_is_directory=True)
    before = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*"))
    for out in (raw / "sub-01", raw / "results", raw / "derivatives", link / "out"):
        proc = console("predict", f"{raw}/", "-o", out, "--model", models["segment"])
        assert proc.returncode == 2, (out, proc.stderr)
        assert "the output folder lies inside the BIDS dataset, not in a folder of its own " \
               "under derivatives/" in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*")) == before
    out = raw / "derivatives" / "napari-unet"  # where BIDS puts them: made, and valid
    proc = console("predict", raw, "-o", out, "--model", models["segment"], "--no-qc")
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.rglob("*_dseg.nii.gz")} == {
        "sub-01_space-orig_dseg.nii.gz", "sub-02_space-orig_dseg.nii.gz"}
    assert_valid(out)
    assert validate(raw)["errors"] == []  # the raw dataset stays valid around it


def test_a_broken_sidecar_fails_only_the_images_it_belongs_to(models, tmp_path):
    """pybids refuses a whole dataset for one JSON file it cannot parse: the run was
    refused (exit 2) for a broken sidecar, even one of an image it was not asked for."""
    raw = bids_dataset(tmp_path / "raw", {"sub-01/anat/sub-01_T1w": 1,
                                          "sub-01/anat/sub-01_T2w": 2,
                                          "sub-03/anat/sub-03_T1w": 3})
    (raw / "sub-01/anat/sub-01_T2w.json").write_text('{"EchoTime": 0.1,')  # not asked for
    (raw / "sub-03/anat/sub-03_T1w.json").write_text('{"PatientName": "Doe^Jane"')
    out = raw / "derivatives" / "napari-unet"
    proc = console("predict", raw, "-o", out, "--model", models["segment"], "--no-qc")
    assert proc.returncode == 1, proc.stderr
    report = load_report(out)
    assert report["counts"] == {"ok": 1, "failed": 1, "skipped": 0}
    failed = next(e for e in report["scans"] if e["status"] == "failed")
    assert failed["input"] == str(raw / "sub-03/anat/sub-03_T1w.nii.gz")
    assert failed["outputs"] == [] and failed["error"].startswith(
        "its JSON sidecar (beside it) cannot be read (JSONDecodeError")
    # its labels could not be checked against the sidecar: named by neither
    for text in (proc.stdout + proc.stderr, failed["name"], failed["error"]):
        assert "sub-03" not in text
    ok = out / "sub-01/anat/sub-01_space-orig_dseg.nii.gz"
    assert nib.load(ok).shape == nib.load(raw / "sub-01/anat/sub-01_T1w.nii.gz").shape
    assert not (out / "sub-03").exists()
    assert_valid(out)


def test_long_entity_labels_write_what_fits_and_fail_what_cannot_before_any_write(
        models, tmp_path):
    """An acq label of 200 characters: every output name fits in 255 bytes, but the
    temporary files' names did not (ENAMETOOLONG, the scan failed). One of 220: its
    probseg names cannot fit; the dseg was renamed into place before that failed, so the
    derivative held a dseg without its sidecar (invalid)."""
    fits, too_long = "a" * 200, "b" * 220
    raw = bids_dataset(tmp_path / "raw", {f"sub-01/anat/sub-01_acq-{fits}_T1w": 1,
                                          f"sub-02/anat/sub-02_acq-{too_long}_T1w": 2})
    out = raw / "derivatives" / "napari-unet"
    proc = console("predict", raw, "-o", out, "--model", models["segment"], "--probabilities")
    assert proc.returncode == 1, proc.stderr
    scans = {e["entities"]["subject"]: e for e in load_report(out)["scans"]}
    assert scans["01"]["status"] == "ok", scans["01"]["error"]
    dseg = out / f"sub-01/anat/sub-01_acq-{fits}_space-orig_dseg.nii.gz"
    assert nib.load(dseg).shape == nib.load(
        raw / f"sub-01/anat/sub-01_acq-{fits}_T1w.nii.gz").shape
    assert scans["02"]["status"] == "failed"
    assert "this output's name is 268 bytes long, more than the file system allows (255)" \
        in scans["02"]["error"]
    assert not (out / "sub-02").exists()
    assert_valid(out)
    from bids import BIDSLayout

    layout = BIDSLayout(raw, derivatives=out, validate=False)
    found = layout.get(scope="derivatives", suffix="dseg", extension=".nii.gz")
    assert [f.get_entities()["acquisition"] for f in found] == [fits]


def test_a_later_run_whose_outputs_take_an_earlier_scans_names_says_whose_they_are(
        models, tmp_path):
    """T2w images segmented into the folder of the T1w run: the dseg names are the same,
    and the error said 'was not written by napari-unet: move it away', inviting a person
    to move the T1w result away."""
    raw = bids_dataset(tmp_path / "raw", {"sub-01/anat/sub-01_T1w": 1,
                                          "sub-01/anat/sub-01_T2w": 2})
    out = raw / "derivatives" / "napari-unet"
    args = ("predict", raw, "-o", out, "--model", models["segment"], "--no-qc")
    assert console(*args).returncode == 0
    dseg = out / "sub-01/anat/sub-01_space-orig_dseg.nii.gz"
    t1_result = dseg.read_bytes()
    proc = console(*args, "--bids-filter", "suffix=T2w")
    assert proc.returncode == 1
    (entry,) = load_report(out)["scans"]
    assert entry["name"] == "sub-01_T2w" and entry["status"] == "failed"
    assert entry["error"].startswith(
        "sub-01/anat/sub-01_space-orig_dseg.nii.gz in the output folder is the output of "
        "another scan, sub-01_T1w: both would have this name")
    assert "not written by napari-unet" not in proc.stderr
    assert dseg.read_bytes() == t1_result
    assert json.loads((out / "sub-01/anat/sub-01_space-orig_dseg.json").read_text())[
        "Sources"] == ["bids:raw:sub-01/anat/sub-01_T1w.nii.gz"]
    assert_valid(out)
