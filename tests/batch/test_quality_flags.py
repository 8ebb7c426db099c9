"""A batch says which results to check: report.json carries each scan's quality score and
review flag with its reasons, index.html shows the flagged scans first, the console
counts them, and a resumed run keeps them."""

from __future__ import annotations

import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_unet.model.intensity_profile import profile_of
from support.cli_run import by_name, console, load_report, run_cli
from support.tiny_models import constant_model

UNLIKE = "unlike the scans this model learned from"


def _head(path: Path, core: float, ring: float, seed: int = 0) -> Path:
    """A head-like NIfTI: a bright core in a darker ring, air around (x, y, z)."""
    x, y, z = np.mgrid[:40, :40, :8].astype(np.float32)
    r2 = (y - 20) ** 2 + (x - 20) ** 2
    rng = np.random.default_rng(seed)
    data = np.where(r2 < 64, core, np.where(r2 < 250, ring, 0.0)) + rng.normal(0, 10, r2.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), str(path))
    return path


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """A confident model trained (as its profile says) on one head; a folder with that
    head and two others: one of the same contrast, one with the contrast reversed; run
    twice (the second run resumes: all skipped)."""
    root = tmp_path_factory.mktemp("quality")
    path, inputs = _model_and_inputs(root)
    out = root / "out"
    return {"out": out, "first": run_cli("predict", inputs, "-o", out, "--model", path),
            "second": run_cli("predict", inputs, "-o", out, "--model", path)}


def _model_and_inputs(root: Path) -> tuple[Path, Path]:
    from napari_unet.io import read_volume

    trained = _head(root / "train" / "trained.nii.gz", 900.0, 600.0)
    model = constant_model(0.99)
    vol = read_volume(trained)
    model.meta = replace(model.meta, intensity_profile=profile_of(
        [vol.array], model.meta.normalization))
    path = model.save(root / "model.safetensors")
    inputs = root / "in"
    _head(inputs / "alike.nii.gz", 950.0, 630.0, seed=1)
    _head(inputs / "reversed.nii.gz", 300.0, 900.0, seed=2)
    _head(inputs / "same.nii.gz", 900.0, 600.0, seed=3)
    return path, inputs


def test_report_carries_score_flag_and_reason_per_scan(batch):
    code, log = batch["first"]
    assert code == 0, log
    report = load_report(batch["out"])
    scans = by_name(report)
    assert report["to_review"] == 1
    flagged = scans["reversed"]
    assert flagged["review"] is True and flagged["score"] == 0.0
    assert len(flagged["review_reasons"]) == 1 and flagged["review_reasons"][0].startswith(UNLIKE)
    assert flagged["quality"]["intensity_distance"] > 0.2
    for name in ("alike", "same"):
        assert scans[name]["review"] is False and scans[name]["review_reasons"] == []
        assert scans[name]["score"] == pytest.approx(2 * 0.99 / 1.99, abs=2e-3)


class _Cards(HTMLParser):
    """The scan names of index.html's cards in page order, and each card's text."""

    def __init__(self):
        super().__init__()
        self.cards, self._depth = [], 0

    def handle_starttag(self, tag, attrs):
        if tag == "div" and ("class", "card") in attrs:
            self.cards.append({"name": None, "text": ""})
            self._depth = 1
        elif tag == "div" and self._depth:
            self._depth += 1
        self._bold = tag == "b"

    def handle_endtag(self, tag):
        if tag == "div" and self._depth:
            self._depth -= 1
        self._bold = False

    def handle_data(self, data):
        if self._depth:
            self.cards[-1]["text"] += data
            if getattr(self, "_bold", False) and self.cards[-1]["name"] is None:
                self.cards[-1]["name"] = data


def _cards(out: Path) -> list[dict]:
    parser = _Cards()
    parser.feed((out / "index.html").read_text())
    return parser.cards


def test_index_lists_flagged_scans_first_with_the_reason_in_plain_words(batch):
    cards = _cards(batch["out"])
    assert [c["name"] for c in cards] == ["reversed", "alike", "same"]
    assert f"review: {UNLIKE}" in cards[0]["text"] and "quality 0.00" in cards[0]["text"]
    assert "review" not in cards[1]["text"] and "quality 0.99" in cards[1]["text"]
    head = (batch["out"] / "index.html").read_text().split('<div class="grid">')[0]
    assert re.search(r">review</span> 1 to review", head)


def test_the_summary_counts_the_scans_to_review_and_names_them(batch):
    log = batch["first"][1]
    assert "3 ok, 0 failed, 0 skipped; 1 to review (quality score below 0.90" in log
    assert f"review: reversed: quality 0.00: {UNLIKE}" in log
    assert "review: alike" not in log and "review: same" not in log


@pytest.mark.slow
def test_the_installed_command_counts_them_too(tmp_path):
    path, inputs = _model_and_inputs(tmp_path)
    proc = console("predict", inputs, "-o", tmp_path / "out", "--model", path)
    assert proc.returncode == 0, proc.stderr
    assert "3 ok, 0 failed, 0 skipped; 1 to review (quality score below 0.90" in proc.stderr
    assert f"review: reversed: quality 0.00: {UNLIKE}" in proc.stderr


def test_a_resumed_run_keeps_the_flags(batch):
    code, log = batch["second"]
    assert code == 0, log
    assert "0 ok, 0 failed, 3 skipped; 1 to review" in log
    report = load_report(batch["out"])
    assert report["to_review"] == 1 and by_name(report)["reversed"]["review"] is True
    assert [c["name"] for c in _cards(batch["out"])][0] == "reversed"


def test_a_tampered_quality_record_is_not_shown(tmp_path):
    """A manifest is a file on disk: a quality record that is not what we write (a score
    that is no number) leaves the entry without one, rather than breaking the page."""
    from napari_unet.batch.qc import index_page
    from napari_unet.batch.report import entry

    class Scan:
        input, name, notes = None, "x", ()

    bad = entry(Scan(), "skipped", quality={"score": "<script>", "review": True,
                                            "reasons": []})
    assert bad["quality"] is None and bad["review"] is False and bad["score"] is None
    assert "<script>" not in index_page({"scans": [bad]})


def test_help_states_the_documented_threshold():
    from napari_unet.cli.predict import EPILOG
    from napari_unet.inference.quality import REVIEW_BELOW

    assert f"below {REVIEW_BELOW:.2f} it is flagged for review" in EPILOG
