"""Regenerate ``sample_data/`` from the MNI ICBM152 2009 template shipped inside nilearn.

Writes a real T1 brain MRI (1 mm, 197 x 233 x 189), its tissue labels (0 background/CSF,
1 grey matter, 2 white matter: the most probable class of the template's GM/WM
probability maps) and the same T1 as an axial DICOM MR series, plus the license notice.

    python scripts/make_sample_data.py [--out sample_data]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

TEMPLATE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
LICENSE = """\
The sample data in this folder is derived from the MNI ICBM152 non-linear symmetric
2009a template (T1 and grey/white matter probability maps) as distributed inside the
nilearn package (nilearn/datasets/data/). Files: brain_t1.nii.gz, brain_tissue_labels.nii.gz,
brain_t1_dicom/ (regenerate with `python scripts/make_sample_data.py`).

Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal
Neurological Institute, McGill University. Permission to use, copy, modify, and
distribute this software and its documentation for any purpose and without fee is hereby
granted, provided that the above copyright notice appear in all copies. The authors and
McGill University make no representations about the suitability of this software for
any purpose. It is provided "as is" without express or implied warranty. The authors are
not responsible for any data loss, equipment damage, property loss, or injury to
subjects or patients resulting from the use or misuse of this software package.

References: Fonov V, Evans AC, Botteron K, Almli CR, McKinstry RC, Collins DL and BDCG,
Unbiased average age-appropriate atlases for pediatric studies, NeuroImage 54(1), 2011;
Fonov VS, Evans AC, McKinstry RC, Almli CR, Collins DL, Unbiased nonlinear average
age-appropriate brain templates from birth to adulthood, NeuroImage 47, S102, 2009.
"""


def template_dir() -> Path:
    from nilearn.datasets import data

    return Path(data.__file__).parent


def load_template() -> tuple[nib.Nifti1Image, np.ndarray]:
    """The T1 image and tissue labels (argmax of background/CSF, GM, WM probabilities)."""
    d = template_dir()
    t1 = nib.load(d / TEMPLATE.format("t1"))
    gm = nib.load(d / TEMPLATE.format("gm")).get_fdata() / 255.0
    wm = nib.load(d / TEMPLATE.format("wm")).get_fdata() / 255.0
    rest = np.clip(1.0 - gm - wm, 0.0, 1.0)
    labels = np.argmax(np.stack([rest, gm, wm]), axis=0).astype(np.uint8)
    return t1, labels


def write_nifti(out: Path, t1: nib.Nifti1Image, labels: np.ndarray) -> Path:
    data = np.rint(t1.get_fdata()).astype(np.int16)
    img = nib.Nifti1Image(data, t1.affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(t1.affine, code=1)
    img.set_sform(t1.affine, code=1)
    path = out / "brain_t1.nii.gz"
    nib.save(img, path)
    lab = nib.Nifti1Image(labels, t1.affine, img.header.copy())
    lab.set_data_dtype(np.uint8)
    nib.save(lab, out / "brain_tissue_labels.nii.gz")
    return path


def _uid(seed: str) -> str:
    """A deterministic DICOM UID (2.25 = UUID-derived root) so reruns give identical files."""
    return "2.25." + str(int(hashlib.sha256(seed.encode()).hexdigest()[:30], 16))


def write_dicom_series(nifti_path: Path, folder: Path) -> None:
    """The T1 as an axial MR series, one file per slice, written by SimpleITK/GDCM."""
    image = sitk.Cast(sitk.ReadImage(str(nifti_path)), sitk.sitkInt16)
    folder.mkdir(parents=True, exist_ok=True)
    study, series = _uid("napari-unet sample study"), _uid("napari-unet sample T1 series")
    direction = image.GetDirection()
    orientation = "\\".join(f"{v:.6f}" for v in (*direction[0:7:3], *direction[1:8:3]))
    common = {
        "0008|0060": "MR", "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
        "0010|0010": "MNI152^Template", "0010|0020": "MNI152-2009a",
        "0020|000d": study, "0020|000e": series, "0020|0011": "1",
        "0008|103e": "T1 MNI ICBM152 2009a (napari-unet sample)",
        "0008|1030": "napari-unet sample brain MRI", "0020|0037": orientation,
        "0018|0050": f"{image.GetSpacing()[2]:.6f}", "0008|0020": "20090101",
        "0028|1050": "60", "0028|1051": "120",
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(image.GetDepth()):
        sl = image[:, :, z]
        for key, value in common.items():
            sl.SetMetaData(key, value)
        pos = image.TransformIndexToPhysicalPoint((0, 0, z))
        sl.SetMetaData("0020|0032", "\\".join(f"{p:.6f}" for p in pos))
        sl.SetMetaData("0020|0013", str(z + 1))
        sl.SetMetaData("0008|0018", _uid(f"napari-unet sample T1 slice {z}"))
        writer.SetFileName(str(folder / f"IM{z + 1:04d}.dcm"))
        writer.Execute(sl)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "sample_data")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t1, labels = load_template()
    nifti = write_nifti(args.out, t1, labels)
    shutil.rmtree(args.out / "brain_t1_dicom", ignore_errors=True)
    write_dicom_series(nifti, args.out / "brain_t1_dicom")
    (args.out / "LICENSE-MNI152.txt").write_text(LICENSE)
    counts = np.bincount(labels.ravel(), minlength=3)
    print(f"wrote {args.out}: T1 {t1.shape}, labels voxels per class {counts.tolist()}")


if __name__ == "__main__":
    main()
