"""Each preset's Preprocess is what its pretrained weights were evaluated with; micro presets have none,
so their data comes standardized by its own statistics."""
from __future__ import annotations

import numpy as np
import pytest
import timm.data
import torch
import torchvision
from timm.models import get_pretrained_cfg

from effrank_bench.registry import default_registry
from effrank_bench.specs import DataRequest, Preprocess
from effrank_bench_plugins.datasets import digits as bundled_digits

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
HALF = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}

# resize = floor(224 / crop_pct), as timm's eval transform: augreg ViT 0.9 -> 248, Mixer 0.875 -> 256,
# the a1 ResNets and ConvNeXt's in12k_ft_in1k 0.95 -> 235; torchvision's ViT: 256.
EXPECTED = {
    "vit_b32": Preprocess(**HALF, resize=248, crop=224, interpolation="bicubic"),
    "vit_b32_tv": Preprocess(**IMAGENET, resize=256, crop=224, interpolation="bilinear"),
    "mixer_b16": Preprocess(**HALF, resize=256, crop=224, interpolation="bicubic"),
    "resnet18": Preprocess(**IMAGENET, resize=235, crop=224, interpolation="bicubic"),
    "resnet50": Preprocess(**IMAGENET, resize=235, crop=224, interpolation="bicubic"),
    "convnext_tiny": Preprocess(**IMAGENET, resize=235, crop=224, interpolation="bicubic"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_pretrained_presets_carry_their_weights_preprocessing(name):
    assert default_registry().architecture(name).preprocess == EXPECTED[name]


@pytest.mark.parametrize("name", [n for n in default_registry().names("architecture") if n.startswith("micro_")])
def test_models_trained_here_take_their_data_sets_statistics(name):
    assert default_registry().architecture(name).preprocess is None


@pytest.mark.parametrize(("name", "tag"), [
    ("vit_b32", "vit_base_patch32_224.augreg_in21k_ft_in1k"),
    ("mixer_b16", "mixer_b16_224.goog_in21k_ft_in1k"),
    ("resnet18", "resnet18.a1_in1k"),
    ("resnet50", "resnet50.a1_in1k"),
    ("convnext_tiny", "convnext_tiny.in12k_ft_in1k"),
])
def test_timm_presets_agree_with_timms_own_eval_transform(name, tag):
    # The presets copy these numbers (registering them imports no timm): this is what keeps the copies true.
    config = timm.data.resolve_data_config(pretrained_cfg=get_pretrained_cfg(tag).to_dict())
    resize, crop, _, normalize = timm.data.create_transform(**config).transforms
    preprocess = default_registry().architecture(name).preprocess
    assert (resize.size, crop.size, resize.interpolation.value) == (preprocess.resize, (224, 224),
                                                                    preprocess.interpolation)
    assert tuple(normalize.mean.tolist()) == pytest.approx(preprocess.mean)
    assert tuple(normalize.std.tolist()) == pytest.approx(preprocess.std)


def test_the_torchvision_preset_agrees_with_its_weights_transforms():
    transform = torchvision.models.ViT_B_32_Weights.IMAGENET1K_V1.transforms()
    preprocess = default_registry().architecture("vit_b32_tv").preprocess
    assert (transform.resize_size, transform.crop_size) == ([preprocess.resize], [preprocess.crop])
    assert transform.interpolation.value == preprocess.interpolation  # the preset copies it: this keeps it true
    assert (transform.mean, transform.std) == (list(preprocess.mean), list(preprocess.std))


def test_a_preprocess_that_cannot_be_is_refused():
    with pytest.raises(ValueError, match="at least the crop"):
        Preprocess(**HALF, resize=200, crop=224)
    with pytest.raises(ValueError, match="one value per channel"):
        Preprocess(mean=(0.5,), std=(0.5, 0.5), crop=224)


def test_digits_take_the_models_mean_and_std_folded_to_their_one_channel():
    digits = default_registry().dataset("digits")
    own = digits.load(DataRequest())
    pixels = torch.cat([own.train[i][0] for i in range(len(own.train))])
    # Standardized by the training split's own mean and std.
    assert abs(pixels.mean().item()) < 1e-5 and abs(pixels.std(unbiased=False).item() - 1) < 1e-4
    # vit_b32_tv's ImageNet statistics on one channel: their averages, .449 and .226.
    tv = digits.load(DataRequest(preprocess=default_registry().architecture("vit_b32_tv").preprocess))
    images = bundled_digits()[0] / 16  # load_digits' images (test_digits_tokens checks), without importing sklearn
    matches = [(tv.test[i][0][0].numpy() * 0.226 + 0.449 - images).reshape(len(images), -1) for i in range(3)]
    assert all(np.abs(m).max(axis=1).min() < 1e-5 for m in matches)
