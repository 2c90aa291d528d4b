"""Fixtures the test files share: the tiny benchmark, generated and prepared once per session, and models trained
on it. Tests read them, and write into folders of their own (``helpers.link``)."""

# First, as in every stage script: the CPU numerics pinned before numpy, torch and OpenCV load
# (videoda/numerics.py), so a stage run in the test process computes as in its own process.
import videoda  # noqa: F401
from videoda.numerics import share_cores

# The suite's workers (pytest-xdist) and the stage processes they start run side by side on the same cores: idle
# OpenMP threads sleep at once instead of spinning on a core another process needs (videoda/numerics.py). Set
# before torch loads here; the stage processes inherit it.
share_cores()

import pytest

from helpers import in_process, link, ok, stage, synth_and_prepare, tiny_params, write_params


@pytest.fixture(scope="session")
def bench(tmp_path_factory):
    """The tiny benchmark (``helpers.tiny_params``): ``data/synth`` and ``data/prepared``. Read only."""
    return synth_and_prepare(tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="session")
def trained(bench, tmp_path_factory):
    """The tiny benchmark with two models trained on it: ``models/source_only.pt`` by stage train_source in its
    own process (the command dvc runs), ``models/oracle.pt`` by train_oracle in this one. Read only."""
    cwd = link(tmp_path_factory.mktemp("trained"), bench, "data/synth", "data/prepared")
    write_params(cwd, tiny_params())
    ok(stage(cwd, "train_supervised.py", "--stage", "train_source", "--split", "source",
             "--out", "models/source_only.pt", "--curve", "reports/curves/source_only.tsv"))
    assert in_process(cwd, "train_supervised.py", "--stage", "train_oracle", "--split", "target_train",
                      "--out", "models/oracle.pt", "--curve", "reports/curves/oracle.tsv") == 0
    return cwd
