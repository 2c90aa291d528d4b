"""Atomic file writing: every output is written under a temporary name, then renamed.

A crash or a bad input therefore never leaves a half-written artifact behind. A killed run (SIGKILL, power
loss) cannot clean up after itself, so its temporary folder stays; the next writer of the same output removes
it (``atomic_path`` removes the stale temporary folders of the path it writes, recognised by their name).
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

TEMP_TAG = ".partial-"   # a temporary folder is ``<parent>/.<name>.partial-<pid>-<random>/``
_ACTIVE = set()          # the temporary folders this process is writing


def temp_prefix(path):
    """The name prefix of the temporary folders ``atomic_path(path)`` creates next to ``path``."""
    return f".{Path(path).name}{TEMP_TAG}{os.getpid()}-"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:      # e.g. PermissionError: it exists, run by someone else
        return True
    return True


def remove_stale_temps(path):
    """Remove the temporary folders a killed writer of ``path`` left next to it; returns the removed paths.

    Only folders named as ``atomic_path(path)`` names them are considered, and one is kept while the process that
    created it still runs (another process writing the same output) or while this process is writing it.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    prefix = f".{path.name}{TEMP_TAG}"
    pattern = re.compile(re.escape(prefix) + r"(\d+)-[A-Za-z0-9_]+")
    removed = []
    # every write lists its folder: as plain names, a Path made only for a match (Path.iterdir made one per
    # entry: 1.8-2.0 ms a write among a thousand entries, now 0.57 ms; docs/engineering/performance.md)
    for name in os.listdir(path.parent):
        m = pattern.fullmatch(name) if name.startswith(prefix) else None
        if m is None:
            continue
        entry = path.parent / name
        if entry.is_symlink() or not entry.is_dir() or entry in _ACTIVE:
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and _pid_alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


@contextlib.contextmanager
def scratch_folder(path):
    """Yield a new temporary folder next to ``path`` (``<parent>/.<name>.partial-<pid>-<random>/``), removed when
    the block ends. Stale ones of earlier killed runs are removed first, and the next writer of ``path`` removes
    this one if this run is killed: for work files that belong to an output but are not part of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    folder = Path(tempfile.mkdtemp(prefix=temp_prefix(path), dir=path.parent))
    _ACTIVE.add(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        _ACTIVE.discard(folder)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    Works for files and for directories (the caller creates whichever it needs at the yielded path). The
    temporary path is ``<parent>/.<name>.partial-<pid>-<random>/<name>`` (in a ``scratch_folder``): it keeps
    ``path``'s name (so its extension), and stale ones of earlier killed runs are removed first.
    """
    path = Path(path)
    with scratch_folder(path) as folder:
        tmp = folder / path.name
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        os.replace(tmp, path)


def write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path, obj):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path):
    """The sha256 of a file's bytes, as hex, read in blocks (checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()
