"""Is ``planes auto`` never worse than the better single choice? Dice of one plane, of the
three planes' plain mean and of ``auto`` on every condition of ``bench/robustness.py``.

Run from the repository root:

    python bench/planes.py                         # bundled brain-tissue
    python bench/planes.py --model my.safetensors -o out.json

For each condition (whole-scan perturbations and partial-coverage slabs, see
``bench/robustness.py``) the scan is predicted along its own plane (``one``: axial for
the whole scan, the slab's own slices for a slab) and along each of the other two planes,
once each, keeping the class probabilities and labels; ``all`` is their plain mean (what
``predict(planes="all")`` computes) and ``auto`` the rule of
:mod:`napari_unet.inference.aggregation` on the same three predictions (``combine``:
what ``predict(planes="auto")`` computes, one plane at a time; the test suite checks that
the two agree). Three passes per condition instead of seven. Dice per class pools the
held-out voxels. ``auto`` passes a condition when, for every class, it is within
``TOLERANCE`` of the better of ``one`` and ``all``. Writes ``bench/results/planes.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import robustness  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "planes.json"
TOLERANCE = 0.005  # Dice auto may lose against the better of one and all (issue 26)


def per_plane(case, model) -> list:
    """The Prediction along each array axis, with class probabilities (the whole volume)."""
    from napari_unet.inference.predictor import predict

    return [predict(case.volume, model, axis=a, device="cpu", planes="one",
                    probabilities=True) for a in range(3)]


def compare(case, model) -> dict:
    """Dice of one, all and auto on the case's scored slices, and what auto did."""
    import torch

    from napari_unet.inference import aggregation

    preds = per_plane(case, model)
    probs = [p.probabilities for p in preds]

    def labels(p: np.ndarray) -> np.ndarray:
        return model.task.decide(torch.from_numpy(p[case.slices]).permute(0, 3, 1, 2)).numpy()

    spacing = getattr(case.volume, "spacing", None)
    auto, joined = aggregation.combine(probs, [p.labels for p in preds], case.axis, spacing,
                                       model.meta.pixel_spacing, model.meta.patch_size)
    ref = case.reference[case.slices]
    one = robustness.dice(labels(probs[case.axis]), ref)
    mean = robustness.dice(labels(sum(probs) / 3), ref)
    auto = robustness.dice(labels(auto), ref)
    gap = {k: auto[k] - max(one[k], mean[k]) for k in robustness.CLASSES}
    return {"one": one, "all": mean, "auto": auto, "gap": gap,
            "passed": bool(min(gap.values()) >= -TOLERANCE), "planes_counted": joined,
            "slices": len(case.slices)}


def evaluate(model, log=print) -> dict:
    t1, labels = robustness.load_sample()
    h = model.meta.provenance["held_out"]
    block = (int(h["start"]), int(h["stop"]))
    out = {}
    for case in robustness.all_cases(t1, labels, block):
        r = out[case.name] = compare(case, model)
        log(f"  {case.name:38s} one {_pair(r['one'])}  all {_pair(r['all'])}  auto "
            f"{_pair(r['auto'])}  {'ok' if r['passed'] else 'WORSE'}")
    return out


def _pair(d: dict) -> str:
    return f"{d['grey_matter']:.3f}/{d['white_matter']:.3f}"


def table(results: dict) -> str:
    rows = ["| condition | one plane | plain mean (all) | auto | auto - better | ok |",
            "|---|---|---|---|---|---|"]
    for name, r in results.items():
        worst = min(r["gap"].values())
        rows.append(f"| {name} | {_pair(r['one'])} | {_pair(r['all'])} | {_pair(r['auto'])} "
                    f"| {worst:+.3f} | {'yes' if r['passed'] else '**no**'} |")
    return "\n".join(rows)


def summary(results: dict) -> dict:
    failed = [n for n, r in results.items() if not r["passed"]]
    return {"conditions": len(results), "passed": len(results) - len(failed),
            "failed": failed, "worst_gap": min(min(r["gap"].values()) for r in results.values())}


def main(argv: list[str] | None = None) -> int:
    from napari_unet.devices import cpu_name  # the CPU by its model name
    from napari_unet.io.write import atomic_write_text
    from napari_unet.model.checkpoint import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="brain-tissue", help="bundled name or model file")
    p.add_argument("-o", "--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    model = load_model(args.model, device="cpu")
    t0 = time.time()
    results = evaluate(model, log=lambda s: print(s, flush=True))
    out = {"model": {"name": model.name, "hash": model.hash}, "tolerance": TOLERANCE,
           "summary": summary(results), "conditions": results,
           "seconds": round(time.time() - t0, 1),
           "machine": cpu_name(),
           "command": "python bench/planes.py " + " ".join(argv or sys.argv[1:])}
    atomic_write_text(args.output, json.dumps(out, indent=2) + "\n")
    print(table(results))
    print(json.dumps(out["summary"], indent=2))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
