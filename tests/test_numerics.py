"""numpy's and OpenCV's CPU numerics are pinned (``videoda/numerics.py``) in every stage's process, and their
pinned results do not depend on the CPU: they give the recorded bytes on any x86-64 CPU with AVX2 (and under an
emulated Haswell, where qemu is installed), while unpinned they differ on an AVX-512 CPU. torch is left to the CPU
(its fastest kernels); a training step is the same bytes twice on one CPU."""

import ast
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from videoda.numerics import FORCED, MODE_VARIABLE, PINS, SHARED_CORES, cpu_flags, opencv_avx512_features, share_cores

REPO = Path(__file__).resolve().parents[1]
PIN_LINE = "import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)"
FLAGS = cpu_flags()
needs_avx2 = pytest.mark.skipif("avx2" not in FLAGS, reason="the pins target CPUs with AVX2")


def clean_env(mode="pinned", **extra):
    """This environment without any pin variable (nor the test suite's shared-cores wait policy): what is pinned in
    the child, videoda pinned itself."""
    env = {k: v for k, v in os.environ.items()
           if k not in PINS and k not in FORCED and k not in SHARED_CORES and k != MODE_VARIABLE}
    env.update(PYTHONPATH=str(REPO), **{MODE_VARIABLE: mode}, **extra)
    return env


def test_every_stage_and_benchmark_script_imports_videoda_first():
    scripts = sorted((REPO / "stages").glob("*.py")) + sorted((REPO / "benchmarks").glob("*.py"))
    for script in scripts:
        tree = ast.parse(script.read_text())
        first = next(n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)))
        line = script.read_text().splitlines()[first.lineno - 1]
        assert line == PIN_LINE, f"{script.relative_to(REPO)}:{first.lineno}: first import is {line!r}"


# --- the effective state in each stage's process --------------------------------------------------------------

DRIVER = """
import importlib, json, runpy, sys
target = sys.argv[1]
if target.endswith(".py"):
    runpy.run_path(target, run_name="__imports_only__")     # the script's imports, not its main()
else:
    importlib.import_module(target)
from videoda import numerics
print("STATE " + json.dumps(numerics.state()), flush=True)
"""


def stage_scripts():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return sorted({w for s in stages.values() for w in s["cmd"].split() if w.startswith("stages/")})


TARGETS = stage_scripts() + ["videoda.cli"]     # the `videoda` command's entry point


def effective_state(target, mode="pinned"):
    done = subprocess.run([sys.executable, "-c", DRIVER, target], cwd=REPO, capture_output=True, text=True,
                          env=clean_env(mode, ONEDNN_VERBOSE="1"), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    state = json.loads(next(line for line in lines if line.startswith("STATE "))[len("STATE "):])
    state["onednn_isa"] = next((line.split("isa:")[1] for line in lines if ",isa:" in line), None)
    state["onednn_conv"] = next((line.split(",")[6] for line in lines if ",convolution," in line), None)
    return state


@pytest.fixture(scope="module")
def states():
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(TARGETS, pool.map(effective_state, TARGETS)))


def test_opencv_is_told_to_disable_only_the_avx512_groups_the_cpu_has():
    skx = {"avx2", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
    assert opencv_avx512_features({"avx", "avx2", "fma"}) is None                 # AVX2 only: nothing to disable
    assert opencv_avx512_features(skx) == "AVX512F,AVX512-SKX"
    assert opencv_avx512_features({"avx2", "avx512f", "avx512cd", "avx512er", "avx512pf"}) == "AVX512F"   # KNL


@pytest.mark.slow
def test_importing_videoda_and_its_libraries_prints_nothing_on_this_cpu():
    # OpenCV prints a line for each feature in OPENCV_CPU_DISABLE the CPU lacks: every stage's error would then
    # come after stray lines (one clear line, exit 2, is the contract)
    done = subprocess.run([sys.executable, "-c", "import videoda, numpy, torch, cv2"], cwd=REPO,
                          capture_output=True, text=True, env=clean_env(), timeout=300)
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "", done.stderr


def test_every_stage_is_listed():
    assert len(TARGETS) >= 10 and "stages/train_supervised.py" in TARGETS


@pytest.mark.slow
@needs_avx2
@pytest.mark.parametrize("target", TARGETS)
def test_every_switch_is_in_effect_in_every_stage_process(states, target):
    s = states[target]
    assert s["mode"] == "pinned"
    native = "AVX512" if "avx512f" in FLAGS else "AVX2"
    assert s["torch_cpu_capability"] == native                   # torch: not pinned, the CPU's own kernels
    assert s["mkldnn_enabled"] and s["onednn_conv"] and (native == "AVX2") == ("512" not in s["onednn_conv"])
    assert s["mkl_cbwr_branch"] != "COMPATIBLE"
    assert not [t for t in s["numpy_dispatch_enabled"] if "512" in t or t == "X86_V4"]   # numpy: AVX2 at most
    assert not s["opencv_avx512_skx"]                            # OpenCV: no AVX-512 dispatched kernels
    assert s["opencv_ipp"] is False
    assert s["omp_wait_policy"] is None          # a stage alone keeps GNU OpenMP's default (spin, then sleep)
    assert s["openblas_coretype"] == "Haswell"


@pytest.mark.slow
@pytest.mark.skipif("avx512f" not in FLAGS, reason="shows the check's teeth on an AVX-512 CPU")
def test_the_state_check_sees_unpinned_numerics():
    s = effective_state("stages/train_supervised.py", mode="native")
    assert s["torch_cpu_capability"] == "AVX512"
    # (oneDNN names the ISA by vendor and generation: AVX-512 on AMD Zen 4, "Intel AVX 10.1" on newer Xeons)
    assert s["onednn_isa"] != "Intel AVX2" and "avx512" in s["onednn_conv"], (s["onednn_isa"], s["onednn_conv"])
    assert s["mkl_cbwr_branch"] != "COMPATIBLE"
    assert [t for t in s["numpy_dispatch_enabled"] if "512" in t or t == "X86_V4"]
    assert s["opencv_ipp"] and s["omp_wait_policy"] is None


@pytest.mark.slow
def test_a_user_setting_wins_over_a_pin():
    code = "import os, videoda; print(os.environ['OPENCV_IPP'], os.environ['OMP_WAIT_POLICY'])"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                          env=clean_env(OPENCV_IPP="enabled", OMP_WAIT_POLICY="ACTIVE"))
    assert done.stdout.split() == ["enabled", "ACTIVE"]
    assert share_cores({"OMP_WAIT_POLICY": "ACTIVE"}) == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_processes_that_share_the_cores_sleep_when_idle():
    assert share_cores({}) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"    # the suite's workers run side by side (tests/conftest.py)
    done = subprocess.run([sys.executable, "-c", "import videoda"], cwd=REPO, capture_output=True, text=True,
                          env=clean_env(mode="fast"))
    assert done.returncode != 0 and MODE_VARIABLE in done.stderr


# --- pinned results do not depend on the CPU -----------------------------------------------------------------

PROBE = """
import videoda  # pins the CPU numerics before numpy, torch and OpenCV load (videoda/numerics.py)
import hashlib, json
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from videoda.model.deeplabv2 import DeepLabV2


def digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


torch.manual_seed(0)
torch.set_num_threads(2)
cv2.setNumThreads(2)
rng = np.random.default_rng(0)
img = rng.random((32, 64, 3), dtype=np.float32)
small = cv2.resize(img, (49, 23), interpolation=cv2.INTER_AREA)
big = cv2.resize(small, (64, 32), interpolation=cv2.INTER_CUBIC)
gray = cv2.cvtColor((big * 255).clip(0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(gray, np.roll(gray, 2, axis=1), None)
y = rng.standard_normal(100_000).astype(np.float32)
vectorised = (np.exp(y), np.tanh(y), np.log1p(np.abs(y)), np.sin(y), np.sqrt(np.abs(y).astype(np.float64)))
model = DeepLabV2(19, backbone="resnet18", norm="group", num_layers=2, aspp_rates=(1, 2, 3, 4),
                  group_norm_groups=16, pretrained=None)
opt = torch.optim.Adam(model.parameters(), 1e-3)
x = torch.from_numpy(np.stack([big, big[:, ::-1]]).transpose(0, 3, 1, 2).copy())
labels = torch.randint(0, 19, (2, 32, 64))
for _ in range(2):
    out = F.interpolate(model(x), size=(32, 64), mode="bilinear", align_corners=False)
    loss = F.cross_entropy(out, labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
print("PROBE " + json.dumps({"opencv": digest(small, big, gray, flow), "numpy": digest(*vectorised),
                             "torch": digest(*[p.detach().numpy() for p in model.parameters()], out.detach())}))
"""

# the pinned probe's bytes, recorded on a 2-core AMD EPYC (Zen 4, AVX-512) with these library versions and
# reproduced on a 2-core Intel Xeon with AVX-512 and on an emulated Haswell: any x86-64 CPU with AVX2 must give them.
# torch's bytes depend on the CPU model (docs/engineering/reproducibility.md): they are compared run against run.
VERSIONS = {"torch": "2.14.1", "numpy": "2.4.6", "cv2": "4.13.0"}
REFERENCE = {"opencv": "17d92b8b9f58c05a", "numpy": "67ab3668c5959e9c"}


def probe(mode="pinned", prefix=()):
    done = subprocess.run([*prefix, sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True,
                          env=clean_env(mode), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("PROBE "))[6:])


@pytest.fixture(scope="module")
def pinned():
    return probe()


def installed_versions():
    code = "import torch, numpy, cv2; print(torch.__version__.split('+')[0], numpy.__version__, cv2.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return dict(zip(VERSIONS, out))


@pytest.mark.slow
@needs_avx2
def test_pinned_numpy_and_opencv_give_the_recorded_bytes_and_torch_repeats_on_this_cpu(pinned):
    assert probe()["torch"] == pinned["torch"]          # a training step: the same bytes twice on one CPU
    if installed_versions() != VERSIONS:
        pytest.skip(f"the reference was recorded with {VERSIONS}")
    assert (pinned["opencv"], pinned["numpy"]) == (REFERENCE["opencv"], REFERENCE["numpy"])


@pytest.mark.slow
@pytest.mark.skipif("avx512f" not in FLAGS, reason="unpinned results differ only where the CPU has AVX-512")
def test_unpinned_the_same_step_differs_on_an_avx512_cpu(pinned):
    native = probe(mode="native")
    assert native["opencv"] != pinned["opencv"]           # what the pins are for


@pytest.mark.slow
@needs_avx2
@pytest.mark.skipif(not shutil.which("qemu-x86_64"), reason="needs qemu-user (an emulated second CPU model)")
def test_pinned_opencv_and_numpy_are_identical_on_an_emulated_haswell(pinned):
    # torch's bytes differ under QEMU 7.2 (docs/engineering/reproducibility.md: torch.sqrt, used by Adam, differs from this
    # CPU's in the last bit under emulation, pinned or not), so only OpenCV's and numpy's are compared (about 4 min)
    emulated = probe(prefix=(shutil.which("qemu-x86_64"), "-cpu", "Haswell"))
    assert (emulated["opencv"], emulated["numpy"]) == (pinned["opencv"], pinned["numpy"])
