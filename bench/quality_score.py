"""Does the quality score say which results to check? Measured against Dice.

Run from the repository root:

    nice -n 5 python bench/quality_score.py               # bundled brain-tissue and mri-denoise
    python bench/quality_score.py --groups ood --no-denoise   # a subset, a quick look

Every case is a whole scan built from the sample T1 and its tissue labels; brain-tissue
labels it through ``napari_unet.predict`` as a user's run would (``--planes auto``), on
the held-out axial slices of its file (``provenance.held_out``; never trained on) that
the scan covers, and ``napari_unet.inference.quality.assess`` scores the same result.
Dice (the mean of grey and white matter) is measured on those slices, the score on the
same prediction. Groups:

- ``validated``: every condition of ``bench/robustness.py`` (its case builders);
- ``partial``: slabs of 16, 32 and 48 slices along each plane (axial through the
  held-out block; coronal and sagittal through the middle and off it), each clean and
  with the robustness bias field and 3% Rician noise;
- ``ood``, scans the model was not made for: T2-like contrast (CSF bright, grey above
  white matter), inverted contrast, a CT synthesised from the labels (Hounsfield units per
  tissue, with and without a bright skull), Rician noise of 10, 12.5 and 15%, bias fields
  2 and 3 times as strong, motion-like ghosting (random phase ramps on 30% of k-space
  lines: shifts of 1, 3 and 6 pixels);
- ``unnamed``: conditions no issue names, kept apart to check that the score and its
  threshold carry over: a T1 with skull and scalp, FLAIR- and PD-like contrasts, blur,
  3 mm slices, Gibbs ringing, spikes, a 25 degree rotation, a smaller and a larger head,
  gamma 0.4 and 2.5, gamma with noise and bias together, fold-over, a dark band of lost
  signal, 8 grey levels, 3x coarser pixels.

Reported per group and over all cases: the AUROC of the score for results with Dice
below 0.90 against those at or above (1.0: every worse result scores lower), and at the
documented threshold (``quality.REVIEW_BELOW``) the share flagged of results with Dice
below 0.80 and of those at or above 0.95. The denoiser's flag is measured on mri-denoise
over Rician noise levels and other contrasts, next to the PSNR it reaches.

Writes ``bench/results/quality_score.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import robustness as R  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "quality_score.json"
GROUPS = ("validated", "partial", "ood", "unnamed")
SPLIT, BAD, GOOD = 0.90, 0.80, 0.95  # Dice: the AUROC split; must flag below; must pass above
TARGETS = {"auroc": 0.90, "flag_bad": 0.90, "flag_good": 0.10}


# ----------------------------------------------------------------------------- scans
def like(t1, array: np.ndarray, modality: str | None = None, spacing=None):
    from napari_unet.io.volume import Volume

    vol = Volume.from_info(t1.info(), np.ascontiguousarray(array, dtype=np.float32))
    if modality:
        vol.modality = modality
    if spacing is not None:
        vol.spacing = tuple(float(s) for s in spacing)
    return vol


def slab(t1, image: np.ndarray, labels: np.ndarray, axis: int, start: int, n: int,
         block: tuple[int, int]):
    """``n`` slices from ``start`` along ``axis`` (origin moved with them), its reference,
    and the held-out axial slices (block) it covers, in its own indices."""
    cut = [slice(None)] * 3
    cut[axis] = slice(start, start + n)
    vol = like(t1, image[tuple(cut)])
    step = np.zeros(3)
    step[axis] = start
    vol.origin = tuple(np.asarray(t1.origin) + np.asarray(t1.direction) @ (
        step * np.asarray(t1.spacing)))
    if axis == 0:
        idx = list(range(max(block[0], start) - start, min(block[1], start + n) - start))
    else:
        idx = list(range(*block))
    return vol, np.ascontiguousarray(labels[tuple(cut)]), idx


def stronger_bias(shape: tuple[int, ...], k: float) -> np.ndarray:
    """The robustness bias field with its log ``k`` times as large."""
    return R.bias_field(shape) ** k


def t2_like(image: np.ndarray) -> np.ndarray:
    """Skull-stripped T2-like: inside the brain, darker in T1 is brighter (CSF brightest,
    grey above white matter), the background stays dark."""
    mask = image > 0
    lo, hi = np.percentile(image[mask], [0.5, 99.5])
    u = np.clip((image - lo) / (hi - lo), 0, 1)
    return np.where(mask, 40 + 200 * (1 - u) ** 1.2, 0).astype(np.float32)


def flair_like(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """CSF dark, grey matter brighter than white matter."""
    mask = image > 0
    lo, hi = np.percentile(image[mask], [0.5, 99.5])
    u = np.clip((image - lo) / (hi - lo), 0, 1)
    tissue = np.where(labels == 1, 1.15, np.where(labels == 2, 0.85, 0.3))
    return np.where(mask, 180 * tissue * (0.8 + 0.2 * u), 0).astype(np.float32)


def pd_like(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Little tissue contrast: grey matter a little above white, CSF between."""
    mask = image > 0
    tissue = np.choose(labels, [0.8, 1.0, 0.9]).astype(np.float32)
    smooth = image / max(float(image.max()), 1.0)
    return np.where(mask, 200 * tissue + 10 * smooth, 0).astype(np.float32)


def inverted(image: np.ndarray) -> np.ndarray:
    return (image.max() - image).astype(np.float32)


def ct_like(image: np.ndarray, labels: np.ndarray, skull: bool = True,
            seed: int = 3) -> np.ndarray:
    """Hounsfield units from the labels (CSF 8, grey 38, white 28, air -1000), with a
    6 mm bright skull (900) between a thin CSF layer and a 4 mm scalp, plus 4 HU noise."""
    from scipy.ndimage import distance_transform_edt

    mask = image > 0
    hu = np.full(image.shape, -1000.0, np.float32)
    hu[mask] = np.choose(labels, [8.0, 38.0, 28.0]).astype(np.float32)[mask]
    if skull:
        dist = distance_transform_edt(~mask)
        hu[(dist > 0) & (dist <= 2)] = 12.0
        hu[(dist > 2) & (dist <= 8)] = 900.0
        hu[(dist > 8) & (dist <= 12)] = 40.0
    rng = np.random.default_rng(seed)
    return hu + rng.normal(0, 4.0, hu.shape).astype(np.float32)


def t1_with_skull(image: np.ndarray) -> np.ndarray:
    """The T1 with what skull stripping removed: dark CSF rim and skull, bright scalp fat."""
    from scipy.ndimage import distance_transform_edt

    mask = image > 0
    dist = distance_transform_edt(~mask)
    out = image.astype(np.float32).copy()
    out[(dist > 0) & (dist <= 2)] = 60.0
    out[(dist > 2) & (dist <= 7)] = 25.0
    out[(dist > 7) & (dist <= 11)] = 245.0
    out[(dist > 11) & (dist <= 13)] = 150.0
    return out


def ghosting(image: np.ndarray, shift: float, seed: int = 5) -> np.ndarray:
    """Motion-like ghosting: 30% of the k-space lines along the rows (array axis 1) get a
    random translation of ``shift`` pixels (sd) along the columns, slice by slice."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftshift(np.fft.fft2(image.astype(np.float32), axes=(1, 2)), axes=(1, 2))
    n, m = image.shape[1:3]
    moved = (rng.random(n) < 0.3) * rng.normal(0, shift, n)
    ramp = np.exp(-2j * np.pi * np.outer(moved, np.fft.fftshift(np.fft.fftfreq(m))))
    out = np.fft.ifft2(np.fft.ifftshift(k * ramp[None], axes=(1, 2)), axes=(1, 2))
    return np.abs(out).astype(np.float32)


def gibbs(image: np.ndarray, keep: float) -> np.ndarray:
    """k-space truncated to the central ``keep`` share of each in-plane axis."""
    k = np.fft.fftshift(np.fft.fft2(image.astype(np.float32), axes=(1, 2)), axes=(1, 2))
    n, m = image.shape[1:3]
    mask = np.zeros((n, m), bool)
    h, w = int(n * keep / 2), int(m * keep / 2)
    mask[n // 2 - h:n // 2 + h, m // 2 - w:m // 2 + w] = True
    out = np.fft.ifft2(np.fft.ifftshift(k * mask[None], axes=(1, 2)), axes=(1, 2))
    return np.abs(out).astype(np.float32)


def spikes(image: np.ndarray, share: float, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = image.astype(np.float32).copy()
    hit = rng.random(image.shape) < share
    out[hit] = rng.choice([0.0, float(image.max())], size=int(hit.sum()))
    return out


def zoomed(array: np.ndarray, factor: float, order: int) -> np.ndarray:
    """The anatomy ``factor`` times as large about the volume's centre, same grid."""
    from scipy.ndimage import affine_transform

    centre = (np.asarray(array.shape) - 1) / 2
    offset = centre - centre / factor
    return affine_transform(array.astype(np.float32), np.full(3, 1 / factor), offset=offset,
                            order=order, mode="constant", cval=0.0)


def fold_over(image: np.ndarray, share: float = 0.25) -> np.ndarray:
    """Aliasing: the field of view cut along the rows, the cut-off part wrapped back."""
    n = image.shape[1]
    cut = int(n * share / 2)
    core = image[:, cut:n - cut].astype(np.float32).copy()
    core[:, :cut] += image[:, n - cut:]
    core[:, -cut:] += image[:, :cut]
    return core


def quantised(image: np.ndarray, levels: int) -> np.ndarray:
    step = float(image.max()) / levels
    return (np.round(image / step) * step).astype(np.float32)


def thick_slices(image: np.ndarray, labels: np.ndarray, k: int = 3):
    """Axial slices k mm thick (the mean of k 1 mm slices), and their majority labels."""
    n = image.shape[0] // k * k
    img = image[:n].reshape(n // k, k, *image.shape[1:]).mean(1)
    lab = R.carry_labels(labels[:n], lambda m: m.reshape(n // k, k, *m.shape[1:]).mean(1))
    return img.astype(np.float32), lab


def cases(t1, labels: np.ndarray, block: tuple[int, int], groups=GROUPS) -> Iterator[tuple]:
    """(group, name, volume, reference, slices) for every case, built one at a time."""
    image = np.asarray(t1.array, np.float32)
    idx = list(range(*block))
    if "validated" in groups:
        for c in R.cases(t1, labels, block):
            yield "validated", c.name, c.volume, c.reference, c.slices
    if "partial" in groups:
        yield from _partial(t1, image, labels, block)
    if "ood" in groups:
        yield from _ood(t1, image, labels, idx)
    if "unnamed" in groups:
        yield from _unnamed(t1, image, labels, block)


def _partial(t1, image, labels, block):
    centre = (block[0] + block[1]) // 2
    slabs = [(0, n, centre - n // 2) for n in (16, 32, 48)] + [(0, 32, block[0] - 16)]
    slabs += [(1, n, c - n // 2) for n in (16, 32, 48) for c in (117, 50, 185)]
    slabs += [(2, n, c - n // 2) for n in (16, 32, 48) for c in (98, 45)]
    degraded = R.rician(image * R.bias_field(image.shape), 0.03, R.SEED)
    for axis, n, start in slabs:
        for name, img in (("", image), (" + bias + noise", degraded)):
            vol, ref, sl = slab(t1, img, labels, axis, start, n, block)
            plane = ("axial", "coronal", "sagittal")[axis]
            yield "partial", f"{plane} slab {n} @{start}{name}", vol, ref, sl


def _ood(t1, image, labels, idx):
    yield "ood", "T2-like contrast", like(t1, t2_like(image)), labels, idx
    yield "ood", "inverted contrast", like(t1, inverted(image)), labels, idx
    yield "ood", "CT with skull", like(t1, ct_like(image, labels), "CT"), labels, idx
    yield "ood", "CT without skull", like(t1, ct_like(image, labels, False), "CT"), labels, idx
    for level in (0.10, 0.125, 0.15):
        yield "ood", f"Rician {level:.1%}", like(t1, R.rician(image, level, R.SEED + 1)), \
            labels, idx
    for k in (2.0, 3.0):
        yield "ood", f"bias field x{k:g}", like(t1, image * stronger_bias(image.shape, k)), \
            labels, idx
    for shift in (1.0, 3.0, 6.0):
        yield "ood", f"ghosting {shift:g} px", like(t1, ghosting(image, shift)), labels, idx


def _unnamed(t1, image, labels, block):
    from scipy.ndimage import gaussian_filter

    idx = list(range(*block))
    yield "unnamed", "T1 with skull and scalp", like(t1, t1_with_skull(image)), labels, idx
    yield "unnamed", "FLAIR-like contrast", like(t1, flair_like(image, labels)), labels, idx
    yield "unnamed", "PD-like contrast", like(t1, pd_like(image, labels)), labels, idx
    yield "unnamed", "blur 1.5 mm", like(t1, gaussian_filter(image, 1.5)), labels, idx
    thick, ref = thick_slices(image, labels)
    keep = [j for j in range(len(thick)) if block[0] <= 3 * j and 3 * j + 2 < block[1]]
    yield "unnamed", "3 mm axial slices", like(t1, thick, spacing=(3.0, 1.0, 1.0)), ref, keep
    yield "unnamed", "Gibbs ringing", like(t1, gibbs(image, 0.4)), labels, idx
    yield "unnamed", "spikes 1%", like(t1, spikes(image, 0.01)), labels, idx
    yield "unnamed", "rotation 25 deg", like(t1, R.rotate_in_plane(image, 25)), \
        R.carry_labels(labels, lambda m: R.rotate_in_plane(m, 25)), idx
    for f in (0.85, 1.15):
        yield "unnamed", f"head x{f:g}", like(t1, zoomed(image, f, 1)), \
            R.carry_labels(labels, lambda m, f=f: zoomed(m, f, 1)), idx
    for g in (0.4, 2.5):
        yield "unnamed", f"gamma {g:g}", like(t1, R.gamma(image, g)), labels, idx
    mixed = R.rician(R.gamma(image, 1.6) * R.bias_field(image.shape), 0.06, R.SEED + 2)
    yield "unnamed", "gamma 1.6 + bias + Rician 6%", like(t1, mixed), labels, idx
    cut = int(image.shape[1] * 0.25 / 2)
    yield "unnamed", "fold-over", like(t1, fold_over(image)), labels[:, cut:-cut], idx
    band = image.copy()
    band[:, 100:140] *= 0.25
    yield "unnamed", "signal dropout band", like(t1, band), labels, idx
    yield "unnamed", "8 grey levels", like(t1, quantised(image, 8)), labels, idx
    coarse = R.down_up_in_plane(R.down_up_in_plane(image))
    yield "unnamed", "4x in-plane down/up", like(t1, coarse), labels, idx


# ----------------------------------------------------------------------------- measuring
def auroc(scores, positive) -> float | None:
    """P(a positive scores lower than a negative), ties half: the score's AUROC for
    telling positives (worse results) apart; None (JSON null, not NaN, which strict
    parsers refuse) where a group has no result on one side."""
    s, pos = np.asarray(scores, float), np.asarray(positive, bool)
    a, b = s[pos], s[~pos]
    if not a.size or not b.size:
        return None
    less = (a[:, None] < b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()
    return float(less / (a.size * b.size))


def summary(rows: list[dict]) -> dict:
    dice = np.array([r["dice"] for r in rows])
    score = np.array([r["score"] for r in rows])
    flag = np.array([r["review"] for r in rows])
    bad, good = dice < BAD, dice >= GOOD
    return {"cases": len(rows), "below_0.90": int((dice < SPLIT).sum()),
            "below_0.80": int(bad.sum()), "at_least_0.95": int(good.sum()),
            "auroc": auroc(score, dice < SPLIT),
            "flagged_below_0.80": float(flag[bad].mean()) if bad.any() else None,
            "flagged_at_least_0.95": float(flag[good].mean()) if good.any() else None,
            "flagged": int(flag.sum())}


def segmentation_rows(model, groups, log=print) -> list[dict]:
    from napari_unet.inference.predictor import predict
    from napari_unet.inference.quality import assess

    t1, labels = R.load_sample()
    h = model.meta.provenance["held_out"]
    block = (int(h["start"]), int(h["stop"]))
    rows = []
    for group, name, vol, ref, sl in cases(t1, labels, block, groups):
        t0 = time.time()
        pred = predict(vol, model, axis=0, device="cpu", slices=sl)
        q = assess(vol, model, pred)
        d = R.dice(pred.labels[sl], ref[sl])
        dice = (d["grey_matter"] + d["white_matter"]) / 2
        rows.append({"group": group, "name": name, "dice": dice,
                     "grey_matter": d["grey_matter"], "white_matter": d["white_matter"],
                     "slices": len(sl), "planes": pred.planes, **q.to_dict(),
                     "seconds": round(time.time() - t0, 1)})
        log(f"  {group:9s} {name:34s} Dice {dice:.3f}  score {q.score:.3f}"
            f"{'  REVIEW: ' + '; '.join(q.reasons) if q.review else ''}")
    return rows


def denoise_rows(model, log=print) -> list[dict]:
    """mri-denoise over noise levels and other contrasts: flagged or not, and the PSNR
    in the brain before and after (on the clean scan's normalised scale)."""
    from napari_unet.inference.predictor import predict
    from napari_unet.inference.quality import assess

    t1, labels = R.load_sample()
    image = np.asarray(t1.array, np.float32)
    h = model.meta.provenance["held_out"]
    idx = list(range(int(h["start"]), int(h["stop"]), 3))
    fitted = model.meta.normalization.fit(image)
    brain = image[idx] > 0
    scans = [(f"Rician {lv:.0%}", image, R.rician(image, lv, R.SEED + 3))
             for lv in (0.03, 0.05, 0.08, 0.10, 0.12, 0.15, 0.20, 0.25)]
    scans += [("T2-like, Rician 5%", t2_like(image), None),
              ("CT with skull", ct_like(image, labels), None)]
    rows = []
    for name, clean, noisy in scans:
        if noisy is None:
            noisy = R.rician(clean, 0.05, R.SEED + 4) if name.startswith("T2") else clean
        vol = like(t1, noisy, "CT" if name.startswith("CT") else None)
        pred = predict(vol, model, axis=0, device="cpu", slices=idx)
        q = assess(vol, model, pred)
        row = {"name": name, **q.to_dict()}
        if clean is image:
            row["psnr_in"] = _psnr(noisy[idx], image[idx], fitted, brain)
            row["psnr_out"] = _psnr(pred.image[idx], image[idx], fitted, brain)
        rows.append(row)
        gain = (f"  PSNR {row['psnr_in']:.1f} -> {row['psnr_out']:.1f} dB"
                if "psnr_in" in row else "")
        log(f"  {name:22s} noise {q.noise:.3f}  score {q.score:.3f}{gain}"
            f"{'  REVIEW: ' + '; '.join(q.reasons) if q.review else ''}")
    return rows


def _psnr(x, clean, fitted, brain) -> float:
    unit = lambda a: np.clip((a - fitted.low) / (fitted.high - fitted.low), 0, 1)  # noqa: E731
    return float(10 * np.log10(1.0 / np.mean((unit(x)[brain] - unit(clean)[brain]) ** 2)))


def report(rows: list[dict]) -> dict:
    by = {g: summary([r for r in rows if r["group"] == g]) for g in GROUPS
          if any(r["group"] == g for r in rows)}
    named = [r for r in rows if r["group"] != "unnamed"]
    if named:
        by["named (validated + partial + ood)"] = summary(named)
    by["all"] = summary(rows)
    return by


def met(s: dict) -> dict[str, bool]:
    fb, fg = s["flagged_below_0.80"], s["flagged_at_least_0.95"]
    return {"auroc >= 0.90": s["auroc"] is None or s["auroc"] >= TARGETS["auroc"],
            "flags >= 90% of Dice < 0.80": fb is None or fb >= TARGETS["flag_bad"],
            "flags <= 10% of Dice >= 0.95": fg is None or fg <= TARGETS["flag_good"]}


def main(argv: list[str] | None = None) -> int:
    from napari_unet.devices import cpu_name  # the CPU by its model name
    from napari_unet.inference import quality
    from napari_unet.io.write import atomic_write_text
    from napari_unet.model.checkpoint import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="brain-tissue", help="segmentation model to score")
    p.add_argument("--denoiser", default="mri-denoise", help="denoising model to flag")
    p.add_argument("--groups", nargs="+", default=list(GROUPS), choices=GROUPS)
    p.add_argument("--no-denoise", action="store_true")
    p.add_argument("-o", "--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    t0 = time.time()
    model = load_model(args.model, device="cpu")
    rows = segmentation_rows(model, args.groups)
    summaries = report(rows)
    den = [] if args.no_denoise else denoise_rows(load_model(args.denoiser, device="cpu"))
    out = {"model": {"name": model.name, "hash": model.hash},
           "threshold": {"review_below": quality.REVIEW_BELOW, "like": quality.LIKE,
                         "unlike": quality.UNLIKE, "slice_below": quality.SLICE_BELOW,
                         "noise_far": quality.NOISE_FAR},
           "dice": "mean of grey and white matter Dice over the held-out slices scored",
           "summary": summaries, "targets": TARGETS,
           "targets_met": {k: met(v) for k, v in summaries.items()},
           "cases": rows, "denoiser": den,
           "seconds": round(time.time() - t0, 1),
           "machine": cpu_name(),
           "command": "python bench/quality_score.py " + " ".join(argv or sys.argv[1:])}
    atomic_write_text(args.output, json.dumps(out, indent=2, allow_nan=False) + "\n")
    for name, s in summaries.items():
        print(f"{name:36s} n={s['cases']:3d}  AUROC {_auroc(s['auroc'])}  flagged: "
              f"{_share(s['flagged_below_0.80'])} of Dice < 0.80 ({s['below_0.80']}), "
              f"{_share(s['flagged_at_least_0.95'])} of Dice >= 0.95 ({s['at_least_0.95']})")
    print(f"wrote {args.output}")
    return 0


def _auroc(v) -> str:
    return "  n/a" if v is None else f"{v:.3f}"


def _share(v) -> str:
    return "  n/a" if v is None else f"{v:5.0%}"


if __name__ == "__main__":
    sys.exit(main())
