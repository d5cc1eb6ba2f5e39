"""Add a run's modes to an existing bundle (``taugate export RUN --into BUNDLE``), safely.

- One writer at a time: an exclusive lock on ``.BUNDLE.lock`` beside the bundle (``fcntl``
  where there is one, else an ``O_EXCL`` lock file holding the owner's pid); a second export
  into the same bundle waits for the first, then merges into the bundle the first wrote, so no
  update is lost.
- Nothing left behind: the modes are exported into a scratch directory ``.BUNDLE.add.*``
  beside the bundle (same file system: the merge is a rename) that records its owner's pid; it
  is removed on success and on error, and one left by a killed export (owner gone) is removed
  by the next export into that bundle.
- The bundle's own layout is kept (shared backbone or standalone); an explicit layout that
  disagrees is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from taugate.bundle.atomic import _alive

OWNER = ".taugate-export-owner"  # inside a scratch directory: the exporting process's pid


class BundleBusyError(TimeoutError):
    """Another export holds the bundle's lock for longer than the caller waits."""


def lock_path(bundle: Path) -> Path:
    return bundle.with_name(f".{bundle.name}.lock")


@contextlib.contextmanager
def bundle_lock(bundle: str | Path, timeout: float | None = None, on_wait=None):
    """Hold the bundle's export lock; ``timeout`` seconds (None: wait as long as it takes),
    then :class:`BundleBusyError`. ``on_wait()`` is called once when the lock is busy."""
    path = lock_path(Path(bundle))
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        import fcntl
    except ImportError:  # no flock (Windows): an O_EXCL lock file with the owner's pid
        fcntl = None
    if fcntl is not None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            waited = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    _wait(waited, on_wait, deadline, path)
                    waited = True
            yield path
        finally:
            os.close(fd)  # releases the flock; the file stays (removing it would race)
        return
    waited = False
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            if _stale_lock(path):
                path.unlink(missing_ok=True)
                continue
            _wait(waited, on_wait, deadline, path)
            waited = True
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield path
    finally:
        path.unlink(missing_ok=True)


def _stale_lock(path: Path) -> bool:
    try:
        return not _alive(int(path.read_text()))
    except (OSError, ValueError):
        return False  # being written: not stale


def _wait(waited: bool, on_wait, deadline, path: Path) -> None:
    if not waited and on_wait is not None:
        on_wait()
    if deadline is not None and time.monotonic() > deadline:
        raise BundleBusyError(f"{path.name}: another export into this bundle is still running; "
                              f"try again when it is done")
    time.sleep(0.05)


def clean_stale_scratch(bundle: Path) -> list[Path]:
    """Remove the scratch directories of exports into ``bundle`` whose process is gone."""
    removed = []
    for d in bundle.parent.glob(f".{bundle.name}.add.*"):
        if not d.is_dir():
            continue
        try:
            pid = int((d / OWNER).read_text())
        except (OSError, ValueError):
            pid = None  # killed before it wrote its pid
        if pid is None or (pid != os.getpid() and not _alive(pid)):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


@contextlib.contextmanager
def scratch_dir(bundle: Path):
    """A scratch directory beside ``bundle`` owned by this process, always removed."""
    d = Path(tempfile.mkdtemp(prefix=f".{bundle.name}.add.", dir=bundle.parent))
    try:
        (d / OWNER).write_text(str(os.getpid()))
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def bundle_layout(bundle: Path) -> str:
    """``"shared"`` when the bundle stores a backbone, else ``"standalone"``."""
    path = bundle / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"--into {bundle.name}: no manifest.json there (expected a bundle "
                                f"written by `taugate export`; to write a new one use --out)")
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"--into {bundle.name}: manifest.json cannot be read ({exc})") from None
    return "shared" if manifest.get("backbone") else "standalone"


def export_into(run_dir, bundle, config, data_root=None, layout_given: bool = False,
                on_wait=None, verify=None, foundation=None):
    """Export the run's modes and merge them into ``bundle`` (in its layout); returns
    (reports, added mode names). ``layout_given``: ``config.layout`` was chosen explicitly,
    so a bundle of the other layout is refused rather than followed."""
    from dataclasses import replace

    from taugate.exporting.merge import merge_into
    from taugate.exporting.pipeline import export_run

    bundle = Path(bundle)
    layout = bundle_layout(bundle)
    if layout_given and config.layout != layout:
        raise ValueError(f"--layout {config.layout}: the bundle {bundle.name} is {layout}; modes "
                         f"are added in the bundle's own layout (leave --layout out, or export "
                         f"to a new bundle with --out)")
    replace_modes = config.overwrite  # --force: modes already in the bundle are replaced
    config = replace(config, layout=layout, overwrite=False)
    with bundle_lock(bundle, on_wait=on_wait):
        clean_stale_scratch(bundle)
        with scratch_dir(bundle) as scratch:
            path, reports = export_run(run_dir, scratch / "bundle", config, data_root,
                                       foundation)
            added = merge_into(bundle, path, replace=replace_modes, verify=verify)
    return reports, added

