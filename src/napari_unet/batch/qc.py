"""Quality control at a glance: one PNG per scan and an ``index.html`` over the batch.

Segmentation: three orthogonal mid-slices with the labels overlaid. Denoising: the same
three planes, input above and output below, on one intensity window. Rendered with
matplotlib's Agg canvas (no display, safe in worker processes and threads).
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np

QC_DIR = "qc"
INDEX_NAME = "index.html"
_STATUS_COLOURS = {"ok": "#2e7d32", "failed": "#c62828", "skipped": "#757575",
                   "review": "#e65100"}


def mid_slices(array: np.ndarray) -> list[np.ndarray]:
    """The three orthogonal planes through the centre (first channel if any)."""
    if array.ndim == 4:
        array = array[..., 0]
    z, y, x = (n // 2 for n in array.shape[:3])
    return [array[z], array[:, y, :], array[:, :, x]]


def _aspects(spacing) -> list[float]:
    s0, s1, s2 = spacing
    return [s1 / s2, s0 / s2, s0 / s1]


def _window(array: np.ndarray) -> tuple[float, float]:
    sample = array[:: max(1, array.shape[0] // 16)].astype(np.float32)
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1)


def render_qc(image: np.ndarray, result: np.ndarray, spacing, kind: str, path: str | os.PathLike,
              title: str = "", n_labels: int = 2) -> Path:
    """Write the QC picture of one scan to ``path`` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = 2 if kind == "denoise" else 1
    fig = Figure(figsize=(9, 3.2 * rows), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 3, squeeze=False)
    lo, hi = _window(image)
    planes, aspects = mid_slices(image), _aspects(spacing)
    outs = mid_slices(result)
    for col, (plane, out, aspect) in enumerate(zip(planes, outs, aspects, strict=True)):
        origin = "upper" if col == 0 else "lower"
        axes[0, col].imshow(plane, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, origin=origin)
        if kind == "denoise":
            axes[1, col].imshow(out, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, origin=origin)
        else:
            _overlay(axes[0, col], out, n_labels, aspect, origin)
    for ax in axes.flat:
        ax.set_axis_off()
    if kind == "denoise":
        axes[0, 0].set_title("input", loc="left", fontsize=9)
        axes[1, 0].set_title("denoised", loc="left", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)


def _overlay(ax, labels: np.ndarray, n_labels: int, aspect: float, origin: str) -> None:
    masked = np.ma.masked_equal(labels.astype(np.int32), 0)
    ax.imshow(masked, cmap="tab10", vmin=0, vmax=max(9, n_labels - 1), alpha=0.45,
              aspect=aspect, origin=origin, interpolation="nearest")


def page_order(e: dict) -> tuple:
    """Where a scan goes on the page: results flagged for review first (least trusted
    first), then failed scans, then the rest (skipped, ok), each in report order."""
    status = {"failed": 1, "skipped": 2, "ok": 2}.get(e.get("status"), 3)
    if e.get("review"):
        score = e.get("score")
        return (0, score if isinstance(score, (int, float)) else -1.0)
    return (status, 0.0)


def index_page(report: dict) -> str:
    """The text of ``OUTDIR/index.html``: every scan's picture, status, error and quality
    score, the scans to review first with the reasons in plain words, then failed ones;
    then scans of earlier runs whose outputs are still in the folder. Scans are named by
    their patient-free names only (the page never shows input paths)."""
    order = {"failed": 0, "skipped": 1, "ok": 2}
    scans = sorted(report["scans"], key=page_order)
    counts = report.get("counts", {})
    model = report.get("model", {})
    flagged = sum(1 for e in report["scans"] if e.get("review"))
    head = (f"<h1>napari-unet batch</h1><p>model <b>{_e(model.get('name'))}</b> "
            f"<code>{_e(str(model.get('hash', ''))[:19])}</code> &middot; "
            + " &middot; ".join(f"{_badge(s)} {counts.get(s, 0)}" for s in order)
            + f" &middot; {_badge('review')} {flagged} to review"
            + f" &middot; {len(report['scans'])} of {report.get('total', '?')} scans"
            + ("" if report.get("finished") else " (running or interrupted)") + "</p>")
    head += "".join(f'<p class="err">{_e(w)}</p>' for w in report.get("write_errors", []))
    cards = "\n".join(_card(e) for e in scans)
    earlier = report.get("earlier_scans") or []
    if earlier:
        cards += (f'</div><h2>from earlier runs into this folder ({len(earlier)})</h2>'
                  '<div class="grid">' + "\n".join(_card(e) for e in earlier))
    return _PAGE.format(head=head, cards=cards)


def _card(e: dict) -> str:
    pic = (f'<a href="{_e(e["qc"])}"><img src="{_e(e["qc"])}" alt="QC of {_e(e["name"])}"></a>'
           if e.get("qc") else '<div class="nopic">no picture</div>')
    outs = " ".join(f'<a href="{_e(o)}">{_e(Path(o).name)}</a>' for o in e.get("outputs", []))
    err = f'<p class="err">{_e(e["error"])}</p>' if e.get("error") else ""
    if e.get("review"):
        err += "".join(f'<p class="review">review: {_e(r)}</p>'
                       for r in e.get("review_reasons") or ["quality score below the "
                                                           "threshold"])
    if e.get("reason"):
        err += f'<p class="why">{_e(e["reason"])}</p>'
    if e.get("warnings"):
        err += "".join(f'<p class="warn">{_e(w)}</p>' for w in e["warnings"])
    flag = f' {_badge("review")}' if e.get("review") else ""
    return (f'<div class="card">{pic}<p>{_badge(e["status"])}{flag} <b>{_e(e["name"])}</b> '
            f'<span class="t">{e.get("seconds", 0):.1f} s{_score(e)}</span></p>{err}'
            f'<p class="outs">{outs}</p></div>')


def _score(e: dict) -> str:
    score = e.get("score")
    return f" &middot; quality {score:.2f}" if isinstance(score, (int, float)) else ""


def _badge(status: str) -> str:
    colour = _STATUS_COLOURS.get(status, "#555")
    return f'<span class="badge" style="background:{colour}">{_e(status)}</span>'


def _e(text) -> str:
    return html.escape(str(text if text is not None else ""))


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>napari-unet batch QC</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; background: #fafafa; color: #222; }}
h1 {{ font-size: 1.3em; margin: 0 0 .3em; }}
h2 {{ font-size: 1.1em; margin: 1em 0 .3em; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr));
         gap: 12px; }}
.card {{ background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 8px; }}
.card img {{ width: 100%; }}
.card p {{ margin: .3em 0; font-size: .9em; overflow-wrap: anywhere; }}
.badge {{ color: #fff; border-radius: 4px; padding: 1px 6px; font-size: .85em; }}
.err {{ color: #c62828; font-family: monospace; }}
.t {{ color: #777; }}
.why {{ color: #666; }}
.warn {{ color: #b26a00; }}
.review {{ color: #e65100; font-weight: bold; }}
.outs a {{ margin-right: .6em; }}
.nopic {{ height: 120px; display: flex; align-items: center; justify-content: center;
          color: #999; background: #f0f0f0; }}
</style></head>
<body>{head}
<div class="grid">
{cards}
</div></body></html>
"""
