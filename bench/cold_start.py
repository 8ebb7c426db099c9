"""Cold-start benchmark: the first prediction in a fresh process against a later one.

Run from the repository root (see bench/README.md):

    nice -n 10 python bench/cold_start.py       # writes bench/results/cold_start.json

Each round starts two fresh Python processes on the sample brain with the bundled
``brain-tissue`` (its default: all three planes):

- **cold**: load the model, then ``predict`` twice; the first against the second;
- **warmed**: load the model and :func:`~napari_unet.inference.warmup.warm_up` it on the
  scan (what the inference widget does in the background when a model and a scan are
  chosen), then load it again
  (the widget's Run loads its own copy) and ``predict`` twice.

The two kinds of process alternate, so a change of load on a shared machine hits both.
Target: the warmed first prediction costs at most 1.3x a later one. Wall and CPU seconds
are both kept (on a busy machine CPU seconds are the steadier figure).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "brain_t1.nii.gz"
RESULTS = ROOT / "bench" / "results" / "cold_start.json"
TARGET = 1.3


def child(mode: str, threads: int) -> dict:
    """One fresh process: what a napari session does before and at its first Runs."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    torch.set_num_threads(threads)
    import napari_unet as nu

    volume = nu.read_volume(SAMPLE)
    warm = 0.0
    if mode == "warmed":
        from napari_unet.inference.warmup import warm_up

        warm = warm_up(nu.load_model("brain-tissue", device="cpu"), volume=volume)
    model = nu.load_model("brain-tissue", device="cpu")
    runs = []
    for _ in range(2):
        wall, cpu = time.perf_counter(), time.process_time()
        nu.predict(volume, model, device="cpu")
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    return {"mode": mode, "warm_up_seconds": warm, "first_wall": runs[0][0],
            "second_wall": runs[1][0], "first_cpu": runs[0][1], "second_cpu": runs[1][1]}


def run_child(mode: str, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--threads", str(threads)],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from napari_unet.devices import cpu_name  # the CPU by its model name
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="pairs of fresh processes")
    p.add_argument("--threads", type=int, default=2, help="torch threads in each process")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("-o", "--output", type=Path, default=RESULTS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.threads)))
        return
    load = os.getloadavg()
    rows = []
    for i in range(args.rounds):
        for mode in ("cold", "warmed"):
            r = run_child(mode, args.threads)
            r["round"] = i
            rows.append(r)
            print(f"{mode}: first {r['first_wall']:.2f} s ({r['first_cpu']:.2f} s CPU), "
                  f"second {r['second_wall']:.2f} s ({r['second_cpu']:.2f} s CPU)", flush=True)
    summary = {}
    for mode in ("cold", "warmed"):
        mine = [r for r in rows if r["mode"] == mode]
        summary[mode] = {
            "first_over_second_wall": statistics.median(r["first_wall"] / r["second_wall"]
                                                        for r in mine),
            "first_over_second_cpu": statistics.median(r["first_cpu"] / r["second_cpu"]
                                                       for r in mine)}
    summary["target"] = f"warmed first run <= {TARGET}x a later one"
    summary["ok"] = summary["warmed"]["first_over_second_wall"] <= TARGET
    result = {"benchmark": "first predict in a fresh process against the second",
              "scan": str(SAMPLE.relative_to(ROOT)), "model": "brain-tissue (all 3 planes)",
              "machine": {"cpu": cpu_name(),
                          "cores": os.cpu_count(), "threads": args.threads,
                          "load_average_start": [round(v, 2) for v in load],
                          "load_average_end": [round(v, 2) for v in os.getloadavg()]},
              "date": time.strftime("%Y-%m-%d"), "summary": summary, "runs": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
