"""Two text domains that ship with Python, as bytes: ``code`` and ``prose``.

``code``: the standard library's own ``.py`` sources (the files under sysconfig's ``stdlib``
path, sorted by relative path, without test folders nor installed packages), taken whole
until a byte cap. ``prose``: the documentation topics of ``pydoc_data.topics`` (the text
``help()`` shows), sorted by topic name. Both differ between Python versions, so
:func:`python_tag` is recorded beside anything trained on them.

Split: each document (file or topic) goes to held-out when the crc32 of its name falls in
the lowest tenth, so the split does not depend on the cap nor on the order of reading.
"""

from __future__ import annotations

import sys
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DOMAINS = ("code", "prose")
#: the default caps on each domain's bytes (train + held-out together)
DEFAULT_CAP = {"code": 4_000_000, "prose": 1_000_000}
HELD_OUT_PER_MILLE = 100
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
SEPARATOR = b"\n\n"


@dataclass(frozen=True)
class Domain:
    """One domain's bytes: ``train`` and ``held_out``, uint8 arrays (a token per byte)."""

    name: str
    train: np.ndarray
    held_out: np.ndarray
    documents: int

    def summary(self) -> dict:
        return {"train_bytes": int(self.train.size), "held_out_bytes": int(self.held_out.size),
                "documents": self.documents}


def python_tag() -> str:
    """Which Python produced the corpus (the stdlib and its topics change between versions)."""
    return f"{sys.implementation.name} {sys.version.split()[0]}"


def held_out(name: str) -> bool:
    return zlib.crc32(name.encode("utf-8")) % 1000 < HELD_OUT_PER_MILLE


def code_documents(root: str | Path | None = None) -> list[tuple[str, bytes]]:
    """``(relative path, source bytes)`` of the stdlib's modules, sorted by path."""
    base = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    if not base.is_dir():
        raise FileNotFoundError(f"stdlib folder {base} not found (expected sysconfig's 'stdlib')")
    files = sorted((f.relative_to(base).as_posix(), f) for f in base.rglob("*.py")
                   if not _SKIP_DIRS & set(f.relative_to(base).parts[:-1]))
    return [(rel, f.read_bytes()) for rel, f in files]


def prose_documents() -> list[tuple[str, bytes]]:
    """``(topic, text bytes)`` of ``pydoc_data.topics``, sorted by topic."""
    from pydoc_data.topics import topics

    return [(k, topics[k].encode("utf-8")) for k in sorted(topics)]


def _documents(name: str) -> list[tuple[str, bytes]]:
    if name == "code":
        return code_documents()
    if name == "prose":
        return prose_documents()
    raise ValueError(f"domain {name!r}: expected one of {', '.join(DOMAINS)}")


def load_domain(name: str, cap: int | None = None) -> Domain:
    """Domain ``name``'s train / held-out bytes; whole documents, in order, up to ``cap`` bytes
    (default :data:`DEFAULT_CAP`); at least one document on each side."""
    cap = DEFAULT_CAP.get(name, 0) if cap is None else int(cap)
    docs = _documents(name)
    if cap < 1:
        raise ValueError(f"cap: expected a positive number of bytes, got {cap}")
    parts: dict[bool, list[bytes]] = {True: [], False: []}
    total = count = 0
    for doc_name, data in docs:
        if total >= cap and parts[True] and parts[False]:
            break
        parts[held_out(doc_name)].append(data[: max(cap - total, 0)] or data[:4096])
        total += len(parts[held_out(doc_name)][-1]) + len(SEPARATOR)
        count += 1
    if not parts[True] or not parts[False]:
        raise ValueError(f"domain {name!r}: too few documents ({len(docs)}) for a split")

    def join(chunks):
        return np.frombuffer(SEPARATOR.join(chunks), dtype=np.uint8).copy()

    return Domain(name, join(parts[False]), join(parts[True]), count)


def load_corpus(caps: dict[str, int] | None = None) -> dict[str, Domain]:
    """Both domains (``caps``: bytes per domain, default :data:`DEFAULT_CAP`)."""
    caps = caps or {}
    unknown = set(caps) - set(DOMAINS)
    if unknown:
        raise ValueError(f"caps: unknown domain(s) {sorted(unknown)}; valid: {', '.join(DOMAINS)}")
    return {name: load_domain(name, caps.get(name)) for name in DOMAINS}
