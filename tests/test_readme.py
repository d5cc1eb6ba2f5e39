"""The README and the docs/ pages as tutorials that run.

Every block opened with ```python example or ```sh example in README.md or docs/*.md is a
complete program. A page's blocks run in order, each in a fresh interpreter (python) or bash
(sh), in one scratch directory per page (a later block reads what an earlier one wrote), on
real MNIST from $TAUGATE_DATA, with `taugate` and `python` on PATH meaning this checkout. The
only change made to them is the data size (``SMALL``); a test fails when a substitution no
longer finds its text, so it cannot go stale. The README also stays a first screen.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(python|sh) example\n(.*?)^```", re.DOTALL | re.MULTILINE)
README_MAX_LINES = 300

# language -> (text in the block, what the test runs instead): smaller data, nothing else.
SMALL = {
    "python": [("DataConfig()", "DataConfig(limit_train=3000, limit_test=500, calibration_size=500)")],
    "sh": [("taugate train ", "taugate train --limit-train 3000 --limit-test 500 --calibration-size 500 ")],
}
# (page, text in the block, strings its output must contain)
EXPECTED = [
    ("README.md", "ModeRuntime.open", ["['north', 'south']", "(4, 4)"]),
    ("python-api.md", "rt.run(", ["['rot0', 'rot45', 'rot-30']", "'angle': 45", "(8, 10)"]),
    ("python-api.md", "taugate.train(data", ["rot-30: units", "dense frozen"]),
    ("operating.md", "models/east/load", ["'outcome': 'loaded'", "\n404\n", "\n3 3\n",
                                          'taugate_inference_requests_total{mode="east"} 1']),
    ("python-api.md", "resolve_targets", ["[('0', '2', 32), ('2', '4', 32)]"]),
]


def examples(page: Path) -> list[tuple[str, str]]:
    """The (language, code) of every example block of ``page``, in order."""
    return BLOCK.findall(page.read_text("utf-8"))


CASES = [(page, i) for page in PAGES for i in range(len(examples(page)))]


def small(lang: str, code: str) -> str:
    for old, new in SMALL[lang]:
        code = code.replace(old, new)
    return code


def test_pages_have_examples():
    names = {page.name for page, _ in CASES}
    assert {"README.md", "python-api.md"} <= names
    langs = {lang for page in PAGES for lang, _ in examples(page)}
    assert langs == {"python", "sh"}
    assert any("taugate.train(" in code for _, code in examples(ROOT / "README.md"))


def test_every_substitution_applies():
    blocks = [ex for page in PAGES for ex in examples(page)]
    for lang, pairs in SMALL.items():
        for old, _ in pairs:
            assert any(old in code for la, code in blocks if la == lang), \
                f"no {lang} example contains {old!r}: update SMALL in {Path(__file__).name}"


def test_every_expected_output_has_its_block():
    for name, marker, _ in EXPECTED:
        assert any(marker in code for _, code in examples(ROOT / ("README.md" if name == "README.md" else f"docs/{name}"))), \
            f"no example of {name} contains {marker!r}: update EXPECTED in {Path(__file__).name}"


def test_readme_fits_a_first_screen():
    lines = (ROOT / "README.md").read_text("utf-8").count("\n")
    assert lines <= README_MAX_LINES, (f"README.md has {lines} lines, at most {README_MAX_LINES}: "
                                       "move details into a docs/ page and link it")


def test_readme_keeps_the_demo_markers():
    text = (ROOT / "README.md").read_text("utf-8")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from readme_demo import END, START
    finally:
        sys.path.pop(0)
    assert text.count(START) == 1 and text.count(END) == 1 and text.index(START) < text.index(END)


@pytest.fixture(scope="session")
def runner(data_root, tmp_path_factory):
    """Runs a page's blocks in order in the page's own scratch directory, each at most once."""
    shims = tmp_path_factory.mktemp("bin")
    for name, target in (("taugate", f'"{sys.executable}" -m taugate.cli'), ("python", f'"{sys.executable}"')):
        (shims / name).write_text(f'#!/bin/sh\nexec {target} "$@"\n')
        (shims / name).chmod(0o755)
    env = {**os.environ, "TAUGATE_DATA": data_root, "MPLBACKEND": "Agg",
           "PATH": str(shims) + os.pathsep + os.environ.get("PATH", ""),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done: dict[Path, list[str]] = {}  # page -> stdout of each block run so far
    dirs: dict[Path, Path] = {}

    def run(page: Path, index: int) -> str:
        outs = done.setdefault(page, [])
        cwd = dirs.setdefault(page, tmp_path_factory.mktemp(page.stem))
        blocks = examples(page)
        while len(outs) <= index:
            i = len(outs)
            lang, code = blocks[i]
            code = small(lang, code)
            argv = [sys.executable, "-c", code] if lang == "python" else ["bash", "-euo", "pipefail", "-c", code]
            proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False,
                                  timeout=600)
            if proc.returncode != 0:
                pytest.fail(f"{page.relative_to(ROOT)} example {i + 1} ({lang}) failed with status "
                            f"{proc.returncode}:\n{code}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
            outs.append(proc.stdout)
        return outs[index]

    return run


@pytest.mark.slow
@pytest.mark.parametrize(("page", "index"), CASES, ids=[f"{p.name}-{i + 1}" for p, i in CASES])
def test_example_runs(runner, page, index):
    out = runner(page, index)
    _, code = examples(page)[index]
    for name, marker, wanted in EXPECTED:
        if page.name == name and marker in code:
            for text in wanted:
                assert text in out, f"{page.name} example {index + 1} printed:\n{out}\nexpected {text!r} in it"
