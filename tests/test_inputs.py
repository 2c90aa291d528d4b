"""Trust in the pipeline's inputs and outputs: identical weights give a byte-identical checkpoint from two
processes, every bad input ends with one line naming the file and exit code 2 with nothing written (the stage's
main run in this process; each stage's contract in its own process: train_supervised's here, the others' in
test_pipeline), and the temporary files of a killed run are removed by the next run."""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import (REPO, fails_cleanly, in_process, ok, one_error_line, stage, tiny_params, write_params,
                     written_files)
from videoda.config.data import Synth
from videoda.config.fields import read_stage_config
from videoda.errors import DataError, ParamError
from videoda.utils.images import read_rgb
from videoda.utils.io import TEMP_TAG, atomic_path, remove_stale_temps


def fails_in_process(capsys, code, *names):
    """A stage's main run in this process that stopped at a bad input: exit code 2, one line naming ``names``."""
    assert code == 2, capsys.readouterr().err
    return one_error_line(capsys.readouterr().err, *names)


def leftovers(root):
    return [p for p in Path(root).rglob(f"*{TEMP_TAG}*")]


def md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------- checkpoints: same weights, same bytes

@pytest.mark.slow
def test_training_twice_gives_byte_identical_checkpoints(trained, tmp_path):
    """Two processes, two output names (the session's source-only model and this one): the bytes may depend on
    neither."""
    write_params(tmp_path, tiny_params())
    run = ok(stage(tmp_path, "train_supervised.py", "--stage", "train_source", "--split", "source",
                   "--data", str(trained / "data/prepared"), "--out", "models/again.pt", "--curve", "curves/again.tsv"))
    assert md5(tmp_path / "models/again.pt") == md5(trained / "models/source_only.pt")
    assert (tmp_path / "curves/again.tsv").read_bytes() == (trained / "reports/curves/source_only.tsv").read_bytes()
    assert "train_source: 3 steps in " in run.stdout          # the run time is printed, not stored
    assert not leftovers(tmp_path) and not leftovers(trained)


# ---------------------------------------------------------------- bad inputs: one line, exit 2, no output

TRAIN = ("--stage", "train_source", "--split", "source", "--out", "models/m.pt", "--curve", "curves/m.tsv")


def damaged_clip(bench, tmp_path, damage, member):
    """A copy of the prepared benchmark in ``tmp_path/prepared`` with ``member`` of its last source clip damaged,
    and the params: the damaged file."""
    data = tmp_path / "prepared"
    shutil.copytree(bench / "data/prepared", data)
    clip = sorted((data / "source").iterdir())[-1] / member
    content = clip.read_bytes()
    clip.write_bytes({"truncated": content[:len(content) // 2], "empty": b"",
                      "garbage": b"\x93NUMPY" + bytes(range(256)) * 8}[damage])
    write_params(tmp_path, tiny_params())
    return clip


@pytest.mark.parametrize("damage,member", [("truncated", "images.npy"), ("empty", "images.npy"),
                                           ("garbage", "images.npy"), ("truncated", "labels.npy"),
                                           ("empty", "labeled.npy"), ("garbage", "frame_names.npy")])
def test_corrupt_clip_file_names_it(bench, tmp_path, capsys, damage, member):
    clip = damaged_clip(bench, tmp_path, damage, member)
    code = in_process(tmp_path, "train_supervised.py", *TRAIN, "--data", tmp_path / "prepared")
    fails_in_process(capsys, code, clip)
    assert not (tmp_path / "models").exists() and not (tmp_path / "curves").exists()


@pytest.mark.slow
def test_train_supervised_corrupt_clip_fails_cleanly_in_its_own_process(bench, tmp_path):
    clip = damaged_clip(bench, tmp_path, "truncated", "images.npy")
    fails_cleanly(stage(tmp_path, "train_supervised.py", *TRAIN, "--data", str(tmp_path / "prepared")), clip)
    assert not (tmp_path / "models").exists() and not (tmp_path / "curves").exists()


def truncate_png(path):
    content = path.read_bytes()
    path.write_bytes(content[:len(content) * 2 // 3])
    return path


def truncated_jpeg(path):
    """Replace a PNG frame by a JPEG of it, cut short (cv2 would decode the rest as grey, without an error)."""
    ok_, encoded = cv2.imencode(".jpg", cv2.imread(str(path)))
    path.unlink()
    jpeg = path.with_suffix(".jpg")
    jpeg.write_bytes(encoded.tobytes()[:len(encoded) * 2 // 3])
    return jpeg


@pytest.mark.parametrize("dataset,damage", [("viper", truncate_png), ("viper", truncated_jpeg),
                                            ("cityscapes_vps", truncate_png)])
def test_truncated_frame_names_it(bench, tmp_path, capsys, dataset, damage):
    synth = tmp_path / "synth"
    shutil.copytree(bench / "data/synth", synth)
    frames = sorted((synth / dataset / ("train/img/001" if dataset == "viper" else "val/img")).glob("*.png"))
    bad = damage(frames[len(frames) // 2])
    params = tiny_params()
    params["prepare"]["source"]["root"] = str(synth / "viper")
    params["prepare"]["target"]["root"] = str(synth / "cityscapes_vps")
    write_params(tmp_path, params)
    fails_in_process(capsys, in_process(tmp_path, "prepare.py", "--out", "data/prepared"), bad, "truncated")
    assert not (tmp_path / "data/prepared/target_val").exists() and not leftovers(tmp_path / "data")


@pytest.mark.parametrize("key", ["source.root", "source.split", "target.root", "target.train_split",
                                 "target.val_split"])
def test_missing_root_or_split_fails_before_any_conversion(bench, tmp_path, capsys, key):
    params = tiny_params()
    for side, name in (("source", "viper"), ("target", "cityscapes_vps")):
        params["prepare"][side]["root"] = str(bench / "data/synth" / name)
    section, field = key.split(".")
    params["prepare"][section][field] = str(tmp_path / "nowhere") if field == "root" else "nowhere"
    write_params(tmp_path, params)
    fails_in_process(capsys, in_process(tmp_path, "prepare.py", "--out", "data/prepared"), "nowhere")
    assert not written_files(tmp_path) and not (tmp_path / "data/prepared").exists()   # not even the source


def test_params_yaml_syntax_error_names_the_file_and_line(tmp_path, capsys):
    text = yaml.safe_dump(tiny_params()).splitlines()
    text.insert(3, "  broken: [1, 2")
    (tmp_path / "params.yaml").write_text("\n".join(text) + "\n")
    code = in_process(tmp_path, "resolve_params.py", "--out", "data/params")
    line = fails_in_process(capsys, code, "params.yaml", "line")
    assert "YAML" in line and not (tmp_path / "data").exists()


@pytest.mark.parametrize("damage", ["truncated", "binary", "not an object"])
def test_corrupt_resolved_params_names_the_file(tmp_path, damage):
    write_params(tmp_path, tiny_params())
    path = tmp_path / "data/params/synth.json"
    text = path.read_bytes()
    path.write_bytes({"truncated": text[:len(text) // 2], "binary": b"\xff\xfe\x00garbage",
                      "not an object": b"[1, 2]\n"}[damage])
    with pytest.raises(ParamError, match="data/params/synth.json"):          # what stage synth reads first
        read_stage_config(Synth, path)


def test_frames_decode_as_before_and_truncated_ones_fail(tmp_path):
    """read_rgb gives cv2's pixels, in RGB order, for good PNG and JPEG frames; a truncated one is a DataError."""
    rng = np.random.default_rng(0)
    rgb = cv2.GaussianBlur((rng.random((37, 53, 3)) * 255).astype(np.uint8), (5, 5), 2)
    rgb[:4, :4] = (255, 0, 0)
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "a.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    Image.fromarray(rgb).save(tmp_path / "progressive.jpg", progressive=True)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    assert tuple(read_rgb(tmp_path / "a.png")[1, 1]) == (255, 0, 0)                  # RGB order
    for name in ("a.png", "a.jpg", "progressive.jpg", "grey.png"):
        path = tmp_path / name
        before = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert np.array_equal(read_rgb(path), before), name
        content = path.read_bytes()
        for cut in (len(content) // 2, len(content) - 1):
            path.write_bytes(content[:cut])
            with pytest.raises(DataError, match=f"{name}: truncated"):
                read_rgb(path)
    with pytest.raises(DataError, match="not found"):
        read_rgb(tmp_path / "missing.png")


# ---------------------------------------------------------------- no leftovers after a killed run

def test_stale_temps_are_removed_only_for_their_own_output(tmp_path):
    with atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("{}")
        assert remove_stale_temps(tmp_path / "out.json") == []            # this process is writing it
    dead = tmp_path / f".out.json{TEMP_TAG}999999999-abc"
    others = [tmp_path / f".other.json{TEMP_TAG}999999999-abc", tmp_path / ".out.json.keep",
              tmp_path / f".out.json{TEMP_TAG}{os.getppid()}-abc"]          # a live process's temp is kept
    for p in [dead, *others]:
        p.mkdir()
    with atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("{}")
    assert not dead.exists() and all(p.exists() for p in others)


@pytest.mark.slow
def test_a_killed_stage_leaves_temps_that_the_next_run_removes(tmp_path):
    params = tiny_params()
    params["synth"].update(frames_per_clip=30, source_sequences=3)   # long enough to be killed while writing
    write_params(tmp_path, params)
    out = tmp_path / "data/synth"
    proc = subprocess.Popen([sys.executable, str(REPO / "stages/synth.py"), "--out", "data/synth"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not leftovers(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        assert proc.poll() is None, "the stage ended before its temporary folders appeared"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    stale = leftovers(out)
    assert stale and not (out / "viper").exists()
    assert in_process(tmp_path, "synth.py", "--out", "data/synth") == 0
    assert (out / "viper/train/img").is_dir() and not leftovers(tmp_path)
