#!/usr/bin/env bash
# Set up (idempotent), then run the main job on the bundled sample brain MRI:
# tissue segmentation with `brain-tissue` and denoising with `mri-denoise`.
# Outputs (NIfTI in the scan's geometry, report.json, QC pictures) land in results/sample/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
out=${1:-results/sample}
mkdir -p "$(dirname "$out")"  # napari-unet makes the output folder, never folders above it
napari-unet predict sample_data/brain_t1.nii.gz -o "$out" --model brain-tissue
napari-unet predict sample_data/brain_t1.nii.gz -o "$out/denoise" --model mri-denoise
echo "results in $out (open $out/index.html for the QC pictures)"
