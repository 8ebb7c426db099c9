"""Where ITK and nibabel put the voxels of the NIfTI files napari-unet writes, for inputs
whose geometry they read differently. Not a speed benchmark: distances in millimetres.

Run from the repository root (the code measured is a ``src`` folder, run in
subprocesses; the readers are this environment's SimpleITK and nibabel):

    python bench/nifti_agreement.py                                  # this checkout
    python bench/nifti_agreement.py --code /tmp/old/src --label before

Inputs (built as in the tests, ``tests/support/geometry_cases.py``): a 15 degree
gantry-tilted head CT holding a ball, an oblique MR with positions rounded to 0.1 mm,
nibabel's real Siemens two-slice pair, a NIfTI with a sheared sform (no qform), and a
NIfTI whose qform differs from its sform (codes 1 and 2). Outputs: ``napari-unet
predict`` with a tiny 3-class model and ``--probabilities`` (labels, probabilities,
uncertainty), with a tiny denoising model (denoised), and for the tilted CT the ball's
own labels through ``write_volume`` (the library door).

Per output: whether SimpleITK opens it (also with ``ITK_NIFTI_SFORM_PERMISSIVE=YES``),
the largest distance between where ITK and nibabel put a voxel centre, and where the
output is on the scan's own voxels, the largest distance of each from the source's own
placement (DICOM: each slice's ImagePositionPatient, ImageOrientationPatient and
PixelSpacing read with pydicom; NIfTI: the source's affine as nibabel reads it). For the
ball labels, the farthest a wrongly labelled voxel (as each reader places it) lies from
the ball's surface. Results go to ``bench/results/nifti_agreement.json`` under
``--label``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support import geometry_cases as cases  # noqa: E402
from support.batch_data import tiny_model  # noqa: E402
from support.nifti_checks import RAS_TO_LPS, distance, read_itk, read_nibabel  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "nifti_agreement.json"
WRITE_BALL = """
import sys, warnings, numpy as np
sys.path.insert(0, {tests!r})
from napari_unet.io import read_volume, write_volume
from support import geometry_cases as cases
warnings.simplefilter("ignore")
vol = read_volume({folder!r})
labels = cases.ball(cases.dicom_voxel_centres({folder!r}))
write_volume(labels, {out!r}, like=vol)
"""


def nifti_source(path: Path, affine: np.ndarray, qform_affine=None, sform=1, qform=1) -> Path:
    data = np.random.default_rng(3).normal(300, 80, (40, 36, 12)).astype(np.float32)
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=sform)
    img.set_qform(affine if qform_affine is None else qform_affine, code=qform)
    img.to_filename(str(path))
    return path


def inputs(base: Path) -> dict[str, tuple[Path, object]]:
    """name -> (input path, where the source puts each voxel centre (k, j, i, 3))."""
    rotated = np.array([[0.9, 0, 0, -40], [0, 1.1 * np.cos(0.4), -2.5 * np.sin(0.4), 25.5],
                        [0, 1.1 * np.sin(0.4), 2.5 * np.cos(0.4), 12.25], [0, 0, 0, 1.0]])
    sheared = rotated.copy()
    sheared[:3, 2] += 0.8 * rotated[:3, 1] / np.linalg.norm(rotated[:3, 1])
    other = rotated.copy()
    other[:3, 3] += (5.0, -3.0, 2.0)
    out = {
        "tilted_ct_15deg": cases.tilted_ct(base / "tilted_ct"),
        "oblique_mr_rounded_0.1mm": cases.rounded_oblique_mr(base / "oblique_mr"),
        "nibabel_siemens_pair": cases.siemens_pair(base / "siemens_pair"),
        "nifti_sheared_sform": nifti_source(base / "sheared.nii.gz", sheared, qform=0),
        "nifti_qform_differs": nifti_source(base / "qform_differs.nii.gz", rotated,
                                            qform_affine=other, sform=2),
    }
    return {name: (path, cases.dicom_voxel_centres(path) if path.is_dir()
                   else nifti_centres(path)) for name, path in out.items()}


def nifti_centres(path: Path) -> np.ndarray:
    """Every voxel centre (k, j, i, 3) where nibabel puts it in the source."""
    from support.nifti_checks import centres

    img = nib.load(path)
    return centres(RAS_TO_LPS @ img.affine, img.shape)


def run(cmd: list[str], code: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(code), OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{cmd[:3]} failed ({done.returncode}):\n{done.stderr[-2000:]}")


def measure(path: Path, reference, ball: bool = False) -> dict:
    nibabel = read_nibabel(path)
    hdr = nib.load(str(path)).header
    row = {"shape": list(nibabel.values.shape[:3]),
           "sform_code": int(hdr["sform_code"]), "qform_code": int(hdr["qform_code"])}
    expected = np.asarray(reference)
    same_grid = expected.shape == nibabel.centres.shape
    if same_grid:
        row["nibabel_vs_source_mm"] = distance(nibabel.centres, expected)
    if ball:
        row["nibabel_ball_error_mm"] = ball_error(nibabel)
    for mode, permissive in (("itk", False), ("itk_permissive", True)):
        try:
            itk = read_itk(path, permissive=permissive)
        except RuntimeError as e:
            row[mode] = "refused: " + str(e).strip().splitlines()[-1][:120]
            continue
        row[mode] = "opens"
        row[f"{mode}_vs_nibabel_mm"] = distance(itk.centres, nibabel.centres)
        if same_grid:
            row[f"{mode}_vs_source_mm"] = distance(itk.centres, expected)
        if ball:
            row[f"{mode}_ball_error_mm"] = ball_error(itk)
    return row


def ball_error(reading) -> float:
    """The farthest a voxel whose label disagrees with the ball lies from its surface."""
    pts = reading.centres.reshape(-1, 3)
    wrong = reading.values.reshape(len(pts), -1)[:, 0] != cases.ball(pts)
    return float(cases.ball_edge_mm(pts[wrong]).max()) if wrong.any() else 0.0


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, default=ROOT / "src",
                        help="the src folder whose napari-unet is measured")
    parser.add_argument("--label", default="after")
    parser.add_argument("-o", "--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    script = Path(sys.executable).parent / "napari-unet"
    results = {}
    with tempfile.TemporaryDirectory(prefix="nifti-agreement-") as tmp:
        base = Path(tmp)
        seg = tiny_model(base / "seg.safetensors")
        den = tiny_model(base / "den.safetensors", "denoise")
        for name, (path, reference) in inputs(base / "in").items():
            out = base / "out" / name
            run([str(script), "predict", str(path), "-o", str(out / "seg"), "--model",
                 str(seg), "--probabilities", "--no-qc", "--quiet"], args.code)
            run([str(script), "predict", str(path), "-o", str(out / "den"), "--model",
                 str(den), "--no-qc", "--quiet"], args.code)
            rows = {f.name.rsplit("_", 1)[1].split(".")[0]: measure(f, reference)
                    for f in sorted(out.rglob("*.nii.gz"))}
            if name.startswith("tilted"):
                target = out / "ball_labels.nii.gz"
                run([sys.executable, "-c", WRITE_BALL.format(
                    tests=str(ROOT / "tests"), folder=str(path), out=str(target))], args.code)
                rows["ball_labels (write_volume)"] = measure(target, reference, ball=True)
            results[name] = rows
            print(name, json.dumps(rows, indent=1))
    saved = json.loads(args.output.read_text()) if args.output.exists() else {}
    saved[args.label] = {"code": str(args.code), "python": platform.python_version(),
                         "simpleitk": __import__("SimpleITK").Version.VersionString(),
                         "nibabel": nib.__version__, "inputs": results}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(saved, indent=1) + "\n")


if __name__ == "__main__":
    main()
