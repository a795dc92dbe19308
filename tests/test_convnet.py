"""The ConvNet plugin: published MACs, hand-counted parameters, sites, branches and a tiny sweep."""
from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import timm
import torch
from timm.models.convnext import ConvNeXt, ConvNeXtBlock
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from effrank_bench.cli import main
from effrank_bench.config import RunConfig
from effrank_bench.errors import CheckpointError
from effrank_bench.factorize import factorize, full_rank
from effrank_bench.registry import default_registry
from effrank_bench.specs import ArchitectureSpec, ModelRequest
from effrank_bench.sweep import run_sweep
from effrank_bench.taps import BranchTap

PRESETS = ["micro_convnet", "resnet18", "resnet50", "convnext_tiny"]
MICRO = ModelRequest(num_classes=10, in_chans=1, input_size=32)


def arch(name: str) -> ArchitectureSpec:
    return default_registry().architecture(name)


def on_meta(name: str) -> nn.Module:
    """The preset's structure without allocating or initialising its weights."""
    spec = arch(name)
    with torch.device("meta"):
        return spec.build(spec.native_request())


def scrambled(build: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """A model from ``build``, seeded, with every parameter perturbed, in eval mode.

    timm zero-initialises the last BatchNorm of each residual branch, which would make
    every second conv irrelevant to the logits; the noise makes every number count.
    """
    torch.manual_seed(seed)
    model = build()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def micro_convnet() -> nn.Module:
    return arch("micro_convnet").build(MICRO)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- cost: published MACs and hand-counted parameters --------------------------------------


def test_resnet18_conv_target_costs(capsys):
    code, out, _ = run_cli(capsys, "measure", "--arch", "resnet18", "--target", "conv", "--ranks", "8",
                           "--json", "--repeats", "1", "--warmup", "0", "--device", "cpu")
    assert code == 0
    table = json.loads(out)
    teacher, (student,) = table["teacher"], table["students"]
    assert teacher["macs"] == pytest.approx(1.82e9, rel=0.01)  # timm's published 1.82 GMACs at 224
    # The 16 3×3 convs of the stages (in→out): 4× 64→64; 64→128 and 3× 128→128; 128→256 and
    # 3× 256→256; 256→512 and 3× 512→512. Their full weights, 9·Σ in·out = 9·1,220,608 = 10,985,472,
    # become rank-8 pairs of r·(9·in + out) each (no bias), Σ (9·in + out) = 2,560 + 4,544 + 9,088
    # + 18,176 = 34,368, so 8·34,368 = 274,944; the rest of the 11,689,512 stays.
    assert teacher["params"] == 11_689_512
    assert student["factorized_params"] == 274_944
    assert student["params"] == 11_689_512 - 10_985_472 + 274_944
    assert student["macs"] < teacher["macs"] / 2


def test_attention_is_refused_naming_the_convnet_targets(capsys):
    code, _, err = run_cli(capsys, "run", "--arch", "resnet18", "--target", "attention")
    assert code == 2
    assert err.strip() == "error: resnet18 does not support target 'attention'; its targets are: conv, mlp, joint"


# --- sites -------------------------------------------------------------------------------


# (conv sites, mlp sites): the counts the plugin's docstring spells out per preset.
SITE_COUNTS = {"micro_convnet": (8, 3), "resnet18": (16, 3), "resnet50": (16, 36), "convnext_tiny": (3, 36)}


@pytest.mark.parametrize("name", PRESETS)
def test_sites_are_dense_layers_and_joint_is_their_union(name):
    model, spec = on_meta(name), arch(name)
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


def test_convnext_sites_skip_depthwise_convs():
    model = on_meta("convnext_tiny")
    assert [s.path for s in arch("convnext_tiny").sites(model, "conv")] == [
        "stages.1.downsample.1", "stages.2.downsample.1", "stages.3.downsample.1"]
    depthwise = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 18  # one 7×7 per block, none of them a site


@pytest.mark.parametrize("target", ["conv", "mlp", "joint"])
def test_full_rank_micro_convnet_reproduces_the_teachers_logits(target):
    spec = arch("micro_convnet")
    teacher, student = scrambled(micro_convnet), scrambled(micro_convnet)
    sites = spec.sites(student, target)
    rank = max(full_rank(student.get_submodule(site.path)) for site in sites)
    factorize(student, sites, rank, init="svd")
    x = torch.randn(16, 1, 32, 32)
    with torch.no_grad():
        t, s = teacher(x), student.eval()(x)
    assert float(t.norm()) > 1.0
    assert float((t - s).norm() / t.norm()) < 1e-5


# --- branches ----------------------------------------------------------------------------


@pytest.mark.parametrize("name, blocks", [("micro_convnet", 4), ("resnet18", 8), ("resnet50", 16),
                                          ("convnext_tiny", 18)])
def test_one_branch_per_block(name, blocks):
    assert len(arch(name).branches(on_meta(name))) == blocks


def tiny_bottleneck_resnet() -> nn.Module:
    return ResNet(Bottleneck, layers=(1, 1, 1, 1), channels=(8, 8, 8, 8), stem_width=8, in_chans=1, num_classes=10)


def tiny_convnext() -> nn.Module:
    return ConvNeXt(in_chans=1, num_classes=10, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))


@pytest.mark.parametrize("name, build", [
    ("micro_convnet", micro_convnet),
    ("resnet50", tiny_bottleneck_resnet),
    ("convnext_tiny", tiny_convnext),
], ids=["basic-block", "bottleneck", "convnext-block"])
def test_branch_is_the_residual_branch_before_the_add(name, build):
    # For every block: output == act(branch + shortcut(input)), act the identity for ConvNeXt.
    model = scrambled(build)
    branches = arch(name).branches(model)
    blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck, ConvNeXtBlock))]
    assert len(blocks) == len(branches)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    handles = [block.register_forward_hook(lambda m, args, out: seen.append((args[0], out.clone())))
               for block in blocks]
    tap = BranchTap(branches)
    with torch.no_grad():
        features = tap.forward(model, torch.randn(2, 1, 32, 32)).features
    for handle in handles:
        handle.remove()
    tap.close()
    for block, (x, out), branch in zip(blocks, seen, features):
        shortcut = block.shortcut(x) if name == "convnext_tiny" else (
            x if block.downsample is None else block.downsample(x))
        added = branch.movedim(-1, 1) + shortcut
        expected = added if name == "convnext_tiny" else torch.relu(added)
        torch.testing.assert_close(out, expected)


def test_branch_shapes_are_channel_last_and_match_a_rank_2_student():
    spec = arch("micro_convnet")
    teacher, student = scrambled(micro_convnet), scrambled(micro_convnet)
    factorize(student, spec.sites(student, "joint"), 2)
    x = torch.randn(3, 1, 32, 32)
    shapes = []
    for model in (teacher, student):
        tap = BranchTap(spec.branches(model))
        with torch.no_grad():
            shapes.append([tuple(f.shape) for f in tap.forward(model, x).features])
        tap.close()
    # 32×32 → stem and max-pool → 8×8 in layer1, halved per stage; channels last.
    assert shapes[0] == shapes[1] == [(3, 8, 8, 16), (3, 4, 4, 32), (3, 2, 2, 64), (3, 1, 1, 128)]


# --- pretrained weights --------------------------------------------------------------------


def test_micro_convnet_has_no_pretrained_weights():
    with pytest.raises(CheckpointError, match="micro_convnet has no pretrained weights.*--teacher-checkpoint"):
        arch("micro_convnet").build(MICRO.model_copy(update={"pretrained": True}))


def test_unreachable_pretrained_weights_point_to_teacher_checkpoint(monkeypatch):
    def offline(name, pretrained=False, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(timm, "create_model", offline)
    request = arch("resnet50").native_request().model_copy(update={"pretrained": True})
    with pytest.raises(CheckpointError, match=r"resnet50\.a1_in1k .*OSError: no network.*--teacher-checkpoint PATH"):
        arch("resnet50").build(request)


# --- end to end ----------------------------------------------------------------------------


def test_tiny_micro_convnet_sweep(tmp_path):
    config = RunConfig(arch="micro_convnet", target="joint", ranks=(2, 4), epochs=1, teacher_epochs=2,
                       batch_size=128, latency_repeats=2, device="cpu", out=tmp_path / "run")
    records = run_sweep(config).records()
    assert [(r.rank, r.status) for r in records] == [(2, "ok"), (4, "ok")]
    # Joint sites (in→out, k): layer1 16→16 ×2 (3×3); layer2 16→32, 32→32 (3×3), 16→32 (1×1); layer3
    # and layer4 likewise at 32→64 and 64→128. Rank r costs r·(k²·in + out) per site: at r = 2,
    # 640 + 1,088 + 2,176 + 4,352 = 8,256 (twice that at r = 4). Their full weights are 305,664 of
    # the teacher's 310,226 parameters; stem, norms and head (4,562) stay.
    assert [r.cost.factorized_params for r in records] == [8_256, 16_512]
    assert [r.cost.params for r in records] == [4_562 + 8_256, 4_562 + 16_512]
    assert all(0.0 <= r.test_accuracy <= 1.0 for r in records)
