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


MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
# Module by module, what an MR Image Storage instance needs (PS3.3 A.4) besides geometry and
# pixels. No patient data: an anonymous name and ID, no birth date or sex (type 2: empty);
# PatientIdentityRemoved YES needs the method said (1C). Clean in Clunie's dciodvfy.
SERIES_ATTRIBUTES = {
    # Patient
    "PatientName": "Anonymous^MNI152", "PatientID": "MNI152-2009a", "PatientBirthDate": "",
    "PatientSex": "", "PatientIdentityRemoved": "YES",
    "DeidentificationMethod": "no patient: an average of many (MNI ICBM152 2009a template)",
    # General Study
    "StudyInstanceUID": _uid("napari-unet sample study"), "StudyDate": "20090101",
    "StudyTime": "120000", "ReferringPhysicianName": "", "StudyID": "1",
    "AccessionNumber": "", "StudyDescription": "napari-unet sample brain MRI",
    # General Series
    "Modality": "MR", "SeriesInstanceUID": _uid("napari-unet sample T1 series"),
    "SeriesNumber": 1, "SeriesDescription": "T1 MNI ICBM152 2009a (napari-unet sample)",
    "BodyPartExamined": "BRAIN", "PatientPosition": "HFS",
    # Frame of Reference
    "FrameOfReferenceUID": _uid("napari-unet sample frame of reference"),
    "PositionReferenceIndicator": "",
    # General Equipment
    "Manufacturer": "napari-unet (MNI ICBM152 2009a template)",
    # General Image / MR Image: an averaged template, so derived; sequence as typical for T1
    "ImageType": ["DERIVED", "SECONDARY", "OTHER"], "ScanningSequence": "GR",
    "SequenceVariant": ["SP", "MP"], "ScanOptions": "", "MRAcquisitionType": "3D",
    "RepetitionTime": "22", "EchoTime": "9.2", "EchoTrainLength": "1",
    "ImagedNucleus": "1H", "MagneticFieldStrength": "1.5",  # no InversionTime: not IR
    "SliceThickness": "1", "WindowCenter": "60", "WindowWidth": "120",
    # Image Pixel: signed 16-bit greyscale
    "SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2", "BitsAllocated": 16,
    "BitsStored": 16, "HighBit": 15, "PixelRepresentation": 1,
    # SOP Common
    "SOPClassUID": MR_IMAGE_STORAGE, "SpecificCharacterSet": "ISO_IR 100",
}


def write_dicom_series(nifti_path: Path, folder: Path) -> None:
    """The T1 as an axial MR series, one file per slice, written by pydicom (deterministic)."""
    image = sitk.Cast(sitk.ReadImage(str(nifti_path)), sitk.sitkInt16)  # LPS, as DICOM
    pixels = sitk.GetArrayFromImage(image)  # (slices, rows, columns)
    folder.mkdir(parents=True, exist_ok=True)
    d = image.GetDirection()
    orientation = [round(v, 6) + 0.0 for v in (*d[0:7:3], *d[1:8:3])]
    spacing = image.GetSpacing()
    for z in range(image.GetDepth()):
        pos = image.TransformIndexToPhysicalPoint((0, 0, z))
        ds = _dataset(_uid(f"napari-unet sample T1 slice {z}"))
        ds.update(_dict_dataset(SERIES_ATTRIBUTES))
        ds.InstanceNumber = z + 1
        ds.ImagePositionPatient = [round(p, 6) + 0.0 for p in pos]
        ds.ImageOrientationPatient = orientation
        ds.PixelSpacing = [spacing[1], spacing[0]]  # between rows, between columns
        ds.SpacingBetweenSlices = spacing[2]
        ds.Rows, ds.Columns = pixels.shape[1:]
        ds.PixelData = np.ascontiguousarray(pixels[z]).astype("<i2").tobytes()
        ds.save_as(folder / f"IM{z + 1:04d}.dcm", enforce_file_format=True)


def _dataset(sop_instance: str):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _uid("napari-unet make_sample_data")
    meta.ImplementationVersionName = "NAPARI_UNET_1"
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPInstanceUID = sop_instance
    return ds


def _dict_dataset(values: dict):
    from pydicom.dataset import Dataset

    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


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
