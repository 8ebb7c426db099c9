"""``napari-unet info MODEL``: what a model file holds, in plain words."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="show a model's architecture, task and provenance",
                       description="Print a model's architecture, task, classes, "
                       "normalisation, provenance and content hash.")
    p.add_argument("model", help="bundled model name or model file")
    p.add_argument("--json", action="store_true", help="print the raw metadata as JSON")
    p.set_defaults(func=run)


def profile_words(profile) -> str:
    """The training intensity profile in a line: what quality scores compare scans with."""
    if profile is None:
        return ("not recorded (quality scores rest on the model's own uncertainty alone; "
                "retrain or fine-tune to record them)")
    from ..model.intensity_profile import LEVELS

    def at(q, level):
        return q[int(round(level * (len(LEVELS) - 1)))]

    parts = [f"{at(s.quantiles, 0.05):.2f} / {at(s.quantiles, 0.5):.2f} / "
             f"{at(s.quantiles, 0.95):.2f}" for s in profile.scans[:3]]
    more = f" (+{len(profile.scans) - 3} more)" if len(profile.scans) > 3 else ""
    n = sum(s.scans for s in profile.scans)
    text = (f"{n} training scan{'s' if n > 1 else ''}; normalised signal 5th / 50th / 95th "
            f"percentiles {', '.join(parts)}{more}; noise up to "
            f"{profile.noise_learned:.1%} of the range")
    if profile.noise_added is not None:
        lo, hi = profile.noise_added
        text += f"; learned to remove noise of {lo:.0%}..{hi:.0%} of the range"
    return text


def run(args) -> int:
    from ..model.checkpoint import load_model
    from .main import one_line as safe

    model = load_model(args.model, device="cpu")  # loading verifies every field and the hash
    meta = model.meta
    if args.json:  # JSON escapes control characters itself
        print(json.dumps(meta.to_dict(), indent=2))
        return 0
    a, n = meta.architecture, meta.normalization
    n_params = sum(p.numel() for p in model.net.parameters())
    lines = [  # text from the file goes through ``safe``: no escape sequences reach the terminal
        f"model:         {safe(meta.name)} ({safe(model.path)})",
        f"task:          {safe(meta.task.describe())}",
        f"architecture:  UNet in={a.in_channels} out={a.out_channels} base={a.base} "
        f"upsampling={a.upsampling} layout={a.variant} ({n_params:,} parameters)",
        f"normalisation: {n.kind} {n.lower:g}..{n.upper:g}" + (" clipped" if n.clip else ""),
        f"default axis:  array axis {meta.default_axis} (what --axis auto reads when a "
        "scan's spacing shows no acquisition plane)",
        f"patch size:    {meta.patch_size[0]} x {meta.patch_size[1]}",
        "pixel spacing: " + ("the scan's own (not resampled)" if meta.pixel_spacing is None
                             else " x ".join(f"{v:g}" for v in meta.pixel_spacing)
                             + " mm (slices are resampled to it)"),
        "slice context: " + (f"{meta.slice_context} neighbour slice(s) either side "
                             f"({2 * meta.slice_context + 1} slices in, the middle one out)"
                             if meta.slice_context else "none (2D: one slice in, one out)"),
        "planes:        " + ("all three, class probabilities averaged, each plane weighted by the "
                             "context its slices show (--planes auto)"
                             if meta.default_planes == "all" else "one (the --axis plane)"),
        f"intensities:   {profile_words(meta.intensity_profile)}",
        f"hash:          {meta.hash}",
    ]
    if meta.task.kind == "segment":
        lines[2:2] = ["classes:       " + ", ".join(
            f"{i}={safe(c)}" for i, c in enumerate(meta.task.class_names)),
            *_class_codes(meta, safe)]
    lines += [f"provenance:    {safe(k)}: {json.dumps(v)}" for k, v in meta.provenance.items()]
    print("\n".join(lines))
    return 0


def _class_codes(meta, safe) -> list[str]:
    """One line per class that gets a DICOM SEG segment: its coded concept and colour."""
    from ..io.class_codes import FALLBACK, class_codes_for_labels, class_color

    codes = class_codes_for_labels(meta.task.n_labels, meta.class_codes)
    out = []
    for i in range(1, meta.task.n_labels):
        code = codes[i]
        what = safe(code.describe()) if code else f"none ({FALLBACK.describe()} in a DICOM SEG)"
        color = "#{:02X}{:02X}{:02X}".format(*class_color(i, code))
        out.append(f"{'SEG segments:' if i == 1 else '':15}{i}={what}, colour {color}")
    return out
