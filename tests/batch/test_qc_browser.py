"""The batch QC page as a person sees it: opened in headless Chromium, not parsed as text.

A real batch (tiny model; three scans that work, one truncated file, one RT structure set)
writes ``index.html``; Chromium loads it from disk, a copy of the page with one added
script reports what the browser made of every picture (``complete`` and a natural width,
i.e. the PNG was found and decoded), and a screenshot shows that the styles rendered.

Chromium is Debian's ``chromium`` (``scripts/setup.sh`` installs it). Without it the test
is skipped locally and fails under CI (``CI=true``), so CI cannot pass without a browser.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from support.batch_data import (
    broken_nifti,
    dicom_series,
    nifti_scan,
    non_image_dicom,
    tiny_model,
)
from support.cli_run import load_report, run_cli

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
# appended to a copy of the page: after every picture has loaded (or failed), write what
# the browser knows about each one into the DOM, where --dump-dom shows it
PROBE = """<script>
window.addEventListener("load", () => {
  const seen = [...document.images].map(img => ({
    src: img.getAttribute("src"), complete: img.complete, width: img.naturalWidth,
    shown: img.getBoundingClientRect().width}));
  const cards = [...document.querySelectorAll(".card")].map(c => c.innerText);
  const wide = document.documentElement.scrollWidth > window.innerWidth;
  const out = document.createElement("pre");
  out.id = "qc-probe";
  out.textContent = JSON.stringify({images: seen, cards: cards, overflows: wide});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium is not installed but CI=true: scripts/setup.sh installs "
                    "Debian's chromium package for this test")
    pytest.skip("chromium is not installed (Debian: apt-get install chromium, or run "
                "scripts/setup.sh as root); the QC page test needs a real browser")


def run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("qc_browser")
    inputs = root / "in"
    nifti_scan(inputs / "scan_a.nii.gz", seed=1)
    nifti_scan(inputs / ("scan_b_" + "with_a_very_long_name_" * 4 + "x.nii.gz"), seed=2)
    dicom_series(inputs / "dicom", seed=4, number=3, description="T1 axial")
    broken_nifti(inputs / "broken.nii.gz")
    non_image_dicom(inputs / "dicom" / "structures.dcm")
    model = tiny_model(root / "seg.safetensors")
    code, log = run_cli("predict", inputs, "-o", root / "out", "--model", model, "--quiet")
    assert code == 1, log  # one scan failed
    return root / "out"


@pytest.mark.slow
def test_every_scan_is_listed_and_every_picture_loads_in_chromium(batch, tmp_path):
    report = load_report(batch)
    statuses = sorted(e["status"] for e in report["scans"])
    assert statuses == ["failed", "ok", "ok", "ok", "skipped"]
    page = (batch / "index.html").read_text()
    probed = batch / "index.probe.html"  # same folder: the pictures resolve as on the page
    probed.write_text(page.replace("</body>", PROBE + "</body>"))
    run = run_chromium(["--virtual-time-budget=10000", "--window-size=1024,768", "--dump-dom",
                        probed.as_uri()], tmp_path / "profile")
    found = re.search(r'<pre id="qc-probe">(.*?)</pre>', run.stdout, re.S)
    assert found, f"chromium gave no DOM (exit {run.returncode}): {run.stderr[-2000:]}"
    seen = json.loads(html.unescape(found.group(1)))

    cards = seen["cards"]
    assert len(cards) == len(report["scans"])
    for entry in report["scans"]:
        card = next((c for c in cards if entry["name"] in c), None)
        assert card is not None, f"{entry['name']} is not listed on the page"
        assert entry["status"] in card
        if entry["status"] == "failed":
            assert "cannot read" in card  # the reason is shown, not only the badge
    pictures = {e["qc"] for e in report["scans"] if e.get("qc")}
    assert len(pictures) == 3
    assert {img["src"] for img in seen["images"]} == pictures
    for img in seen["images"]:
        assert img["complete"] and img["width"] > 0, f"picture {img['src']} did not load"
        assert img["shown"] > 100, f"picture {img['src']} is drawn {img['shown']} px wide"
    assert not seen["overflows"], "the page is wider than a 1024 px window (long names?)"


@pytest.mark.slow
def test_screenshot_shows_the_page_rendered(batch, tmp_path):
    shot = tmp_path / "qc.png"
    run = run_chromium([f"--screenshot={shot}", "--window-size=1280,900",
                        (batch / "index.html").as_uri()], tmp_path / "profile")
    assert shot.exists(), f"no screenshot (exit {run.returncode}): {run.stderr[-2000:]}"
    import matplotlib.image as mpimg

    rgb = (mpimg.imread(shot)[..., :3] * 255).round().astype(int)
    assert rgb.shape[:2] == (900, 1280)

    def has(colour: str, at_least: int = 50) -> bool:
        target = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(rgb - target).sum(axis=-1) < 12).sum()) >= at_least

    # the status badges (styled spans) and the QC pictures were painted
    assert has("#c62828") and has("#2e7d32") and has("#757575"), "badges not rendered"
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 500, "the page looks blank"
    if os.environ.get("NAPARI_UNET_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["NAPARI_UNET_KEEP_SCREENSHOT"])
