"""Backbones: shapes, sizes, the registry, and Lite0 parity with an independent reference."""
from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import CheckpointError, FewShotError, ModelInputError
from engine.models import (
    BACKBONES,
    Conv4,
    Lite0,
    ResNet12,
    UnknownBackboneError,
    build_backbone,
    build_lite0,
    default_preprocessing,
)
from engine.models import lite0 as lite0_module


@pytest.fixture(scope="module")
def lite0() -> Lite0:
    return build_lite0()


@pytest.mark.parametrize("channels, size, out_dim", [(1, 28, 64), (3, 84, 1600)])
def test_conv4_shapes(channels, size, out_dim):
    model = Conv4(in_channels=channels, image_size=size).eval()
    assert model.out_dim == out_dim
    assert model(torch.randn(5, channels, size, size)).shape == (5, out_dim)


def test_conv4_parameter_count_matches_the_papers():
    # conv 1->64 (640) + 3 x conv 64->64 (36,928) + 4 BN (128 each) = 111,936
    n = sum(p.numel() for p in Conv4(in_channels=1, image_size=28).parameters())
    assert n == 111_936


def test_conv4_refuses_an_unbatched_image():
    with pytest.raises(ModelInputError, match=r"\(N, C, H, W\)"):
        Conv4(1, 28)(torch.randn(1, 28, 28))


@pytest.mark.parametrize("channels, size", [(3, 84), (1, 28)])
def test_resnet12_shapes(channels, size):
    model = ResNet12(in_channels=channels, image_size=size).eval()
    assert model.out_dim == 640
    with torch.no_grad():
        assert model(torch.randn(2, channels, size, size)).shape == (2, 640)


def test_resnet12_widths_and_shortcuts():
    model = ResNet12(3, 84)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs if c.kernel_size == (1, 1)] == [64, 160, 320, 640]
    assert len([c for c in convs if c.kernel_size == (3, 3)]) == 12


def test_lite0_shapes(lite0):
    assert lite0.out_dim == 1280 and lite0.name == "lite0"
    with torch.no_grad():
        x = torch.randn(2, 3, 224, 224)
        assert lite0(x).shape == (2, 1280)
        assert lite0.classify(x).shape == (2, 1000)


def test_wrong_channels_and_size_say_what_to_do(lite0):
    with pytest.raises(ModelInputError, match="3-channel"):
        lite0(torch.randn(1, 1, 224, 224))
    with pytest.raises(ModelInputError, match="28x28"):
        Conv4(1, 28)(torch.randn(1, 1, 84, 84))
    with pytest.raises(ModelInputError, match="at least 16 px"):
        Conv4(1, 8)


# --- Lite0 against an independent implementation -------------------------------------

SKIMAGE_PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "motorcycle_left.png")


def _photo_batch() -> torch.Tensor:
    """Real photos shipped in scikit-image's wheel, resized and centre-cropped to 224 like lite0 expects."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    pre = default_preprocessing("lite0", 3, 224)
    mean = torch.tensor(pre.mean)[:, None, None]
    std = torch.tensor(pre.std)[:, None, None]
    batch = []
    for name in SKIMAGE_PHOTOS:
        im = Image.open(folder / name).convert("RGB")
        scale = 224 / min(im.size)
        im = im.resize((max(224, round(im.width * scale)), max(224, round(im.height * scale))), Image.BILINEAR)
        left, top = (im.width - 224) // 2, (im.height - 224) // 2
        im = im.crop((left, top, left + 224, top + 224))
        x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255
        batch.append((x - mean) / std)
    return torch.stack(batch)


def _timm_reference() -> torch.nn.Module:
    """timm's TF-ported EfficientNet-Lite0 (TF 'SAME' padding), given the packaged weights.

    timm names the tensors differently but keeps the same order, so weights
    are matched one by one with their shapes checked.
    """
    import timm

    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    shipped = torch.load(lite0_module.packaged_weights_path(), map_location="cpu", weights_only=True)
    target = ref.state_dict()
    assert len(shipped) == len(target)
    mapped = {}
    for (src_key, value), dst_key in zip(shipped.items(), target):
        assert value.shape == target[dst_key].shape, (src_key, dst_key)
        mapped[dst_key] = value
    ref.load_state_dict(mapped, strict=True)
    return ref


def test_lite0_matches_timm_reference_on_real_photos(lite0):
    ref = _timm_reference()
    x = _photo_batch()
    with torch.no_grad():
        ours_feat, ours_logits = lite0(x), lite0.classify(x)
        ref_feat = ref.forward_head(ref.forward_features(x), pre_logits=True)
        ref_logits = ref(x)
    assert ours_feat.shape == ref_feat.shape == (len(SKIMAGE_PHOTOS), 1280)
    assert (ours_feat - ref_feat).abs().max().item() < 1e-4
    assert (ours_logits - ref_logits).abs().max().item() < 1e-4
    # The checkpoint really is an ImageNet classifier under this preprocessing:
    # the cat photo lands in the domestic-cat classes, the coffee on espresso.
    top1 = ours_logits.argmax(1).tolist()
    assert top1[0] in range(281, 286)  # tabby .. Egyptian cat
    assert top1[1] == 967  # espresso


def test_lite0_tf_same_padding_on_odd_sizes(lite0):
    # A stride-2 conv on an odd size pads evenly; on an even size one more at the end.
    assert lite0_module.TFSamePad.amounts(224, 3, 2) == (0, 1)
    assert lite0_module.TFSamePad.amounts(224, 5, 2) == (1, 2)
    assert lite0_module.TFSamePad.amounts(225, 3, 2) == (1, 1)
    with torch.no_grad():
        assert lite0(torch.randn(1, 3, 225, 199)).shape == (1, 1280)


def test_lite0_load_never_touches_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("lite0 tried to download")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load", refuse)
    model = build_backbone("lite0", channels=3, image_size=224)
    assert isinstance(model, Lite0) and not model.training


def test_lite0_bad_weights_file_is_a_checkpoint_error(tmp_path):
    bad = tmp_path / "lite0.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="not an EfficientNet-Lite0 checkpoint"):
        build_lite0(weights_path=bad)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        build_lite0(weights_path=tmp_path / "junk.pth")


# --- registry -------------------------------------------------------------------------


@pytest.mark.parametrize("name, channels, size, out_dim", [
    ("conv4", 1, 28, 64), ("conv4", 3, 84, 1600), ("resnet12", 3, 84, 640), ("resnet12", 1, 28, 640),
])
def test_build_backbone(name, channels, size, out_dim):
    model = build_backbone(name, channels=channels, image_size=size)
    assert model.name == name and model.out_dim == out_dim
    assert model.in_channels == channels and model.image_size == size


def test_unknown_backbone_lists_the_valid_names():
    with pytest.raises(UnknownBackboneError) as info:
        build_backbone("vgg16", channels=3, image_size=84)
    assert isinstance(info.value, FewShotError)
    for name in BACKBONES:
        assert name in str(info.value)
    with pytest.raises(UnknownBackboneError):
        default_preprocessing("vgg16", 3, 84)


def test_lite0_refuses_grayscale_channels():
    with pytest.raises(ModelInputError, match="3-channel"):
        build_backbone("lite0", channels=1, image_size=224)


def test_default_preprocessing():
    omniglot = default_preprocessing("conv4", 1, 28)
    assert (omniglot.size, omniglot.channels, omniglot.invert, omniglot.resize) == ((28, 28), 1, True, "stretch")
    assert (omniglot.mean, omniglot.std) == ((0.0,), (1.0,))
    photos = default_preprocessing("resnet12", 3, 84)
    assert (photos.size, photos.channels, photos.invert, photos.resize) == ((84, 84), 3, False, "stretch")
    assert photos.mean == (0.485, 0.456, 0.406) and photos.std == (0.229, 0.224, 0.225)
    lite = default_preprocessing("lite0", 3, 224)
    assert lite.size == (224, 224) and lite.resize == "shorter_side_center_crop"
    # (x - 127) / 128 on 0..255 is the same as (x/255 - mean) / std
    for v in (0, 127, 255):
        assert abs((v / 255 - lite.mean[0]) / lite.std[0] - (v - 127) / 128) < 1e-9
