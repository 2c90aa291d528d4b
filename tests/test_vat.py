"""VAT (Sec. 4.3): the tube matching loss, the discriminators, the adversarial terms and the `vat` stage."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from videoda.config.stages import stage_keys
from videoda.data.classes import IGNORE_ID, NUM_CLASSES
from videoda.data.clips import Clip
from videoda.data.pairs import PairDataset, PairLoader
from videoda.domain_adaptation.adversarial import (AdversarialTerm, DiceTerm, DiscriminatorStep, VATBatches,
                                                   adversarial_forward, discriminator_input, vat_objective)
from videoda.domain_adaptation.losses import entropy_map, single_frame_dice_loss, tube_dice_loss
from videoda.domain_adaptation.train import (Curve, Objective, forward_pairs, make_optimizer, segmentation_loss,
                                             supervised_forward, train)
from videoda.model import DeepLabV2, load_checkpoint
from videoda.model.discriminator import Discriminator

from helpers import REPO, in_process, link, ok, schedule, stage, tiny_params, write_params

@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these tiny tensors gain nothing from more, and lose a lot on a busy 2-core CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# One sample, 2 frames of 1 x 2 pixels, 3 classes; class 2 has no ground truth anywhere (an empty class).
LABELS = torch.tensor([[[[0, 0]], [[0, 1]]]])                                 # (B=1, T=2, H=1, W=2)
PROBS = torch.tensor([[[[1.0, 0.5]], [[0.0, 0.5]], [[0.0, 0.0]]],             # frame t - tau: (C, H, W)
                      [[[1.0, 0.0]], [[0.0, 0.5]], [[0.0, 0.5]]]]).unsqueeze(0)  # frame t


def test_tube_loss_by_hand_with_an_empty_class():
    # Tube pixels (frame 0 then frame 1), Dice = (2 sum pq + 1) / (sum p^2 + sum q^2 + 1):
    # class 0: p = [1, .5, 1, 0], q = [1, 1, 1, 0]: (5 + 1) / (2.25 + 3 + 1)  -> 1 - 0.96 = 0.04
    # class 1: p = [0, .5, 0, .5], q = [0, 0, 0, 1]: (1 + 1) / (0.5 + 1 + 1)  -> 1 - 0.8  = 0.2
    # class 2 (empty): p = [0, 0, 0, .5], q = 0: 1 / (0.25 + 1)                -> 1 - 0.8  = 0.2
    assert tube_dice_loss(PROBS, LABELS).item() == pytest.approx(0.44)
    # An empty class that is not predicted either is a perfect match and costs nothing.
    probs = PROBS.clone()
    probs[0, 1, 2] = 0.0
    probs[0, 1, 1] = torch.tensor([[0.0, 1.0]])
    # class 1 becomes p = [0, .5, 0, 1]: (2 + 1) / (1.25 + 1 + 1) -> 1 - 12/13
    assert tube_dice_loss(probs, LABELS).item() == pytest.approx(0.04 + 1 - 12 / 13 + 0.0)


def test_void_pixels_count_for_neither_prediction_nor_ground_truth():
    labels = LABELS.clone()
    labels[0, 1, 0, 1] = IGNORE_ID           # frame t's class-1 pixel becomes void
    # class 0: p = [1, .5, 1], q = [1, 1, 1] -> 1 - 6/6.25; class 1: p = [0, .5, 0], q = 0 -> 1 - 1/1.25;
    # class 2: p = 0, q = 0 -> 0
    assert tube_dice_loss(PROBS, labels).item() == pytest.approx(0.04 + 0.2)


def test_single_frame_loss_differs_from_the_tube_loss():
    # Frame t - tau: class 0 p = [1, .5], q = [1, 1] -> 1 - 4/4.25; class 1 (empty here, p^2 = .25) -> 0.2;
    # class 2 -> 0. Frame t: class 0 perfect -> 0; class 1 p = [0, .5], q = [0, 1] -> 1 - 2/2.25; class 2
    # (empty, p^2 = .25) -> 0.2. The single-frame loss averages the two frames.
    frame0 = (1 - 4 / 4.25) + 0.2
    frame1 = (1 - 2 / 2.25) + 0.2
    assert single_frame_dice_loss(PROBS, LABELS).item() == pytest.approx((frame0 + frame1) / 2)
    assert tube_dice_loss(PROBS, LABELS).item() == pytest.approx(0.44)

    # The tube view matters for a class that appears in one frame only: a weak false positive in the frame
    # where it is absent is a whole empty-class miss per frame, but a small fraction of the tube.
    h, w = 8, 8
    labels = torch.zeros(1, 2, h, w, dtype=torch.long)
    labels[0, 1, :4] = 1                                   # class 1 (a car entering) only in frame t
    probs = torch.nn.functional.one_hot(labels, 2).permute(0, 1, 4, 2, 3).float()
    probs[0, 0, 1, :1], probs[0, 0, 0, :1] = 0.3, 0.7      # a flicker of class 1 in frame t - tau
    tube, single = tube_dice_loss(probs, labels, eps=1e-6), single_frame_dice_loss(probs, labels, eps=1e-6)
    assert single.item() > 0.5 > 0.1 > tube.item()


def test_dice_term_applies_a_softmax_per_frame():
    logits = torch.randn(2, 2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 2, 4, 4))
    out = DiceTerm("tube", weight=2.0)({"logits": logits}, {"labels": labels})
    assert out["dice"].item() == pytest.approx(2 * tube_dice_loss(logits.softmax(2), labels).item())


def test_discriminator_input_is_a_softmax_per_frame_not_over_stacked_channels():
    logits = torch.randn(2, 2, NUM_CLASSES, 4, 4) * 3
    probs = discriminator_input(logits, "softmax")
    assert torch.allclose(probs.sum(2), torch.ones(2, 2, 4, 4))          # each frame sums to 1 on its own
    ent = discriminator_input(logits, "entropy")
    assert torch.allclose(ent, entropy_map(probs)) and (ent >= 0).all() and (ent.sum(2) <= 1 + 1e-5).all()


def test_discriminator_output_shapes():
    x = torch.rand(3, 2, NUM_CLASSES, 64, 128)
    seq = Discriminator(NUM_CLASSES, "sequence")
    assert isinstance(seq.first, torch.nn.Conv3d) and seq.first.stride == (2, 2, 2)
    assert seq.first.out_channels == 64
    assert seq(x).shape == (3, 1, 1, 2, 4)                    # one score map per pair, stride 32
    assert Discriminator(NUM_CLASSES, "image")(x).shape == (3, 2, 1, 2, 4)   # one per frame
    # The sequence discriminator reads both frames: changing frame t - tau changes its score.
    y = x.clone()
    y[:, 0] = torch.rand_like(y[:, 0])
    assert not torch.allclose(seq(x), seq(y))
    with pytest.raises(ValueError, match="at least 32"):
        seq(torch.rand(1, 2, NUM_CLASSES, 16, 32))


def tiny_model():
    torch.manual_seed(0)
    return DeepLabV2(NUM_CLASSES, backbone="resnet18", norm="group", num_layers=1, aspp_rates=(1,))


def test_adversarial_gradient_reaches_the_segmentation_network_and_not_the_discriminator():
    model, disc = tiny_model(), Discriminator(NUM_CLASSES, "sequence", base_channels=8)
    batch = {"images": torch.randint(0, 256, (2, 2, 32, 32, 3), dtype=torch.uint8),
             "target_images": torch.randint(0, 256, (2, 2, 32, 32, 3), dtype=torch.uint8)}
    outputs = adversarial_forward(model, batch)
    assert outputs["logits"].shape == outputs["target_logits"].shape == (2, 2, NUM_CLASSES, 32, 32)
    for disc_input in ("softmax", "entropy"):
        model.zero_grad()
        outputs = adversarial_forward(model, batch)
        loss = AdversarialTerm(disc, disc_input, weight=1.0)(outputs, batch)["adv"]
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
        assert all(p.grad is None for p in disc.parameters())    # D is frozen during the generator step


def test_domains_at_different_resolutions_take_two_passes():
    """Source and target prepared at different sizes (prepare.source/target.height, width): segmented and judged
    in a pass each; at one size the joint pass gives the same numbers as two (GroupNorm: no batch statistics)."""
    model, disc = tiny_model(), Discriminator(NUM_CLASSES, "image", base_channels=4)
    opt = make_optimizer([{"params": list(disc.parameters()), "lr": 1e-3}], "adam", 1e-3, weight_decay=0.0)
    src, tgt = (torch.randint(0, 256, (1, 2, h, w, 3), dtype=torch.uint8) for h, w in ((32, 56), (32, 64)))
    outputs = adversarial_forward(model, {"images": src, "target_images": tgt})
    assert outputs["logits"].shape[3:] == (32, 56) and outputs["target_logits"].shape[3:] == (32, 64)
    out = DiscriminatorStep(disc, opt, "softmax", iterations=2)(outputs, {}, 0)
    assert torch.isfinite(out["d_src"]) and torch.isfinite(out["d_tgt"])
    joint = adversarial_forward(model, {"images": tgt[:, :, :, :56], "target_images": src})
    with torch.no_grad():
        alone = forward_pairs(model, tgt[:, :, :, :56])
    assert torch.allclose(joint["logits"], alone, atol=1e-5)


def test_discriminator_learns_separable_inputs_alone():
    torch.manual_seed(0)
    disc = Discriminator(NUM_CLASSES, "sequence", base_channels=16)
    opt = make_optimizer([{"params": list(disc.parameters()), "lr": 1e-3}], "adam", 1e-3, weight_decay=0.0)
    step = DiscriminatorStep(disc, opt, "softmax", iterations=40)
    # Source predictions favour class 0 and target ones class 1 (logits before the per-frame softmax).
    losses = []
    for i in range(40):
        src, tgt = torch.randn(4, 2, NUM_CLASSES, 32, 32), torch.randn(4, 2, NUM_CLASSES, 32, 32)
        src[:, :, 0] += 3
        tgt[:, :, 1] += 3
        out = step({"logits": src, "target_logits": tgt}, {}, i)
        losses.append(float(out["d_src"] + out["d_tgt"]) / 2)
    assert np.mean(losses[:5]) > 0.6 and np.mean(losses[-5:]) < 0.1


def test_discriminator_schedule_covers_every_param_group():
    disc = Discriminator(NUM_CLASSES, "image", base_channels=4)
    groups = [{"params": list(disc.first.parameters()), "lr": 1e-4},
              {"params": list(disc.rest.parameters()), "lr": 1e-3}]
    opt = make_optimizer(groups, "adam", 1e-4, weight_decay=0.0)
    step = DiscriminatorStep(disc, opt, "entropy", iterations=10, power=0.9)
    x = {"logits": torch.randn(1, 2, NUM_CLASSES, 32, 32), "target_logits": torch.randn(1, 2, NUM_CLASSES, 32, 32)}
    step(x, {}, 5)
    factor = 0.5 ** 0.9
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4 * factor, 1e-3 * factor])


def _clips(labelled, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, (6, 32, 32)).astype(np.uint8)
    flags = np.ones(6, bool)
    if not labelled:
        labels, flags = np.full_like(labels, IGNORE_ID), np.zeros(6, bool)
    return [Clip("c", images, labels, flags, np.array([f"c_{t}" for t in range(6)]))]


def _train_vat(target_clips, tmp_path):
    torch.manual_seed(0)
    model, disc = tiny_model(), Discriminator(NUM_CLASSES, "sequence", base_channels=8)
    opt = make_optimizer(model.param_groups(1e-3), "adam", 1e-3, weight_decay=0.0)
    d_opt = make_optimizer([{"params": list(disc.parameters()), "lr": 1e-3}], "adam", 1e-3, weight_decay=0.0)
    batches = VATBatches(PairLoader(PairDataset(_clips(True, 0), 1), 2, 0),
                         PairLoader(PairDataset(target_clips, 1), 2, 1))
    terms = (segmentation_loss, DiceTerm("tube"), AdversarialTerm(disc, "softmax", 0.1))
    objective = Objective(adversarial_forward, terms, DiscriminatorStep(disc, d_opt, "softmax", 2))
    train(model, opt, batches, objective, schedule(2), Curve(tmp_path / "c.tsv"))
    return model.state_dict()


def test_target_labels_never_reach_a_loss(tmp_path):
    labelled, unlabelled = _clips(True, 1), _clips(False, 1)
    assert torch.equal(torch.from_numpy(labelled[0].images), torch.from_numpy(unlabelled[0].images))
    batch = VATBatches(PairLoader(PairDataset(_clips(True, 0), 1), 2, 0),
                       PairLoader(PairDataset(labelled, 1), 2, 1)).sample()
    assert set(batch) == {"images", "labels", "labeled", "target_images"}
    a, b = _train_vat(labelled, tmp_path), _train_vat(unlabelled, tmp_path)
    assert all(torch.equal(a[k], b[k]) for k in a)      # the target labels change nothing


# --- the stage, end to end on a tiny benchmark (32 x 64: the discriminator needs 32 pixels per side)

@pytest.fixture(scope="module")
def vat_dir(trained, tmp_path_factory):
    """The session's benchmark (prepared at 32 x 64) and source-only model, in a folder of this module's."""
    cwd = link(tmp_path_factory.mktemp("vat"), trained, "data/prepared", "models/source_only.pt")
    params = tiny_params()
    params["vat"].update(iterations=2, batch_size=2, threads=1)
    write_params(cwd, params)
    return cwd, params


@pytest.mark.slow
def test_vat_stage_writes_a_model_and_its_curve(vat_dir):
    cwd, _ = vat_dir
    ok(stage(cwd, "vat.py"))                                  # the command dvc runs, in its own process
    header = (cwd / "reports/curves/vat.tsv").read_text().splitlines()[0].split("\t")
    assert header == ["step", "lr", "seg", "dice", "adv", "d_src", "d_tgt"]
    ckpt = torch.load(cwd / "models/vat.pt", weights_only=True)
    assert ckpt["stage"] == "vat" and ckpt["discriminator"] == "sequence" and ckpt["dice"] == "tube"
    model, _ = load_checkpoint(cwd / "models/vat.pt")
    assert model.config["num_classes"] == NUM_CLASSES


def run_inprocess(cwd, params, script, *args):
    """Run a stage script in this process (no interpreter start-up) in ``cwd`` with ``params``, unchecked (the
    stage checks them: the errors test gives it bad ones); its exit code."""
    write_params(cwd, params, check=False)
    return in_process(cwd, script, *args)


@pytest.mark.parametrize("variant, columns", [
    ({"discriminator": "image", "disc_input": "entropy", "dice": "none"}, ["seg", "adv", "d_src", "d_tgt"]),
    ({"discriminator": "none", "dice": "single"}, ["seg", "dice"]),
])
def test_vat_stage_variants(vat_dir, tmp_path, variant, columns):
    cwd, params = vat_dir
    params = yaml.safe_load(yaml.safe_dump(params))
    params["vat"].update(variant)
    args = ("--init", str(cwd / "models/source_only.pt"), "--data", str(cwd / "data/prepared"))
    assert run_inprocess(tmp_path, params, "vat.py", *args) == 0
    assert (tmp_path / "reports/curves/vat.tsv").read_text().splitlines()[0].split("\t")[2:] == columns
    assert torch.load(tmp_path / "models/vat.pt", weights_only=True)["discriminator"] == variant["discriminator"]


def test_vat_stage_errors_name_the_key_or_file(vat_dir, tmp_path, capsys):
    cwd, params = vat_dir
    params = yaml.safe_load(yaml.safe_dump(params))
    params["vat"]["discriminator"] = "video"
    data = ("--data", str(cwd / "data/prepared"))
    init = ("--init", str(cwd / "models/source_only.pt"))
    assert run_inprocess(tmp_path, params, "vat.py", *init, *data) == 2
    assert "vat.discriminator" in capsys.readouterr().err and not (tmp_path / "models").exists()
    params["vat"]["discriminator"] = "sequence"
    assert run_inprocess(tmp_path, params, "vat.py", *data) == 2     # default --init is missing here
    assert "models/source_only.pt" in capsys.readouterr().err and not (tmp_path / "models").exists()


def test_dvc_vat_stage_reads_only_its_own_params():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    # vat reads its effective params (composed from conf/, checked) from the file stage resolve_params writes.
    assert "params" not in stages["vat"] and "data/params/vat.json" in stages["vat"]["deps"]
    # besides its own: the validation curve's protocol (evaluate's class set, stride and resolution)
    assert {k.split(".")[0] for k in stage_keys("vat")} == {"seed", "vat", "compute", "classes", "evaluate"}
    assert {k for k in stage_keys("vat") if k.startswith("evaluate.")} == {"evaluate.label_stride",
                                                                          "evaluate.resolution"}
    assert "models/source_only.pt" in stages["vat"]["deps"] and "models/vat.pt" in stages["vat"]["outs"]
    readers = {name for name, s in stages.items() if "vat" in s.get("params", [])}
    assert readers == {"resolve_params"}
    users = {name for name, s in stages.items() if "models/vat.pt" in s.get("deps", [])}
    assert "evaluate" in users and "vat=models/vat.pt" in stages["evaluate"]["cmd"]


@pytest.mark.parametrize("kind, dice, names", [("sequence", "tube", ["seg", "dice", "adv"]),
                                               ("image", "none", ["seg", "adv"]),
                                               ("none", "single", ["seg", "dice"])])
def test_vat_objective_assembles_the_variant(kind, dice, names):
    cfg = SimpleNamespace(discriminator=kind, dice=dice, disc_input="entropy", lambda_v=0.5, lambda_dice=2.0,
                          disc_channels=4, optimizer_d="adam", lr_d=1e-3,
                          train=SimpleNamespace(iterations=10, optim=SimpleNamespace(momentum=0.9, poly_power=0.9)))
    torch.manual_seed(3)
    objective = vat_objective(cfg)
    assert objective.forward is (supervised_forward if kind == "none" else adversarial_forward)
    assert objective.terms[0] is segmentation_loss
    assert [type(t).__name__ for t in objective.terms[1:]] == [
        {"dice": "DiceTerm", "adv": "AdversarialTerm"}[n] for n in names[1:]]
    if kind == "none":
        assert objective.extra_step is None
        return
    adv, step = objective.terms[-1], objective.extra_step
    assert adv.discriminator is step.discriminator and adv.weight == 0.5 and step.disc_input == "entropy"
    assert (step.iterations, step.power) == (10, 0.9) and isinstance(step.optimizer, torch.optim.Adam)
    assert step.optimizer.param_groups[0]["lr"] == 1e-3 and step.optimizer.param_groups[0]["weight_decay"] == 0.0
    # The discriminator is the first draw from torch's generator: the same weights as a fresh one after the seed.
    torch.manual_seed(3)
    fresh = Discriminator(NUM_CLASSES, kind, base_channels=4).state_dict()
    assert all(torch.equal(fresh[k], v) for k, v in step.discriminator.state_dict().items())
