"""docs/security.md names, for every promise, the tests that keep it: each named test file and
test function must exist, so a renamed or deleted test cannot leave a promise unguarded."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "security.md"


def named_tests() -> list[tuple[str, str | None]]:
    """(test file, function or None) for every `tests/...py[::name]` and following `::name`."""
    found = []
    for line in DOC.read_text("utf-8").splitlines():
        current = None
        for ref in re.findall(r"`(tests/[\w/]+\.py(?:::\w+)?|::\w+)`", line):
            if ref.startswith("::"):
                assert current, f"{ref} follows no test file on: {line[:80]}"
                found.append((current, ref[2:]))
                continue
            current, _, func = ref.partition("::")
            found.append((current, func or None))
    return found


def test_the_threat_model_names_tests():
    assert len(named_tests()) >= 30


def test_every_named_test_exists():
    missing = []
    for path, func in named_tests():
        file = ROOT / path
        if not file.is_file():
            missing.append(path)
        elif func and not re.search(rf"^(async )?def {func}\b", file.read_text("utf-8"), re.M):
            missing.append(f"{path}::{func}")
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"
