import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from videoda.model import DeepLabV2, load_checkpoint, normalize, save_checkpoint

torch.set_num_threads(2)


def small(**kw):
    args = dict(num_classes=15, backbone="resnet18", norm="group", num_layers=2)
    args.update(kw)
    return DeepLabV2(**args)


def test_output_matches_input_size_resnet18_truncated():
    model = small().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 128))
    assert out.shape == (2, 15, 64, 128)
    assert model.head.branches[0].in_channels == 128  # layer2 of a ResNet-18


def test_output_matches_odd_input_size_resnet50_dilated():
    model = DeepLabV2(num_classes=7, backbone="resnet50", norm="frozen_batch").eval()
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        feats = model.backbone(x)
        out = model(x)
    assert feats.shape[1] == 2048 and feats.shape[-2:] == (9, 13)  # output stride 8
    assert out.shape == (1, 7, 65, 97)


def test_aspp_sums_branches():
    model = small(aspp_rates=(1, 2)).eval()
    a, b = model.head.branches
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        feats = model.backbone(x)
        both = model.head(feats)
        a.bias.fill_(0.5)
        b.weight.zero_()
        b.bias.fill_(0.25)
        # Branch b now outputs a constant: the head must add it, not concatenate or average.
        expected = a(feats) + 0.25
        assert torch.allclose(model.head(feats), expected)
    assert both.shape[1] == 15
    assert a.weight.std().item() == pytest.approx(0.01, rel=0.2)


@pytest.mark.parametrize("norm, cls", [("batch", nn.BatchNorm2d), ("frozen_batch", FrozenBatchNorm2d)])
def test_batch_norm_variants(norm, cls):
    model = small(norm=norm)
    assert any(isinstance(m, cls) for m in model.modules())
    assert not any(isinstance(m, nn.GroupNorm) for m in model.modules())


def test_group_norm_has_no_batch_norm():
    model = small(group_norm_groups=8)
    gns = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert gns and all(m.num_groups == 8 for m in gns)
    assert not any(isinstance(m, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)) for m in model.modules())


def test_param_groups_head_lr_is_ten_times():
    model = small()
    backbone, head = model.param_groups(0.01)
    assert backbone["lr"] == 0.01 and head["lr"] == pytest.approx(0.1)
    assert len(backbone["params"]) + len(head["params"]) == len(list(model.parameters()))
    assert {id(p) for p in head["params"]} == {id(p) for p in model.head.parameters()}


def test_normalize():
    images = np.zeros((2, 4, 5, 3), dtype=np.uint8)
    images[..., 0] = 255
    x = normalize(images)
    assert x.shape == (2, 3, 4, 5) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0], torch.tensor((1 - 0.485) / 0.229))
    assert torch.allclose(x[:, 2], torch.tensor(-0.406 / 0.225))
    with pytest.raises(ValueError, match="uint8"):
        normalize(torch.zeros(2, 3, 4, 5))


@pytest.mark.parametrize("wrap", [None, "model", "state_dict"])
def test_pretrained_from_torchvision_backbone_checkpoint(tmp_path, wrap):
    resnet = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        resnet.layer2[1].conv2.weight.fill_(0.125)
        resnet.bn1.running_mean.fill_(3.0)
    state = resnet.state_dict()  # includes fc.* and layer3/4, which a 2-layer backbone drops
    path = tmp_path / "resnet18.pth"
    torch.save(state if wrap is None else {wrap: state}, path)
    model = small(norm="frozen_batch", pretrained=str(path))
    assert torch.equal(model.backbone.layer2[1].conv2.weight, resnet.layer2[1].conv2.weight)
    assert torch.equal(model.backbone.bn1.running_mean, torch.full((64,), 3.0))


def test_pretrained_from_full_model_checkpoint(tmp_path):
    src = small()
    path = tmp_path / "full.pth"
    torch.save({"model": src.state_dict()}, path)
    dst = small(pretrained=path)
    assert torch.equal(dst.head.branches[2].weight, src.head.branches[2].weight)


def test_pretrained_mismatched_keys(tmp_path):
    path = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="missing keys|unexpected keys"):
        small(num_layers=4, norm="batch", pretrained=path)  # resnet34 blocks are not resnet18's
    torch.save({"something.else": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="something.else"):
        small(pretrained=path)


def test_pretrained_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="model.pretrained") as err:
        small(pretrained=str(path))
    assert str(path) in str(err.value)


def test_checkpoint_round_trip(tmp_path):
    model = small(norm="batch", aspp_rates=(2, 4)).eval()
    path = tmp_path / "ck" / "model.pt"
    save_checkpoint(path, model, {"iteration": 42, "metrics": {"miou": 0.5}})
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left behind
    loaded, ckpt = load_checkpoint(path)
    loaded.eval()
    assert ckpt["iteration"] == 42 and ckpt["config"] == model.config
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(bad)
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "x.pt", small(), {"model": 1})


@pytest.mark.parametrize(
    "kw, param",
    [
        (dict(backbone="resnet7"), "model.backbone: unknown 'resnet7'"),
        (dict(norm="layer"), "model.norm"),
        (dict(num_layers=5), "model.num_layers"),
        (dict(aspp_rates=()), "model.aspp_rates"),
        (dict(group_norm_groups=5), "model.group_norm_groups"),
        (dict(num_classes=0), "model.num_classes"),
        (dict(norm="group", pretrained="imagenet"), "model.pretrained"),
    ],
)
def test_bad_arguments(kw, param):
    with pytest.raises(ValueError, match=param.replace(".", r"\.")):
        small(**kw)


def test_imagenet_weights_are_read_offline_never_downloaded(tmp_path, monkeypatch):
    """pretrained 'imagenet' reads torchvision's file from $TORCH_HOME/hub/checkpoints/: missing, it is an error
    naming the file, its address and the folder; a file whose sha256 disagrees with its name is refused; the
    right file initialises the backbone."""
    import hashlib
    from types import SimpleNamespace

    from videoda.model.deeplabv2 import imagenet_weights_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    hub = tmp_path / "th/hub/checkpoints"
    with pytest.raises(FileNotFoundError, match=r"resnet18-f37072fd\.pth.*download https://download\.pytorch"):
        small(norm="frozen_batch", pretrained="imagenet")
    hub.mkdir(parents=True)
    (hub / "resnet18-f37072fd.pth").write_bytes(b"partial")
    with pytest.raises(ValueError, match="partial or corrupt download"):
        small(norm="frozen_batch", pretrained="imagenet")
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), hub / "w.pth")
    prefix = hashlib.sha256((hub / "w.pth").read_bytes()).hexdigest()[:8]
    (hub / "w.pth").rename(hub / f"resnet18-{prefix}.pth")
    url = f"https://download.pytorch.org/models/resnet18-{prefix}.pth"
    monkeypatch.setattr(torchvision.models, "get_weight", lambda name: SimpleNamespace(url=url))
    assert imagenet_weights_file("resnet18") == hub / f"resnet18-{prefix}.pth"
    model = small(norm="frozen_batch", pretrained="imagenet")
    assert torch.equal(model.backbone.conv1.weight, resnet.conv1.weight)
    assert torch.equal(model.backbone.layer2[0].bn1.running_mean, resnet.layer2[0].bn1.running_mean)
