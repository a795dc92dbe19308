"""The ConvNet plugin: published MACs, hand-counted parameters, sites and branches (see also test_families)."""
from __future__ import annotations

import pytest
import torch
from timm.models.convnext import ConvNeXt, ConvNeXtBlock
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from effrank_bench.specs import ArchitectureSpec, ModelRequest

PRESETS = ["micro_convnet", "resnet18", "resnet50", "convnext_tiny"]
MICRO = ModelRequest(num_classes=10, in_chans=1, input_size=32)


def on_meta(spec: ArchitectureSpec) -> nn.Module:
    """The preset's structure without allocating or initialising its weights."""
    with torch.device("meta"):
        return spec.build(spec.native_request())


# --- cost: published MACs and hand-counted parameters --------------------------------------


def test_resnet18_conv_target_costs(measure_json):
    teacher, (student,) = measure_json("resnet18", "conv", "8")
    assert teacher["macs"] == pytest.approx(1.82e9, rel=0.01)  # timm's published 1.82 GMACs at 224
    # The 16 3×3 convs of the stages (in→out): 4× 64→64; 64→128 and 3× 128→128; 128→256 and
    # 3× 256→256; 256→512 and 3× 512→512. Their full weights, 9·Σ in·out = 9·1,220,608 = 10,985,472,
    # become rank-8 pairs of r·(9·in + out) each (no bias), Σ (9·in + out) = 2,560 + 4,544 + 9,088
    # + 18,176 = 34,368, so 8·34,368 = 274,944; the rest of the 11,689,512 stays.
    assert teacher["params"] == 11_689_512
    assert student["factorized_params"] == 274_944
    assert student["params"] == 11_689_512 - 10_985_472 + 274_944
    assert student["macs"] < teacher["macs"] / 2


# --- sites -------------------------------------------------------------------------------


# (conv sites, mlp sites): the counts the plugin's docstring spells out per preset.
SITE_COUNTS = {"micro_convnet": (8, 3), "resnet18": (16, 3), "resnet50": (16, 36), "convnext_tiny": (3, 36)}


@pytest.mark.parametrize("name", PRESETS)
def test_sites_are_dense_layers_and_joint_is_their_union(architecture, name):
    spec = architecture(name)
    model = on_meta(spec)
    paths = {target: [site.path for site in spec.sites(model, target)] for target in ("conv", "mlp", "joint")}
    for target, target_paths in paths.items():
        assert len(target_paths) == len(set(target_paths)), target
        for path in target_paths:
            layer = model.get_submodule(path)
            assert isinstance(layer, (nn.Conv2d, nn.Linear)), path
            assert getattr(layer, "groups", 1) == 1, path
            assert path.startswith(("layer", "stages.")), path  # never the stem or the head
    assert all(model.get_submodule(p).kernel_size != (1, 1) for p in paths["conv"])
    assert all(getattr(model.get_submodule(p), "kernel_size", (1, 1)) == (1, 1) for p in paths["mlp"])
    assert set(paths["joint"]) == set(paths["conv"]) | set(paths["mlp"])
    assert (len(paths["conv"]), len(paths["mlp"])) == SITE_COUNTS[name]


def test_convnext_sites_skip_depthwise_convs(architecture):
    spec = architecture("convnext_tiny")
    model = on_meta(spec)
    assert [s.path for s in spec.sites(model, "conv")] == [
        "stages.1.downsample.1", "stages.2.downsample.1", "stages.3.downsample.1"]
    depthwise = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 18  # one 7×7 per block, none of them a site


# --- branches ----------------------------------------------------------------------------


@pytest.mark.parametrize("name, blocks", [("micro_convnet", 4), ("resnet18", 8), ("resnet50", 16),
                                          ("convnext_tiny", 18)])
def test_one_branch_per_block(architecture, name, blocks):
    spec = architecture(name)
    assert len(spec.branches(on_meta(spec))) == blocks


def tiny_bottleneck_resnet() -> nn.Module:
    return ResNet(Bottleneck, layers=(1, 1, 1, 1), channels=(8, 8, 8, 8), stem_width=8, in_chans=1, num_classes=10)


def tiny_convnext() -> nn.Module:
    return ConvNeXt(in_chans=1, num_classes=10, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))


@pytest.mark.parametrize("name, build", [
    ("micro_convnet", None),  # the preset itself, at the digits' 32×32
    ("resnet50", tiny_bottleneck_resnet),
    ("convnext_tiny", tiny_convnext),
], ids=["basic-block", "bottleneck", "convnext-block"])
def test_branch_is_the_residual_branch_before_the_add(architecture, scrambled, block_io, name, build):
    # For every block: output == act(branch + shortcut(input)), act the identity for ConvNeXt.
    spec = architecture(name)
    model = scrambled(build or (lambda: spec.build(MICRO)))
    branches = spec.branches(model)
    blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck, ConvNeXtBlock))]
    assert len(blocks) == len(branches)
    seen, features = block_io(model, blocks, branches, torch.randn(2, 1, 32, 32))
    for block, (x, out), branch in zip(blocks, seen, features):
        shortcut = block.shortcut(x) if name == "convnext_tiny" else (
            x if block.downsample is None else block.downsample(x))
        added = branch.movedim(-1, 1) + shortcut
        expected = added if name == "convnext_tiny" else torch.relu(added)
        torch.testing.assert_close(out, expected)
