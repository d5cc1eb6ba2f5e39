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

import hashlib
import os
import sys
import sysconfig
import zlib
from collections.abc import Iterator
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
                "documents": self.documents, "train_sha256": fingerprint(self.train)}


def python_tag() -> str:
    """Which Python produced the corpus (the stdlib and its topics change between versions)."""
    return f"{sys.implementation.name} {sys.version.split()[0]}"


def fingerprint(tokens: np.ndarray) -> str:
    """A short sha256 of token bytes: what a resumed stage checks it trains on the same data."""
    return hashlib.sha256(np.ascontiguousarray(tokens, np.uint8).tobytes()).hexdigest()[:16]


def held_out(name: str) -> bool:
    return zlib.crc32(name.encode("utf-8")) % 1000 < HELD_OUT_PER_MILLE


def code_documents(root: str | Path | None = None) -> Iterator[tuple[str, bytes]]:
    """``(relative path, source bytes)`` of the stdlib's modules, sorted by path (read lazily:
    a capped domain reads only what it keeps)."""
    base = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    if not base.is_dir():
        raise FileNotFoundError(f"stdlib folder {base.name!r} not found (expected sysconfig's "
                                f"'stdlib' path to be a folder)")
    files = []
    for folder, dirs, names in os.walk(base):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]  # not even walked: test/ is large
        rel = Path(folder).relative_to(base)
        files += [(rel / n).as_posix() for n in names if n.endswith(".py")]
    for rel in sorted(files):
        yield rel, (base / rel).read_bytes()


def prose_documents() -> Iterator[tuple[str, bytes]]:
    """``(topic, text bytes)`` of ``pydoc_data.topics``, sorted by topic."""
    from pydoc_data.topics import topics

    for k in sorted(topics):
        yield k, topics[k].encode("utf-8")


def _documents(name: str) -> Iterator[tuple[str, bytes]]:
    if name == "code":
        return code_documents()
    if name == "prose":
        return prose_documents()
    raise ValueError(f"domain {name!r}: expected one of {', '.join(DOMAINS)}")


def load_domain(name: str, cap: int | None = None, root: str | Path | None = None) -> Domain:
    """Domain ``name``'s train / held-out bytes; whole documents, in order, up to ``cap`` bytes
    (default :data:`DEFAULT_CAP`; the last one cut at the cap); at least one document on each
    side. ``root``: another folder of ``.py`` files for ``code`` (tests)."""
    if name not in DOMAINS:
        raise ValueError(f"domain {name!r}: expected one of {', '.join(DOMAINS)}")
    cap = DEFAULT_CAP.get(name, 0) if cap is None else int(cap)
    if cap < 1:
        raise ValueError(f"cap: expected a positive number of bytes, got {cap}")
    docs = _documents(name) if root is None else code_documents(root)
    parts: dict[bool, list[bytes]] = {True: [], False: []}
    total = count = 0
    for doc_name, data in docs:
        if total >= cap and parts[True] and parts[False]:
            break
        side = held_out(doc_name)
        if total >= cap and parts[side]:
            continue  # past the cap only the empty side takes a (shortened) first document
        piece = data[: max(cap - total, 4096)]
        parts[side].append(piece)
        total += len(piece) + len(SEPARATOR)
        count += 1
    if not parts[True] or not parts[False]:
        raise ValueError(f"domain {name!r}: too few documents ({count}) for a split")

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
