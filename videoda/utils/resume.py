"""What a killed stage keeps for its rerun: the key of a run, and the per-clip work of the stages that go over every
clip (``flow``, ``pseudo_labels``, ``evaluate``).

Where: ``<output's folder>/.snapshots/<stage>/`` (the trainers keep their snapshot file there too,
``videoda.domain_adaptation.snapshot``). DVC deletes a stage's declared outputs before it runs it, never other
files, so the work survives the rerun that resumes from it; the stage removes it once its outputs are written.

Key (``run_key``): a sha256 over the stage's name, its resolved params (without the process layout:
``videoda.config.compute.run_params``), its code (the names and bytes of its script's import closure,
``videoda.utils.code_deps``: the files dvc.yaml lists as its code deps), the checkpoints it reads (bytes), and the
names, sizes and modification times of its data inputs. Data files are not hashed whole: at paper scale they are
hundreds of GB, read at every start; a rewritten file gets a new modification time, which is enough to never reuse
work done on other data (a copy of the same bytes with a new time only costs a restart). Work of another key is
reported in one line and removed: a stale clip is never reused.

Per-clip work (``ClipWork``): a clip's result is written under its index in the clip list, and a clip counts as done
only once its last file is in place (``mark_done``: written under a temporary name, then renamed), so a kill while
writing it leaves a clip that is simply computed again. A clip's result is the same whichever process computes it
and whenever, so the number of processes may change between the killed run and its rerun. What depends on the
clips' order (Algorithm 1's thresholds, the flow store's layout, the float sums of the metrics) is never kept: every
run replays it from the kept results, in clip order, exactly as an uninterrupted run does.
"""

import hashlib
import os
import shutil
import sys
from pathlib import Path

from videoda.errors import DataError, ParamError
from videoda.utils.code_deps import REPO, import_closure
from videoda.utils.distributed import broadcast_object

FORMAT = 1                 # the layout of what is kept; another layout is never resumed
SNAPSHOT_DIR = ".snapshots"
KEY_FILE = "KEY"
DONE = ".done"


def stage_folder(out, stage):
    """Where stage ``stage`` whose output is ``out`` keeps what a rerun resumes from."""
    return Path(out).parent / SNAPSHOT_DIR / stage


def _hash_file(h, path, name=None):
    h.update(f"{path if name is None else name}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def _hash_listing(h, path):
    """Names (relative to ``path``), sizes and modification times of ``path``'s files (or of ``path`` alone)."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h.update(f"{path}\0{len(files)}\0".encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(path) if p != path else p.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())


def code_files(script=None):
    """The project's code stage script ``script`` runs, as {path relative to the repository: file}: its import
    closure (what ``dvc.yaml`` lists as the stage's code deps); none without a script."""
    return {name: REPO / name for name in import_closure(script)} if script else {}


def run_key(stage, params, script=None, files=(), data=()):
    """The key of a stage's run (module docstring): sha256 hex of its name, params (a file, or its bytes without the
    process layout), code, the bytes of ``files`` (checkpoints) and the listings of its ``data`` paths (files or
    folders)."""
    h = hashlib.sha256(f"videoda snapshot {FORMAT}\0{stage}\0".encode())
    h.update((params if isinstance(params, bytes) else Path(params).read_bytes()) + b"\0")
    # the code by its repository-relative names: the key does not depend on where the repository lies
    for name, f in code_files(script).items():
        _hash_file(h, f, name)
    for f in files:
        _hash_file(h, f)
    for d in data:
        _hash_listing(h, d)
    return h.hexdigest()


def mark_done(folder, index):
    """Clip ``index``'s result in ``folder`` is whole: its marker appears in one rename (the last file a clip
    writes)."""
    tmp = Path(folder) / f"{index}{DONE}.tmp-{os.getpid()}"
    tmp.touch()
    os.replace(tmp, Path(folder) / f"{index}{DONE}")


def is_done(folder, index):
    return (Path(folder) / f"{index}{DONE}").exists()


def _remove_folder(folder):
    """Remove ``folder`` and the ``.snapshots`` folder above it if that is left empty."""
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:           # not empty (another stage's work) or already gone
        pass


class ClipWork:
    """Stage ``stage``'s per-clip work for output ``out``, kept in ``folder`` under key ``key`` (module docstring).

    Made collectively (every rank of ``compute.world``; rank 0 checks the folder and the others learn its path):
    work under another key is removed, in one line; work under this key is kept and said so. ``folder``: where the
    clips' results go (a path every rank sees: next to the output, as the flows' and predictions' shards always
    were).

    Use it as a context manager around the stage's work and output writing: leaving the block normally removes the
    work (the outputs are written); so does a bad input (``ParamError``, ``DataError``: the rerun's inputs differ,
    so nothing would be reused, and a failed stage leaves nothing behind); any other exit (a crash, Ctrl-C, a lost
    rank, an out-of-memory error) keeps it for the rerun, as a kill does."""

    def __init__(self, out, stage, key, compute):
        self.world = compute.world
        folder = stage_folder(out, stage)
        if self.world.is_main:
            self._open(folder, stage, key)
        self.folder = Path(broadcast_object(str(folder) if self.world.is_main else None, self.world))

    @classmethod
    def for_stage(cls, stage, out, params, script, files, data, compute):
        """The work of stage ``stage`` writing ``out``, keyed by ``run_key(stage, params, script, files, data)``;
        None in ``data`` stands for an input this run does not have (an optional file)."""
        data = [d for d in data if d is not None]
        return cls(out, stage, run_key(stage, params, script, files, data), compute)

    def _open(self, folder, stage, key):
        key_file = folder / KEY_FILE
        if folder.exists():
            kept = key_file.read_text() if key_file.is_file() else None
            if kept == key:
                done = sum(1 for _ in folder.rglob(f"*{DONE}"))
                print(f"{stage}: resuming, {done} clip result{'s' * (done != 1)} kept in {folder} by an "
                      f"interrupted run")
                return
            print(f"warning: {folder} holds the work of another run (its params, code or inputs differ): removed",
                  file=sys.stderr)
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        (folder / KEY_FILE).write_text(key)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None or isinstance(error, (ParamError, DataError)):
            self.remove()

    def remove(self):
        """Delete the kept work (rank 0's job)."""
        if self.world.is_main:
            _remove_folder(self.folder)
