"""Class sets as data (videoda/data/class_sets/, params.yaml ``classes``): the shipped sets against the peers'
published lists, written out by hand here; how train and evaluation classes relate; the metrics over an evaluated
subset and VPQ^s where it is not defined, on hand-computed cases; every stage and ``videoda eval`` following the
chosen set; and the bad inputs."""

import json

import numpy as np
import torch
import pytest
import yaml

from helpers import REPO, in_process, link, one_error_line, tiny_params, write_params
from videoda.cli import main
from videoda.config.fields import load_params
from videoda.config.stages import resolved_json, stage_config
from videoda.data.classes import (CITYSCAPES_TRAIN_CLASSES, DEFAULT, IGNORE_ID, SYNTHIA_CLASSES, VIPER_CLASSES,
                                  load_class_set, shipped_class_sets)
from videoda.errors import ParamError
from videoda.metrics import ConfusionMatrix, VPQStuff, score_clips
from videoda.utils.images import write_ids

V = {n: i for i, n in enumerate(VIPER_CLASSES)}
CS = {n: i for i, n in enumerate(CITYSCAPES_TRAIN_CLASSES)}
SY = {n: i for i, n in enumerate(SYNTHIA_CLASSES)}

SHIN = ["road", "sidewalk", "building", "fence", "pole", "traffic light", "traffic sign", "vegetation", "terrain",
        "sky", "person", "car", "truck", "bus", "motorbike"]
DAVSN_VIPER = ["road", "sidewalk", "building", "fence", "traffic light", "traffic sign", "vegetation", "terrain",
               "sky", "person", "car", "truck", "bus", "motorbike", "bicycle"]
DAVSN_SYNTHIA = ["road", "sidewalk", "building", "fence", "pole", "traffic light", "traffic sign", "vegetation",
                 "sky", "person", "rider", "car"]


def test_the_shipped_sets_are_the_papers_lists():
    assert shipped_class_sets() == ["davsn_synthia", "davsn_viper", "shin2021"]
    shin, viper, synthia = (load_class_set(n) for n in ("shin2021", "davsn_viper", "davsn_synthia"))
    assert list(shin.names) == SHIN and shin == DEFAULT and list(shin.evaluated) == SHIN
    assert list(viper.names) == DAVSN_VIPER and list(viper.evaluated) == DAVSN_VIPER
    # DA-VSN's SYNTHIA-Seq set: 12 classes trained (the model has 12 outputs), 11 evaluated (fence left out)
    assert list(synthia.names) == DAVSN_SYNTHIA and synthia.num_classes == 12
    assert list(synthia.evaluated) == [n for n in DAVSN_SYNTHIA if n != "fence"]
    assert synthia.evaluated_ids.tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11]
    assert shin.palette.shape == (15, 3) and shin.palette.dtype == np.uint8 and shin.palette[0].tolist() == [128, 64, 128]


def test_class_maps_by_hand():
    shin, viper, synthia = (load_class_set(n) for n in ("shin2021", "davsn_viper", "davsn_synthia"))
    # VIPER: the seed paper's set takes infrastructure as pole and has no bicycle; DA-VSN's the other way round
    t = shin.table("viper")
    assert t[V["infrastructure"]] == 4 and t[V["bicycle"]] == IGNORE_ID and t[V["tree"]] == t[V["vegetation"]] == 7
    t = viper.table("viper")
    assert t[V["infrastructure"]] == IGNORE_ID and t[V["bicycle"]] == 14 and t[V["motorcycle"]] == 13
    assert t[V["van"]] == IGNORE_ID and t[V["trafficlight"]] == 4 and len(t) == len(VIPER_CLASSES)
    # Cityscapes train ids: rider is person in both 15-class sets, a class of its own in the SYNTHIA set
    t = viper.table("cityscapes")
    assert t[CS["rider"]] == t[CS["person"]] == 9 and t[CS["pole"]] == IGNORE_ID and t[CS["bicycle"]] == 14
    assert t[CS["wall"]] == t[CS["train"]] == t[IGNORE_ID] == IGNORE_ID
    t = synthia.table("cityscapes")
    assert (t[CS["person"]], t[CS["rider"]], t[CS["car"]]) == (9, 10, 11)
    assert t[CS["terrain"]] == t[CS["bicycle"]] == t[CS["truck"]] == IGNORE_ID
    # SYNTHIA-SEQS ids (0..15): its "bicycle" (11) is DA-VSN's rider, lane markings and void are void
    t = synthia.table("synthia")
    assert (t[SY["sky"]], t[SY["road"]], t[SY["pedestrian"]], t[SY["bicycle"]], t[SY["traffic light"]]) == \
        (8, 0, 9, 10, 5)
    assert t[SY["void"]] == t[SY["lanemarking"]] == t[SY["reserved 13"]] == IGNORE_ID and len(t) == 16
    with pytest.raises(ParamError, match="has no map for dataset 'synthia'"):
        viper.table("synthia")


def write_set(path, **changes):
    data = yaml.safe_load(open(load_class_set.__globals__["CLASS_SET_DIR"] / "davsn_synthia.yaml"))
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"classes": [["road", [1, 2, 3]], ["road", [1, 2, 3]]]}, "appear twice"),
    ({"classes": [["road", [1, 2, 300]]]}, "0 <= r, g, b <= 255"),
    ({"evaluated": ["road", "lane"]}, "evaluated must be"),
    ({"maps": {"gta": {"road": "road"}}}, "unknown dataset 'gta'"),
    ({"maps": {"synthia": {"tarmac": "road"}}}, "'tarmac' is not a class of synthia"),
    ({"maps": {"synthia": {"road": "tarmac"}}}, "which is not a class of the set"),
    ({"colours": []}, "unknown keys"),
])
def test_a_bad_class_set_file_names_the_file_and_what_is_wrong(tmp_path, changes, message):
    path = write_set(tmp_path / "mine.yaml", **changes)
    with pytest.raises(ParamError, match=message) as e:
        load_class_set(str(path))
    assert str(path) in str(e.value)


def test_an_unknown_set_is_a_param_error_naming_the_key():
    with pytest.raises(ParamError, match=r"params.yaml: classes = 'nope' is neither one of the class sets"):
        load_class_set("nope")


def test_a_custom_file_works_and_its_content_is_in_the_resolved_params(tmp_path):
    """resolve_params copies the set into each reading stage's params: editing the file reruns them under DVC."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "classes": str(write_set(tmp_path / "m.yaml"))}))
    loaded = load_params(tmp_path / "params.yaml")
    before = {s: resolved_json(loaded, s) for s in ("prepare", "train_source", "pseudo_labels", "evaluate", "report")}
    assert all('"rider"' in text for text in before.values())
    assert "classes" not in resolved_json(loaded, "flow")         # stages that do not read it do not rerun
    write_set(tmp_path / "m.yaml", classes=[["road", [1, 1, 1]], ["car", [2, 2, 2]]], evaluated="all",
              maps={"synthia": {"road": "road", "car": "car"}})
    loaded = load_params(tmp_path / "params.yaml")
    assert all(resolved_json(loaded, s) != text for s, text in before.items())
    cfg = stage_config("train_source", loaded)
    assert cfg.model.classes.names == ("road", "car")
    from videoda.model.build import build_model
    assert build_model(cfg.model).config["num_classes"] == 2


# --- metrics over the evaluated classes, and VPQ^s where it is not defined --------------------------------------

def test_miou_averages_the_evaluated_classes_only_by_hand():
    """3 classes, class 1 trained but not evaluated. gt / pred over 6 pixels:
    gt   0 0 1 1 2 2
    pred 0 1 1 2 2 2
    IoU_0 = 1 / (1 + 1) = 0.5; IoU_1 = 1 / 3; IoU_2 = 2 / 3 (pred 2 at a gt-1 pixel is a FP of class 2).
    mIoU over {0, 2} = (0.5 + 2/3) / 2 = 58.3333 %; over all three 50 %."""
    gt, pred = np.array([[0, 0, 1, 1, 2, 2]]), np.array([[0, 1, 1, 2, 2, 2]])
    cm = ConfusionMatrix(3, ("a", "b", "c"), evaluated=[0, 2])
    cm.update(pred, gt)
    out = cm.to_dict()
    assert out["miou"] == pytest.approx(100 * (0.5 + 2 / 3) / 2, abs=1e-4)
    assert out["iou"] == {"a": 50.0, "c": pytest.approx(66.6667, abs=1e-4)}
    assert out["iou_not_evaluated"] == {"b": pytest.approx(33.3333, abs=1e-4)}
    every = ConfusionMatrix(3, ("a", "b", "c"))
    every.update(pred, gt)
    assert every.to_dict()["miou"] == pytest.approx(50.0) and "iou_not_evaluated" not in every.to_dict()


def test_vpq_leaves_out_the_classes_not_evaluated():
    """One frame, k0 only: class 0 perfect (PQ 1), class 1 missed (PQ 0), class 2 perfect; not evaluating 1 gives
    VPQ 100 instead of 66.67."""
    gt, pred = np.array([[[0, 1, 2, 2]]]), np.array([[[0, 0, 2, 2]]])
    # class 0: pred {0, 1} vs gt {0}: IoU 0.5 -> not > 0.5: FP and FN, PQ 0; class 1: FN, PQ 0; class 2: PQ 1
    every, some = VPQStuff(3, ks=(0,)), VPQStuff(3, ks=(0,), evaluated=[2])
    every.update(pred, gt)
    some.update(pred, gt)
    assert every.compute()["mean"] == pytest.approx(100 / 3, abs=1e-4) and some.compute()["mean"] == 100.0
    assert list(some.compute()["per_class"]) == ["2"]


def test_vpq_is_not_defined_with_one_annotated_frame_per_clip():
    """Cityscapes-Seq annotates one frame a snippet: no window with k > 0 exists. mIoU is reported, VPQ^s is None
    with the reason; with two annotated frames in one clip it is defined again."""
    rng = np.random.default_rng(0)
    one = [(rng.integers(0, 3, (1, 4, 5)), rng.integers(0, 3, (1, 4, 5))) for _ in range(3)]
    classes = load_class_set({"classes": [[c, [0, 0, 0]] for c in "abc"], "maps": {"cityscapes": {}}})
    report, _ = score_clips(one, 5, classes)
    assert report["miou"] is not None and report["vpq"]["mean"] is None
    assert "Cityscapes-Seq" in report["vpq"]["not_defined"] and report["vpq"]["k0"] is not None
    assert report["vpq"]["k5"] is None and set(report["vpq"]["per_class"].values()) == {None}
    two = one + [(rng.integers(0, 3, (2, 4, 5)), rng.integers(0, 3, (2, 4, 5)))]
    report, _ = score_clips(two, 5, classes)
    assert "not_defined" not in report["vpq"] and report["vpq"]["mean"] is not None


def test_cli_eval_scores_with_the_chosen_set(tmp_path, capsys):
    """DA-VSN's SYNTHIA set: ids up to 11 are valid, fence (3) is not averaged; an unknown set exits 2."""
    gt = np.array([[0, 3, 3, 11], [10, 10, 4, 4]], np.uint8)
    pred = np.array([[0, 0, 3, 11], [10, 9, 4, 4]], np.uint8)
    for folder, ids in (("gt", gt), ("pred", pred)):
        (tmp_path / folder).mkdir()
        write_ids(tmp_path / folder / "0001_0019_x.png", ids)
    out = tmp_path / "scores.json"
    argv = ["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--out", str(out)]
    assert main(argv + ["--classes", "davsn_synthia"]) == 0
    report = json.loads(out.read_text())
    # evaluated classes present: road 1/2 (pred road also at a fence pixel), pole 1, rider 1/2, car 1, person 0/1
    assert report["classes"] == "davsn_synthia" and "fence" in report["iou_not_evaluated"]
    assert report["iou"]["road"] == 50.0 and report["iou"]["rider"] == 50.0 and report["iou"]["person"] == 0.0
    assert report["miou"] == pytest.approx((50 + 100 + 50 + 100 + 0) / 5, abs=1e-4)
    assert report["vpq"]["mean"] is None and "VPQ^s not defined" in capsys.readouterr().out
    assert main(argv + ["--classes", "shin2021"]) == 0                # 15 classes: ids 0..11 are valid too
    assert main(argv + ["--classes", "nope"]) == 2
    assert "videoda eval: --classes = 'nope'" in capsys.readouterr().err


# --- the pipeline follows the chosen set ------------------------------------------------------------------------

def test_prepare_train_and_evaluate_follow_the_class_set(bench, tmp_path, capsys):
    """The embedded benchmark prepared with DA-VSN's VIPER set: its labels are the default's mapped by class name
    (pole becomes void, the ids after it shift down); a model trained on it has 15 outputs and is scored over the
    set's names; a model of another set is refused by evaluate."""
    link(tmp_path, bench, "data/synth")
    (tmp_path / "data/default").symlink_to(bench / "data/prepared")      # the benchmark's, with the default set
    params = tiny_params()
    params["classes"] = "davsn_viper"
    write_params(tmp_path, params)
    assert in_process(tmp_path, "prepare.py", "--out", "data/prepared") == 0
    davsn = load_class_set("davsn_viper")
    remap = np.full(256, IGNORE_ID, np.uint8)
    for i, name in enumerate(DEFAULT.names):
        remap[i] = davsn.names.index(name) if name in davsn.names else IGNORE_ID
    for split in ("source", "target_train", "target_val"):
        for clip in sorted((tmp_path / "data/default" / split).iterdir()):
            old = np.load(clip / "labels.npy")
            new = np.load(tmp_path / "data/prepared" / split / clip.name / "labels.npy")
            assert np.array_equal(new, remap[old]), clip
    assert (remap[4], remap[5], remap[14]) == (IGNORE_ID, 4, 13)     # pole void, traffic light 5 -> 4, motorbike
    assert in_process(tmp_path, "train_supervised.py", "--stage", "train_source", "--split", "source",
                      "--out", "models/s.pt", "--curve", "reports/curves/s.tsv") == 0
    assert in_process(tmp_path, "evaluate.py", "--model", "s=models/s.pt") == 0
    metrics = json.loads((tmp_path / "reports/metrics.json").read_text())
    assert list(metrics["s"]["iou"]) == DAVSN_VIPER
    params["classes"] = "davsn_synthia"
    write_params(tmp_path, params)
    capsys.readouterr()
    code = in_process(tmp_path, "evaluate.py", "--model", "s=models/s.pt", "--metrics", "reports/other.json")
    assert code == 2
    one_error_line(capsys.readouterr().err, "models/s.pt: the model predicts 15 classes, which does not match the "
                   "class set 'davsn_synthia' of 12 (params.yaml: classes)")
    assert not (tmp_path / "reports/other.json").exists()


def test_resolve_params_rejects_an_unknown_set_and_writes_nothing(tmp_path, capsys):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "classes": "nope"}))
    assert in_process(tmp_path, "resolve_params.py", "--out", "data/params") == 2
    one_error_line(capsys.readouterr().err, "error: params.yaml: classes = 'nope' is neither one of the class sets")
    assert not (tmp_path / "data/params").exists()



@pytest.mark.slow
def test_synthia_seq_to_cityscapes_seq_through_the_stages(tmp_path):
    """The third scenario's layouts on tiny trees: prepare reads SYNTHIA-Seq (official folders, bottom rows
    cropped) and Cityscapes-Seq (one annotated frame per 30-frame snippet) into DA-VSN's 12 classes; the model has
    12 outputs; evaluate reports mIoU over the 11 evaluated classes and says VPQ^s is not defined."""
    from videoda.data import cityscapes_seq, synthia_seq
    rng = np.random.default_rng(0)
    road, car, fence = SY["road"], SY["car"], SY["fence"]
    for f in range(8):                          # SYNTHIA: 40 rows, the bottom 8 cropped: 32 x 32 (VAT's D needs 32)
        ids = np.full((40, 32), road, np.uint16)
        ids[:12], ids[12:24, : 10 + f], ids[32:] = SY["sky"], car, fence   # the fence rows are cropped away
        synthia_seq.write_frame(tmp_path / "synthia", "SYNTHIA-SEQS-04-DAWN", f,
                                rng.integers(0, 255, (40, 32, 3), np.uint8), ids)
    for split in ("train", "val"):             # Cityscapes labelIds: 7 road, 23 sky, 26 car, 25 rider
        for seq, annotated in ((0, 19), (1, 49)):
            for frame in range(annotated - 19, annotated + 11):
                label = None
                if frame == annotated:
                    label = np.full((32, 32), 7, np.uint8)
                    label[:10], label[12:20, :12], label[24:, 20:] = 23, 26, 25
                cityscapes_seq.write_frame(tmp_path / "cityscapes", split, "aachen", seq, frame,
                                           rng.integers(0, 255, (32, 32, 3), np.uint8), label)
    params = tiny_params()
    params["classes"] = "davsn_synthia"
    params["prepare"]["source"].update(dataset="synthia_seq", root=str(tmp_path / "synthia"),
                                       sequences=["SYNTHIA-SEQS-04-DAWN"], crop_bottom=8, height=32, width=32)
    params["prepare"]["target"].update(dataset="cityscapes_seq", root=str(tmp_path / "cityscapes"), height=32,
                                       width=32)
    params["flow"].update(epe=False, compare=[])            # real datasets ship no ground-truth flow
    params["vat"].update(iterations=2, batch_size=2)
    params["vst"].update(iterations=2, batch_size=2, equal_proportions=[0.5])
    write_params(tmp_path, params)
    assert in_process(tmp_path, "prepare.py", "--out", "data/prepared") == 0
    source = np.load(tmp_path / "data/prepared/source/SYNTHIA-SEQS-04-DAWN/labels.npy")
    assert source.shape == (8, 32, 32) and set(np.unique(source).tolist()) == {0, 8, 11}   # road, sky, car; no fence
    val = sorted((tmp_path / "data/prepared/target_val").iterdir())
    assert [c.name for c in val] == ["aachen_000000_000019", "aachen_000001_000049"]
    labeled = np.load(val[0] / "labeled.npy")
    assert labeled.sum() == 1 and labeled[19]
    gt = np.load(val[0] / "labels.npy")[19]
    assert (gt[0, 0], gt[14, 0], gt[28, 25], gt[22, 0]) == (8, 11, 10, 0)   # sky, car, rider (its own class), road
    assert in_process(tmp_path, "train_supervised.py", "--stage", "train_source", "--split", "source",
                      "--out", "models/s.pt", "--curve", "reports/curves/s.tsv") == 0
    assert torch.load(tmp_path / "models/s.pt", weights_only=True)["model"]["head.branches.0.weight"].shape[0] == 12
    # VAT (a discriminator on 12 maps), flow, pseudo labels, VST, evaluate and the report, on the set's classes
    assert in_process(tmp_path, "vat.py", "--init", "models/s.pt", "--out", "models/vat.pt",
                      "--curve", "reports/curves/v.tsv") == 0
    assert in_process(tmp_path, "flow.py", "--data", "data/prepared", "--out", "data/flow/target_train.h5",
                      "--report", "reports/flow.json") == 0
    assert in_process(tmp_path, "pseudo_labels.py", "--model", "models/vat.pt") == 0
    pseudo = json.loads((tmp_path / "reports/pseudo_labels.json").read_text())
    assert list(pseudo["thresholds"]) == DAVSN_SYNTHIA and list(pseudo["proportion_per_class"]) == DAVSN_SYNTHIA
    assert list(pseudo["p_iou"]) == [n for n in DAVSN_SYNTHIA if n != "fence"]
    assert in_process(tmp_path, "vst.py", "--init", "models/vat.pt", "--out", "models/vst.pt",
                      "--curve", "reports/curves/t.tsv") == 0
    assert in_process(tmp_path, "evaluate.py", "--model", "source_only=models/s.pt",
                      "--model", "vst=models/vst.pt") == 0
    report = json.loads((tmp_path / "reports/metrics.json").read_text())["vst"]
    assert list(report["iou"]) == [n for n in DAVSN_SYNTHIA if n != "fence"]
    assert list(report["iou_not_evaluated"]) == ["fence"] and report["miou"] is not None
    assert report["vpq"]["mean"] is None and "Cityscapes-Seq" in report["vpq"]["not_defined"]
    scores = json.loads((tmp_path / "reports/scores.json").read_text())
    assert scores["vst"]["VPQ"] is None and scores["vst"]["mIoU"] == report["miou"]
    assert in_process(tmp_path, "report.py", "--baseline", "models/s.pt", "--model", "models/vst.pt",
                      "--out", "reports/visual") == 0
    assert (tmp_path / "reports/visual/index.md").is_file() and (tmp_path / "reports/visual/classes.png").is_file()


def test_report_charts_name_the_sets_classes():
    """The legend lists the set's classes (12 and void), the per-class chart its evaluated ones (11)."""
    from videoda.report.charts import class_legend, iou_bars
    synthia = load_class_set("davsn_synthia")
    legend = class_legend(classes=synthia).legends[0]
    assert [t.get_text() for t in legend.get_texts()] == DAVSN_SYNTHIA + ["void / no label"]
    metrics = {"vst": {"miou": 50.0, "iou": {n: 50.0 for n in synthia.evaluated}}}
    ax = iou_bars(metrics, synthia).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [n for n in DAVSN_SYNTHIA if n != "fence"]
