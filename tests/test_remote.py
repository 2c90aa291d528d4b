"""Sharing results through a DVC remote (docs/guides/sharing.md), with real ones. A copy of
the project at the tiny benchmark's size is reproduced (every stage) and pushed with its run
cache; a `git clone` of it pulls, and `dvc repro` there recomputes nothing but the one stage whose outputs are not
pushed (``push: false``), whose bytes come out the same. Two remotes: a local folder, and an S3-compatible server on
localhost (moto's server, DVC's S3 plugin dvc-s3), as a team's bucket would be."""

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml
from moto.server import ThreadedMotoServer

from helpers import REPO, tiny_params

DVC = Path(sys.executable).with_name("dvc")
NOT_PUSHED = ("data/synth/viper", "data/synth/cityscapes_vps", "data/synth/flow_gt")   # push: false in dvc.yaml
BUCKET = "videoda"
S3_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
       "AWS_DEFAULT_REGION": "us-east-1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
       "PATH": f"{DVC.parent}{os.pathsep}{os.environ['PATH']}"}   # a stage's `python` is the venv's


def run(cwd, *argv, check=True):
    # the copy's own videoda, not the editable install's
    result = subprocess.run(argv, cwd=cwd, env={**ENV, "PYTHONPATH": str(cwd)}, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, f"{' '.join(map(str, argv))}:\n{result.stdout}{result.stderr}"
    return result


def outs(repo):
    """Every cached output of the stages that ran: the paths dvc.lock records."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return [o["path"] for s in lock["stages"].values() for o in s.get("outs", [])]


def uncached(repo):
    """The outputs dvc.yaml marks ``cache: false`` (reports, in git): never in DVC's cache or a remote."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    return {path for s in stages.values() for kind in ("outs", "metrics", "plots") for o in s.get(kind, [])
            if isinstance(o, dict) for path, flags in o.items() if flags.get("cache") is False}


def files(repo, paths):
    """Each file under ``paths``: its md5 and mtime."""
    found = {}
    for path in paths:
        top = repo / path
        for f in ([top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())):
            found[str(f.relative_to(repo))] = hashlib.md5(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns
    return found


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def s3_server():
    """An S3-compatible server on localhost (moto's, in this process) with an empty bucket; yields its URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    url = f"http://127.0.0.1:{server._port}"
    boto3.client("s3", endpoint_url=url, **S3_CREDENTIALS).create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


def pushed_md5s(kind, remote):
    """The md5s of the files in a remote's cache (``files/md5/ab/cdef...``)."""
    if kind == "folder":
        return {p.parent.name + p.name for p in (remote / "files/md5").rglob("*") if p.is_file()}
    keys = [o["Key"] for page in boto3.client("s3", endpoint_url=remote, **S3_CREDENTIALS).get_paginator(
        "list_objects_v2").paginate(Bucket=BUCKET) for o in page.get("Contents", [])]
    assert any(k.startswith("cache/runs/") for k in keys), "the run cache was not pushed"
    return {"".join(k.split("/")[-2:]) for k in keys if k.startswith("cache/files/md5/")}


@pytest.mark.slow
def test_a_clone_pulls_and_recomputes_nothing(tmp_path, s3_server):
    """Reproduce every stage once; push with the run cache to a folder remote and to an S3 server; for each, clone,
    pull, repro: only synth (push: false) reruns, every output the same bytes. A pull from a remote that cannot be
    read fails and leaves the workspace as it was."""
    origin, folder = tmp_path / "origin", tmp_path / "remote"
    # the project's files as they will be committed: tracked, and new ones git does not ignore
    listed = run(REPO, "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():                                # not one deleted in the working tree
            (origin / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, origin / name)
    params = tiny_params("vat.iterations=2", "vat.batch_size=2", "vst.iterations=2", "vst.batch_size=2",
                         "flow.compare=[dis]")
    (origin / "params.yaml").write_text(yaml.safe_dump(params))
    (origin / "dvc.lock").unlink()                                 # the default run's: it records other stages too
    run(origin, "git", "init", "-q")
    run(origin, DVC, "remote", "add", "-d", "folder", folder)
    run(origin, DVC, "remote", "add", "s3", f"s3://{BUCKET}/cache")
    run(origin, DVC, "remote", "modify", "s3", "endpointurl", s3_server)
    run(origin, "git", "add", "-A")
    run(origin, "git", "commit", "-qm", "tiny")

    run(origin, DVC, "repro")                                      # the whole pipeline, every stage
    run(origin, "git", "add", "-A")
    run(origin, "git", "commit", "-qm", "dvc.lock")
    lock = yaml.safe_load((origin / "dvc.lock").read_text())
    md5s = {k: md5 for k, (md5, _) in files(origin, outs(origin)).items()}
    for kind, remote in (("folder", folder), ("s3", s3_server)):
        run(origin, DVC, "push", "-r", kind, "--run-cache")
        pushed = pushed_md5s(kind, remote)
        for stage in lock["stages"].values():
            for o in stage.get("outs", []):
                if o["path"] not in uncached(origin):
                    assert (o["md5"] in pushed) == (o["path"] not in NOT_PUSHED), (kind, o["path"])
        clone = tmp_path / f"clone_{kind}"
        run(tmp_path, "git", "clone", "-q", origin, clone)
        pulled = run(clone, DVC, "pull", "-r", kind, check=False)  # all it can, then an error on the rest
        assert pulled.returncode == 1 and all(p in pulled.stderr for p in NOT_PUSHED), pulled.stderr
        run(clone, DVC, "pull", "-r", kind, "--run-cache", "--allow-missing")
        before = files(clone, outs(clone))
        assert not any(p.startswith(NOT_PUSHED) for p in before)

        repro = run(clone, DVC, "repro").stdout
        ran = [line for line in repro.splitlines() if line.startswith("Running stage")]
        assert ran == ["Running stage 'synth':"], repro         # the one stage whose outputs were not pushed
        assert "Stage 'prepare' didn't change, skipping" in repro  # synth's outputs came out the same bytes
        assert run(clone, DVC, "status").stdout.strip() == "Data and pipelines are up to date."
        assert run(clone, "git", "status", "--porcelain").stdout == ""      # dvc.lock as pushed
        after = files(clone, outs(clone))
        assert {k: v for k, v in after.items() if k in before} == before    # nothing pulled was rewritten
        assert {k: md5 for k, (md5, _) in after.items()} == md5s            # every output the same bytes

    # A remote that cannot be read: DVC's error, and the workspace as it was.
    shutil.rmtree(clone / ".dvc/cache")
    run(clone, DVC, "remote", "add", "nowhere", tmp_path / "no_such_folder")
    failed = run(clone, DVC, "pull", "-r", "nowhere", check=False)
    assert failed.returncode == 1 and "failed to pull data from the cloud" in failed.stderr, failed.stderr
    assert files(clone, outs(clone)) == after
