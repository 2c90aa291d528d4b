"""The device and precision settings (``compute`` in params.yaml, ``videoda/utils/device.py``): key checks, the
resolution of ``auto``, the CPU in fp32 computing exactly as before devices existed, bf16 autocast on the CPU, the
deterministic settings of each device type, device-independent checkpoints, and a training run on CUDA where
there is one."""

import hashlib
import json
import os
import runpy
import sys
import tempfile
import warnings
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from videoda.config.stages import STAGES, resolved_json, stage_config, stage_keys
from videoda.data.classes import NUM_CLASSES
from videoda.domain_adaptation.adversarial import vat_objective
from videoda.domain_adaptation.losses import (adversarial_bce, cross_entropy_2d, ignored_entropy_loss,
                                              kld_regulariser, tube_dice_loss)
from videoda.domain_adaptation.self_training import vst_forward, vst_losses
from videoda.domain_adaptation.train import Curve, Objective, make_optimizer, seed_everything, train
from videoda.errors import ParamError
from videoda.evaluate import predict_probs
from videoda.model import DeepLabV2, load_checkpoint, save_checkpoint
from videoda.model.discriminator import Discriminator
from videoda.utils.device import (CPU, CUBLAS_WORKSPACE_CONFIG, Runtime, channels_last, resolve_runtime,
                                  set_deterministic)
from videoda.utils.machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
COMPUTING_STAGES = ("train_source", "train_oracle", "vat", "flow", "pseudo_labels", "vst", "evaluate", "report")
has_cuda = torch.cuda.is_available()


def raw_params():
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture(autouse=True)
def keep_torch_state():
    """Tests here switch torch's global deterministic mode and thread count; each gets them back as they were."""
    mode = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    torch.set_num_threads(threads)


# --- the keys ----------------------------------------------------------------------------------------------------

def test_every_computing_stage_reads_the_compute_section_and_no_other_does():
    for stage in STAGES:
        keys = {k for k in stage_keys(stage) if k.startswith("compute.")}
        expected = ({"compute.device", "compute.precision", "compute.workers", "compute.nproc_per_node",
                     "compute.nnodes", "compute.rdzv_endpoint"} if stage in COMPUTING_STAGES else set())
        assert keys == expected, stage
    cfg = stage_config("vat", raw_params())
    assert (cfg.compute.device, cfg.compute.precision, cfg.compute.workers) == ("auto", "fp32", 0)
    assert json.loads(resolved_json(raw_params(), "evaluate"))["compute"] == raw_params()["compute"]


@pytest.mark.parametrize("key, value, message", [
    ("device", "gpu", r"params.yaml: compute.device = 'gpu' is not one of auto, cpu, cuda, cuda:N"),
    ("device", "cuda:x", r"compute.device = 'cuda:x' is not one of"),
    ("device", "CUDA", r"compute.device = 'CUDA' is not one of"),
    ("device", None, r"compute.device must be a non-empty string"),
    ("precision", "fp16", r"params.yaml: compute.precision = 'fp16' is not one of \['fp32', 'bf16'\]"),
    ("workers", -1, r"params.yaml: compute.workers = -1 is out of range \[0, None\]"),
    ("workers", 1.5, r"compute.workers must be an integer"),
])
def test_bad_compute_values_name_their_key(key, value, message):
    params = raw_params()
    params["compute"][key] = value
    for stage in COMPUTING_STAGES:
        with pytest.raises(ParamError, match=message):
            stage_config(stage, params)


def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def fake_gpus(monkeypatch, count, bf16=True, name="NVIDIA H200"):
    """CUDA as torch would report ``count`` GPUs (nothing runs on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "device", lambda device: nullcontext())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)


def test_auto_is_the_cpu_without_cuda_and_cuda_0_with_it(monkeypatch):
    no_cuda(monkeypatch)
    assert resolve_runtime("auto") == Runtime(torch.device("cpu"), "fp32", 0) == CPU
    assert resolve_runtime("cpu", "bf16", 3) == Runtime(torch.device("cpu"), "bf16", 3)
    fake_gpus(monkeypatch, 2)
    assert resolve_runtime("auto").device == torch.device("cuda", 0)
    # cuBLAS reads its workspace setting when it first computes: set as soon as CUDA is chosen
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE_CONFIG
    assert resolve_runtime("cuda").device == torch.device("cuda", 0)
    assert resolve_runtime("cuda:1", "bf16").device == torch.device("cuda", 1)
    assert resolve_runtime("cpu").device == torch.device("cpu")


def test_a_cuda_device_that_is_not_here_names_the_key(monkeypatch):
    no_cuda(monkeypatch)
    with pytest.raises(ParamError, match=r"^params.yaml: compute.device = 'cuda' but CUDA is not available: "):
        resolve_runtime("cuda")
    with pytest.raises(ParamError, match=r"compute.device = 'cuda:0' but CUDA is not available"):
        resolve_runtime("cuda:0")
    fake_gpus(monkeypatch, 2)
    with pytest.raises(ParamError, match=r"^params.yaml: compute.device = 'cuda:3' but 2 CUDA devices are visible "
                                         r"\(cuda:0 .. cuda:1\)$"):
        resolve_runtime("cuda:3")
    with pytest.raises(ParamError, match=r"^--device = 'cuda:2' but 2 CUDA devices"):
        resolve_runtime("cuda:2", device_key="--device")


def test_bf16_on_a_gpu_without_it_names_the_precision_key(monkeypatch):
    fake_gpus(monkeypatch, 1, bf16=False, name="Tesla V100-SXM2-32GB")
    assert resolve_runtime("cuda", "fp32").precision == "fp32"
    with pytest.raises(ParamError, match=r"^params.yaml: compute.precision = 'bf16' but cuda:0 "
                                         r"\(Tesla V100-SXM2-32GB\) has no native bf16"):
        resolve_runtime("cuda", "bf16")
    with pytest.raises(ParamError, match=r"compute.workers = -2 must be an integer >= 0"):
        resolve_runtime("cpu", "fp32", -2)


def tiny_params_dir(tmp_path, **compute):
    params = raw_params()
    params["compute"].update(compute)
    (tmp_path / "data/params").mkdir(parents=True)
    for name in STAGES:
        (tmp_path / f"data/params/{name}.json").write_text(resolved_json(params, name))
    return tmp_path


@pytest.mark.parametrize("script, args", [
    ("train_supervised.py", ["--stage", "train_source", "--split", "source", "--out", "models/m.pt",
                             "--curve", "reports/curves/m.tsv"]),
    ("vat.py", []),
    ("flow.py", []),
    ("pseudo_labels.py", ["--model", "models/vat.pt"]),
    ("vst.py", ["--init", "models/vat.pt", "--out", "models/vst.pt", "--curve", "reports/curves/vst.tsv"]),
    ("evaluate.py", ["--model", "m=models/m.pt"]),
    ("report.py", []),
])
def test_a_stage_asked_for_a_missing_gpu_stops_with_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys,
                                                                                script, args):
    cwd = tiny_params_dir(tmp_path, device="cuda:99")      # not there with or without CUDA
    before = sorted(cwd.rglob("*"))
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [script, *args])
    with pytest.raises(SystemExit) as exit_:                 # in this process: no interpreter start-up
        runpy.run_path(str(REPO / "stages" / script), run_name="__main__")
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: params.yaml: compute.device = 'cuda:99' but "), lines
    assert sorted(cwd.rglob("*")) == before


def test_segment_device_option_is_checked_before_anything_is_read(tmp_path, capsys):
    from videoda.cli import main

    code = main(["segment", str(tmp_path / "missing.mp4"), "--model", str(tmp_path / "m.pt"), "--out",
                 str(tmp_path / "o.mp4"), "--device", "cuda:99"])
    assert code == 2 and "error: --device = 'cuda:99' but " in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --- deterministic settings ---------------------------------------------------------------------------------------

def test_cpu_keeps_the_strict_deterministic_mode_and_cuda_warns_instead(monkeypatch):
    seed_everything(0)
    assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    set_deterministic(torch.device("cuda", 0))           # flags only: needs no GPU
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE_CONFIG
    seed_everything(0, CPU)
    assert not torch.is_deterministic_algorithms_warn_only_enabled()


# --- the CPU in fp32 computes exactly as before; bf16 runs ---------------------------------------------------------

H, W = 32, 64      # the discriminator needs maps of at least 32 x 32


def batches(seed, source=True):
    g = torch.Generator().manual_seed(seed)

    def sample():
        images = torch.randint(0, 256, (1, 2, H, W, 3), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, 15, (1, 2, H, W), generator=g)
        labels[:, :, :4] = 255                                        # void rows: ignored pixels
        batch = {"images": images, "labels": labels}
        if source:
            batch["labeled"] = torch.ones(1, 2, dtype=torch.bool)
            batch["target_images"] = torch.randint(0, 256, (1, 2, H, W, 3), dtype=torch.uint8, generator=g)
        return batch
    return SimpleNamespace(sample=sample, skip=None)      # train()'s batch stream (nothing resumes here)


def training_run(compute=None, steps=2):
    """VAT (segmentation + tube Dice + sequence D, its alternating step), then VST's losses (cross-entropy and the
    entropy regulariser), then a prediction, on a tiny model: the checkpoint, the curves and the softmax maps.
    ``compute`` None calls every function without a compute argument (the library's default, the CPU)."""
    kw = {} if compute is None else {"compute": compute}
    seed_everything(0, **kw)
    torch.set_num_threads(1)
    model = DeepLabV2(15, backbone="resnet18", norm="group", num_layers=2, aspp_rates=(1, 2), group_norm_groups=16)
    if compute is not None:
        model = compute.module(model)
    opt = make_optimizer(model.param_groups(1e-3), "adam", 1e-3, weight_decay=0.0)
    cfg = SimpleNamespace(discriminator="sequence", disc_input="softmax", dice="tube", lambda_v=0.01, lambda_dice=0.1,
                          disc_channels=8, optimizer_d="adam", lr_d=1e-3,
                          train=SimpleNamespace(iterations=steps, loss_limit=0,
                                                optim=SimpleNamespace(momentum=0.9, poly_power=0.9)))
    objective = vat_objective(cfg, **kw)
    vat = train(model, opt, batches(1), objective, cfg.train, Curve(every=1), **kw)
    opt = make_optimizer(model.param_groups(1e-3), "sgd", 1e-3, weight_decay=5e-4)
    vst = train(model, opt, batches(2, source=False), Objective(vst_forward, tuple(vst_losses("entropy", 0.1, 0.0))),
                cfg.train, Curve(every=1), **kw)
    images = batches(3, source=False).sample()["images"][0].numpy()
    with nullcontext() if compute is None else compute.autocast():
        probs = predict_probs(model, images)
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(Path(tmp) / "m.pt", model)
        checkpoint = (Path(tmp) / "m.pt").read_bytes()
    return {"checkpoint": checkpoint, "rows": vat["rows"] + vst["rows"], "probs": probs, "model": model,
            "discriminator": objective.extra_step.discriminator, "optimizer": opt}


def digest(run):
    h = hashlib.sha256(run["checkpoint"])
    h.update(repr(run["rows"]).encode())
    h.update(run["probs"].numpy().tobytes())
    return h.hexdigest()[:16]


# training_run() without a compute argument, recorded with the code before this change (commit 0c94f83, whose
# recorded by the same calls) on a 2-core AMD EPYC with the pinned numerics
REFERENCE = "7d407ebd8770c9c9"
REFERENCE_CPU, VERSIONS = "AMD EPYC", ("2.14.1", "2.4.6")


def test_cpu_fp32_through_the_device_code_is_bit_identical_to_before(monkeypatch):
    no_cuda(monkeypatch)
    before = training_run()                                  # no compute argument anywhere: the old calls
    after = training_run(resolve_runtime("auto", "fp32"))    # auto -> the CPU
    assert after["checkpoint"] == before["checkpoint"]
    assert after["rows"] == before["rows"]
    assert torch.equal(after["probs"], before["probs"])
    if cpu_model() == REFERENCE_CPU and (torch.__version__.split("+")[0], np.__version__) == VERSIONS:
        assert digest(before) == REFERENCE                   # and the code before this change gave these bytes


def test_bf16_trains_on_the_cpu_with_finite_losses_and_fp32_weights():
    run = training_run(resolve_runtime("cpu", "bf16"))
    assert run["rows"] and all(np.isfinite(v) for row in run["rows"] for k, v in row.items() if k != "step")
    assert {k for k in run["rows"][0]} >= {"seg", "dice", "adv", "d_src", "d_tgt"}
    assert {k for k in run["rows"][-1]} >= {"seg_t", "reg"}
    for module in (run["model"], run["discriminator"]):
        assert all(p.dtype == torch.float32 for p in module.parameters())
    assert all(v.dtype == torch.float32 for s in run["optimizer"].state.values() for v in s.values()
               if torch.is_tensor(v) and v.is_floating_point())
    assert run["probs"].dtype == torch.float32 and torch.allclose(run["probs"].sum(1), torch.ones(1), atol=1e-5)
    fp32 = training_run(CPU)
    assert run["checkpoint"] != fp32["checkpoint"]           # autocast did change the arithmetic


def test_losses_compute_in_float32_under_bf16_logits():
    torch.manual_seed(0)
    logits = torch.randn(2, 15, 4, 6)
    labels = torch.randint(0, 15, (2, 4, 6))
    labels[0, 0] = 255
    half = logits.bfloat16()
    for loss in (cross_entropy_2d, ignored_entropy_loss, kld_regulariser):
        out = loss(half, labels)
        assert out.dtype == torch.float32 and out == loss(half.float(), labels), loss.__name__
    assert adversarial_bce(half, 1.0).dtype == torch.float32
    probs = half.view(1, 2, 15, 4, 6).softmax(2)
    assert tube_dice_loss(probs, labels.view(1, 2, 4, 6)).dtype == torch.float32


# --- checkpoints and models on devices ---------------------------------------------------------------------------

def test_checkpoints_do_not_depend_on_the_memory_layout_and_load_onto_a_device(tmp_path):
    torch.manual_seed(0)
    model = DeepLabV2(15, backbone="resnet50", norm="frozen_batch", num_layers=1, aspp_rates=(1, 2))   # 1 x 1 convs
    save_checkpoint(tmp_path / "a.pt", model)
    model.to(memory_format=torch.channels_last)            # what Runtime.module does on CUDA
    assert model.head.branches[0].weight.is_contiguous(memory_format=torch.channels_last)
    save_checkpoint(tmp_path / "b.pt", model)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    loaded, _ = load_checkpoint(tmp_path / "b.pt", map_location="cpu")
    assert next(loaded.parameters()).device == torch.device("cpu")
    loaded, _ = load_checkpoint(tmp_path / "b.pt", map_location=torch.device("meta"))   # any device: moved there
    assert next(loaded.parameters()).is_meta


def test_the_cpu_runtime_moves_nothing():
    model = torch.nn.Conv2d(3, 4, 3)
    weight = model.weight
    assert CPU.module(model) is model and model.weight is weight and weight.is_contiguous()
    x = torch.zeros(2, 3)
    assert CPU.tensor(x) is x and CPU.batch({"x": x, "n": 1}) == {"x": x, "n": 1}
    assert isinstance(CPU.autocast(), nullcontext)


def test_channels_last_takes_the_layout_of_each_weight_rank():
    torch.manual_seed(0)
    disc = Discriminator(NUM_CLASSES, "sequence", base_channels=8)       # a 3D first convolution, then 2D ones
    x = torch.rand(1, 2, NUM_CLASSES, 32, 32)
    expected = disc(x)
    weight = disc.first.weight
    assert channels_last(disc) is disc and disc.first.weight is weight      # in place: the optimiser's tensors
    assert disc.first.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in disc.rest if hasattr(m, "weight"))
    assert torch.allclose(disc(x), expected, atol=1e-6)


@pytest.mark.slow
def test_a_ptlflow_model_runs_on_the_runtime_in_its_precision():
    pytest.importorskip("ptlflow")
    from videoda.flow.backends import PtlflowFlow, build_ptlflow_model

    torch.manual_seed(0)
    model = build_ptlflow_model("flownetc", random_init=True)       # weights do not matter here
    clip = SimpleNamespace(images=np.random.default_rng(0).integers(0, 256, (3, 64, 128, 3), dtype=np.uint8))
    pairs = [(0, 1), (2, 1)]
    fp32 = PtlflowFlow(model, 2).flows(clip, pairs)
    assert np.array_equal(PtlflowFlow(model, 2, CPU).flows(clip, pairs), fp32)
    bf16 = PtlflowFlow(model, 2, resolve_runtime("cpu", "bf16")).flows(clip, pairs)
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape == (2, 64, 128, 2) and np.isfinite(bf16).all()
    assert not np.array_equal(bf16, fp32) and np.abs(bf16 - fp32).max() < 0.1 * np.abs(fp32).max()


# --- on a GPU -----------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not has_cuda, reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_and_prediction_run_on_cuda(precision, tmp_path):
    compute = resolve_runtime("cuda", precision)
    with warnings.catch_warnings(record=True):               # ops without a deterministic CUDA kernel warn
        warnings.simplefilter("always")
        run = training_run(compute, steps=3)
    assert next(run["model"].parameters()).device.type == "cuda"
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert all(np.isfinite(v) for row in run["rows"] for k, v in row.items() if k != "step")
    assert run["probs"].device.type == "cpu" and run["probs"].dtype == torch.float32
    path = tmp_path / "m.pt"
    path.write_bytes(run["checkpoint"])
    model, _ = load_checkpoint(path)                          # saved from the GPU, loads on the CPU
    assert next(model.parameters()).device.type == "cpu"
    again = training_run(compute, steps=3)
    print(f"cuda {precision}: rerun bit-identical: {again['checkpoint'] == run['checkpoint']}")
