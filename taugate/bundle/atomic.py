"""Atomic file and directory writes (temp + rename), so nothing half-written is left behind.

Permissions: ``tempfile`` creates files 0600 and directories 0700 whatever the umask; after the
rename those would be the final modes, and a bundle written by one user could not be read by
the service account that serves it. Here files and directories get what ``open``/``mkdir``
give: 0666 / 0777 minus the process umask.

Crashes (``kill -9``, power loss) can leave, next to ``path``: a temporary ``.NAME.*.tmp``
directory, or -- between the two renames that replace an existing ``path`` -- no ``path`` at
all but ``.NAME.old`` and a complete temporary directory. :func:`recover` (run at the start of
every :func:`atomic_directory`) completes the new one when it was complete, otherwise restores
the old one, and removes temporaries whose writer process is gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

_OWNER = ".taugate-writer"  # inside a temporary directory: the writer's pid
_COMPLETE = ".taugate-complete"  # inside a temporary directory: written, about to be renamed


def current_umask() -> int:
    """The process umask, read without changing it where /proc says it (Linux >= 4.7)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting (briefly process-wide), then restore
    os.umask(mask)
    return mask


def _chmod_default(path: str | os.PathLike, directory: bool) -> None:
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same directory, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _chmod_default(tmp, directory=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _writer_gone(tmp: Path) -> bool:
    try:
        pid = int((tmp / _OWNER).read_text())
    except (OSError, ValueError):
        return True  # no owner recorded: an older taugate's leftover, or a crash at creation
    return pid != os.getpid() and not _alive(pid)


def _drop_markers(directory: Path) -> None:
    for name in (_COMPLETE, _OWNER):
        (directory / name).unlink(missing_ok=True)


def recover(path: str | os.PathLike) -> str | None:
    """Repair what a crashed :func:`atomic_directory` left next to ``path``; returns what was
    done (``"completed"``, ``"restored"``) or None. Temporaries of live writers are kept."""
    path = Path(path)
    if not path.parent.is_dir():
        return None
    old = path.with_name(f".{path.name}.old")
    stale = [t for t in path.parent.glob(f".{path.name}.*.tmp") if t.is_dir() and _writer_gone(t)]
    done = None
    if not path.exists() and old.is_dir():
        complete = [t for t in stale if (t / _COMPLETE).exists()]
        if complete:  # crashed between the two renames: the new bundle was whole
            newest = max(complete, key=lambda t: t.stat().st_mtime)
            os.replace(newest, path)
            stale.remove(newest)
            done = "completed"
        else:
            os.replace(old, path)
            done = "restored"
    if path.is_dir():
        _drop_markers(path)
        shutil.rmtree(old, ignore_errors=True)
    for t in stale:
        shutil.rmtree(t, ignore_errors=True)
    return done


@contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False):
    """Yield a temporary sibling directory; on success it replaces ``path`` in one rename.

    On error the temporary directory is removed and ``path`` is left as it was. Leftovers of
    an earlier crash are repaired first (:func:`recover`).
    """
    path = Path(path)
    recover(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite=True / --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        _chmod_default(tmp, directory=True)
        (tmp / _OWNER).write_text(str(os.getpid()))
        yield tmp
        (tmp / _COMPLETE).touch()  # from here on, recover() may finish the job
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _drop_markers(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
