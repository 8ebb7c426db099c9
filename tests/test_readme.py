"""The README is a door: every shell and Python example in it runs, read from the README.

The blocks are parsed from ``README.md`` when the tests are collected, so the text cannot
drift from the code. They run in order, in one temporary working directory that looks
like a fresh checkout after ``scripts/setup.sh`` (links to ``sample_data/``, ``scripts/``
and ``.venv/``; everything a block writes lands there), with the installed ``napari-unet``
console script first on ``PATH``.

What the test changes, and why:

- Training budgets are cut to a few seconds: ``--time-budget N`` / ``--iterations N`` in
  shell blocks and ``time_budget=N`` / ``iterations=N`` in Python blocks become
  :data:`SHORT_SECONDS` / :data:`SHORT_ITERATIONS` (the README shows budgets that give a
  useful model; the test checks that the commands work).
- A line that runs ``scripts/test.sh`` is dropped: that is the suite this test belongs to
  (CI runs it as ``.ci/run``).
- A block preceded by ``<!-- readme-test: skip: REASON -->`` is not run; the test lists it
  as skipped with its reason (installing packages, a Dask cluster on remote hosts, long
  benchmarks). A marker without a reason, or with no block after it, fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
SHELL = {"bash", "sh", "shell", "console"}
PYTHON = {"python", "py", "python3"}
SHORT_SECONDS = 3
SHORT_ITERATIONS = 3
BLOCK_TIMEOUT = 600  # seconds: a block that hangs fails instead of stalling CI
MARKER = re.compile(r"<!--\s*readme-test:\s*(?P<what>\w+)\s*:?\s*(?P<why>.*?)\s*-->", re.S)
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
CHECKOUT = ("sample_data", "scripts", ".venv")


@dataclass
class Block:
    """One fenced code block of the README."""

    lang: str
    code: str
    line: int  # of the opening fence, 1-based
    heading: str
    skip: str | None = None  # why it is not run (from a marker comment before it)

    @property
    def kind(self) -> str | None:
        return "shell" if self.lang in SHELL else "python" if self.lang in PYTHON else None

    def label(self) -> str:
        return f"README.md line {self.line} (```{self.lang} under {self.heading!r})"


class ReadmeError(ValueError):
    """The README cannot be parsed into blocks (an unclosed fence, a stray marker)."""


def parse_blocks(text: str) -> list[Block]:
    """Fenced blocks in order, with their section heading and skip marker, if any."""
    blocks, heading, marker = [], "(top)", None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if fence:
            block, i = _read_block(lines, i, fence, heading, marker)
            blocks.append(block)
            marker = None
            continue
        found = MARKER.search(line) if "readme-test" in line else None
        if found:
            marker = _marker(found, i + 1, marker)
        elif line.strip() and marker is not None and not line.lstrip().startswith("<!--"):
            raise ReadmeError(f"README.md line {marker[1]}: a readme-test marker must come "
                              f"right before a fenced code block")
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        i += 1
    if marker is not None:
        raise ReadmeError(f"README.md line {marker[1]}: a readme-test marker with no block")
    return blocks


def _marker(found: re.Match, line: int, pending) -> tuple[str, int]:
    if pending is not None:
        raise ReadmeError(f"README.md line {pending[1]}: two readme-test markers in a row")
    if found["what"] != "skip":
        raise ReadmeError(f"README.md line {line}: unknown readme-test marker "
                          f"{found['what']!r}; the only one is 'skip: REASON'")
    if not found["why"]:
        raise ReadmeError(f"README.md line {line}: say why the block is not run "
                          f"(<!-- readme-test: skip: REASON -->)")
    return found["why"], line


def _read_block(lines: list[str], start: int, fence: re.Match, heading: str, marker):
    indent, mark = len(fence["indent"]), fence["fence"]
    lang = (fence["info"].split() or [""])[0].lower()
    body = []
    for j in range(start + 1, len(lines)):
        if lines[j].strip().startswith(mark[0] * len(mark)) and not lines[j].strip(
                ).strip(mark[0]):
            code = "\n".join(_dedent(x, indent) for x in body)
            return Block(lang, code + "\n", start + 1, heading,
                         marker[0] if marker else None), j + 1
        body.append(lines[j])
    raise ReadmeError(f"README.md line {start + 1}: the {mark} block under {heading!r} "
                      f"is never closed")


def _dedent(line: str, indent: int) -> str:
    """Drop the fence's indentation (a block inside a list item), and no more."""
    lead = len(line) - len(line.lstrip(" \t"))
    return line[min(lead, indent):]


def shortened(block: Block) -> str:
    """The block's code as the test runs it (short training budgets, no test.sh)."""
    code = block.code
    if block.kind == "shell":
        code = re.sub(r"--time-budget[ =]\d+(\.\d+)?", f"--time-budget {SHORT_SECONDS}", code)
        code = re.sub(r"--iterations[ =]\d+", f"--iterations {SHORT_ITERATIONS}", code)
        code = "\n".join(ln for ln in _joined(code) if "scripts/test.sh" not in ln) + "\n"
    else:
        code = re.sub(r"\btime_budget\s*=\s*\d+(\.\d+)?", f"time_budget={SHORT_SECONDS}",
                      code)
        code = re.sub(r"\biterations\s*=\s*\d+", f"iterations={SHORT_ITERATIONS}", code)
    return code


def _joined(code: str) -> list[str]:
    """Shell lines with backslash continuations joined, so a dropped command goes whole."""
    return code.replace("\\\n", " ").splitlines()


def _blocks_or_error() -> list[Block]:
    try:
        return [b for b in parse_blocks(README.read_text(encoding="utf-8")) if b.kind]
    except (OSError, ReadmeError) as exc:
        return [Block("error", str(exc), 0, "(parse)")]


BLOCKS = _blocks_or_error()


def _bin_dir() -> Path:
    venv = ROOT / ".venv" / "bin"
    return venv if (venv / "napari-unet").exists() else Path(sys.executable).parent


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A fresh directory that looks like the checkout after set-up; outputs stay here."""
    work = tmp_path_factory.mktemp("readme")
    for name in CHECKOUT:
        if (ROOT / name).exists():
            (work / name).symlink_to(ROOT / name, target_is_directory=True)
    return work


def _env(bin_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["MPLBACKEND"] = "Agg"
    env.pop("PYTHONPATH", None)  # what a user has: the installed package, nothing else
    return env


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{b.line}-{b.lang}" for b in BLOCKS])
def test_readme_block_runs(block: Block, workdir: Path):
    if block.lang == "error":
        pytest.fail(block.code)
    if block.skip:
        pytest.skip(f"{block.label()} is marked not to run: {block.skip}")
    bin_dir = _bin_dir()
    assert (bin_dir / "napari-unet").exists(), (
        f"no napari-unet console script in {bin_dir}: run scripts/setup.sh")
    code = shortened(block)
    if block.kind == "shell":
        cmd = ["bash", "-e", "-o", "pipefail", "-c", code]
    else:
        script = workdir / f"readme_line{block.line}.py"
        script.write_text(code)
        cmd = [str(bin_dir / "python"), str(script)]
    try:
        run = subprocess.run(cmd, cwd=workdir, env=_env(bin_dir), capture_output=True,
                             text=True, timeout=BLOCK_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.label()} ran past {BLOCK_TIMEOUT} s; shorten it or mark it "
                    f"<!-- readme-test: skip: REASON -->\n{code}")
    assert run.returncode == 0, (
        f"{block.label()} failed with exit code {run.returncode}\n--- as run:\n{code}"
        f"--- output (end):\n{(run.stdout + run.stderr)[-4000:]}")


def test_parser_finds_blocks_headings_markers_and_indented_fences():
    text = "\n".join([
        "# Title", "", "```bash", "for f in a b; do", "  echo $f", "done", "```", "## Use",
        "- item:", "",
        "  ```python", "  x = 1", "  if x:", "      print(x)", "  ```", "",
        "<!-- readme-test: skip: needs a cluster -->", "```sh", "dask worker tcp://HOST",
        "```", "```", "napari-unet predict INPUT...", "```", "~~~json", "{}", "~~~"])
    blocks = parse_blocks(text)
    assert [(b.lang, b.line, b.heading, b.skip) for b in blocks] == [
        ("bash", 3, "Title", None), ("python", 11, "Use", None),
        ("sh", 18, "Use", "needs a cluster"), ("", 21, "Use", None), ("json", 24, "Use", None)]
    assert blocks[0].code == "for f in a b; do\n  echo $f\ndone\n"
    assert blocks[1].code == "x = 1\nif x:\n    print(x)\n"
    assert [b.kind for b in blocks] == ["shell", "python", "shell", None, None]


@pytest.mark.parametrize("text, message", [
    ("```bash\necho never closed\n", "line 1: the ``` block under '(top)' is never closed"),
    ("<!-- readme-test: skip -->\n```bash\nx\n```\n", "say why"),
    ("<!-- readme-test: skip: why -->\nsome prose\n```bash\nx\n```\n", "right before"),
    ("<!-- readme-test: run: why -->\n```bash\nx\n```\n", "unknown readme-test marker"),
    ("text\n<!-- readme-test: skip: why -->\n", "with no block"),
])
def test_parser_errors_name_the_line(text, message):
    with pytest.raises(ReadmeError, match=re.escape(message)):
        parse_blocks(text)


def test_budgets_are_shortened_and_the_test_suite_is_not_rerun():
    shell = Block("bash", "bash scripts/run_sample.sh\nbash scripts/test.sh   # all\n"
                  "napari-unet train --images a \\\n    --time-budget 300 -o m\n"
                  "napari-unet train --iterations=400 -o d\n", 1, "x")
    assert shortened(shell) == ("bash scripts/run_sample.sh\n"
                                f"napari-unet train --images a      --time-budget "
                                f"{SHORT_SECONDS} -o m\n"
                                f"napari-unet train --iterations {SHORT_ITERATIONS} -o d\n")
    py = Block("python", "nu.train(x, time_budget=300.5)\nnu.train(x, iterations = 40)\n", 1,
               "x")
    assert shortened(py) == (f"nu.train(x, time_budget={SHORT_SECONDS})\n"
                             f"nu.train(x, iterations={SHORT_ITERATIONS})\n")


def test_the_readme_has_runnable_examples_of_both_kinds():
    assert BLOCKS and BLOCKS[0].lang != "error", BLOCKS[0].code if BLOCKS else "no blocks"
    runnable = [b for b in BLOCKS if not b.skip]
    assert {b.kind for b in runnable} == {"shell", "python"}
    assert any("napari-unet predict" in b.code for b in runnable)
