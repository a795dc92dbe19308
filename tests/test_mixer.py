"""The MLP-Mixer plugin: published MACs, hand-counted parameters, sites, branches and a tiny sweep."""
from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import timm
import torch
from torch import nn

from effrank_bench.cli import main
from effrank_bench.config import RunConfig
from effrank_bench.errors import CheckpointError
from effrank_bench.factorize import factorize, full_rank
from effrank_bench.registry import default_registry
from effrank_bench.specs import ArchitectureSpec, ModelRequest
from effrank_bench.sweep import run_sweep
from effrank_bench.taps import BranchTap

MICRO = ModelRequest(num_classes=10, in_chans=1, input_size=8)


def arch(name: str) -> ArchitectureSpec:
    return default_registry().architecture(name)


def scrambled(build: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """A model from ``build``, seeded, with every parameter perturbed, in eval mode.

    timm zero-initialises a Mixer's head and nearly zeroes its MLP biases; the noise
    makes every number count.
    """
    torch.manual_seed(seed)
    model = build()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def micro_mixer() -> nn.Module:
    return arch("micro_mixer").build(MICRO)


# --- cost: published MACs and hand-counted parameters --------------------------------------


def test_mixer_b16_attention_target_costs(capsys):
    code = main(["measure", "--arch", "mixer_b16", "--target", "attention", "--ranks", "8",
                 "--json", "--repeats", "1", "--warmup", "0", "--device", "cpu"])
    out, _ = capsys.readouterr()
    assert code == 0
    table = json.loads(out)
    teacher, (student,) = table["teacher"], table["students"]
    assert teacher["macs"] == pytest.approx(12.62e9, rel=0.01)  # timm's published 12.62 GMACs at 224
    # Each of the 12 blocks mixes 196 tokens through 384 hidden units: fc1 196→384 and fc2 384→196,
    # 2·196·384 = 150,528 weights. At rank 8 each becomes 8·(196 + 384) = 4,640, so a block keeps
    # 9,280 plus its biases (384 + 196), 9,860; 12 blocks: 118,320.
    assert teacher["params"] == 59_880_472
    assert student["factorized_params"] == 118_320
    assert student["params"] == 59_880_472 - 12 * 150_528 + 12 * 9_280


def test_conv_is_refused_naming_the_mixer_targets(capsys):
    code = main(["run", "--arch", "micro_mixer", "--target", "conv"])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.strip() == "error: micro_mixer does not support target 'conv'; its targets are: attention, mlp, joint"


# --- sites -------------------------------------------------------------------------------


@pytest.mark.parametrize("name, blocks", [("micro_mixer", 4), ("mixer_b16", 12)])
def test_sites_are_the_token_and_channel_mlps(name, blocks):
    spec = arch(name)
    with torch.device("meta"):
        model = spec.build(spec.native_request())
    paths = {target: [site.path for site in spec.sites(model, target)] for target in ("attention", "mlp", "joint")}
    for target_paths in paths.values():
        assert len(target_paths) == len(set(target_paths))
        assert all(isinstance(model.get_submodule(p), nn.Linear) for p in target_paths)
    assert paths["attention"] == [f"blocks.{i}.mlp_tokens.{fc}" for i in range(blocks) for fc in ("fc1", "fc2")]
    assert paths["mlp"] == [f"blocks.{i}.mlp_channels.{fc}" for i in range(blocks) for fc in ("fc1", "fc2")]
    assert set(paths["joint"]) == set(paths["attention"]) | set(paths["mlp"])


def test_micro_mixer_token_mlp_fits_the_default_rank_grid():
    # The default grid goes up to rank 32; the token-mixing layers (64 tokens, width 32) reach it.
    model = micro_mixer()
    sites = arch("micro_mixer").sites(model, "attention")
    assert {full_rank(model.get_submodule(s.path)) for s in sites} == {32}


@pytest.mark.parametrize("target", ["attention", "mlp", "joint"])
def test_full_rank_micro_mixer_reproduces_the_teachers_logits(target):
    spec = arch("micro_mixer")
    teacher, student = scrambled(micro_mixer), scrambled(micro_mixer)
    sites = spec.sites(student, target)
    rank = max(full_rank(student.get_submodule(site.path)) for site in sites)
    factorize(student, sites, rank, init="svd")
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        t, s = teacher(x), student(x)
    assert float(t.norm()) > 1.0
    assert float((t - s).norm() / t.norm()) < 1e-5


# --- branches ----------------------------------------------------------------------------


def test_branches_are_the_two_mlp_outputs_before_each_residual_add():
    model = scrambled(micro_mixer)
    branches = arch("micro_mixer").branches(model)
    assert len(branches) == 2 * len(model.blocks)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    handles = [block.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
               for block in model.blocks]
    tap = BranchTap(branches)
    with torch.no_grad():
        features = tap.forward(model, torch.randn(2, 1, 8, 8)).features
    for handle in handles:
        handle.remove()
    tap.close()
    # Channels last, the token-mixing output (B, C, N) lines up with the tokens (B, N, C),
    # so each block's output is its input plus its two branch outputs.
    for (x, out), tokens, channels in zip(seen, features[0::2], features[1::2]):
        torch.testing.assert_close(out, x + tokens + channels)


def test_branch_shapes_are_channel_last_and_match_a_rank_2_student():
    spec = arch("micro_mixer")
    teacher, student = scrambled(micro_mixer), scrambled(micro_mixer)
    factorize(student, spec.sites(student, "joint"), 2)
    shapes = []
    for model in (teacher, student):
        tap = BranchTap(spec.branches(model))
        with torch.no_grad():
            shapes.append([tuple(f.shape) for f in tap.forward(model, torch.randn(3, 1, 8, 8)).features])
        tap.close()
    assert shapes[0] == shapes[1] == [(3, 64, 32)] * 8  # 64 tokens of width 32, two branches × 4 blocks


# --- pretrained weights --------------------------------------------------------------------


def test_micro_mixer_has_no_pretrained_weights():
    with pytest.raises(CheckpointError, match="micro_mixer has no pretrained weights.*--teacher-checkpoint"):
        arch("micro_mixer").build(MICRO.model_copy(update={"pretrained": True}))


def test_unreachable_pretrained_weights_point_to_teacher_checkpoint(monkeypatch):
    def offline(name, pretrained=False, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(timm, "create_model", offline)
    request = arch("mixer_b16").native_request().model_copy(update={"pretrained": True})
    message = r"mixer_b16_224\.goog_in21k_ft_in1k .*OSError: no network.*--teacher-checkpoint PATH"
    with pytest.raises(CheckpointError, match=message):
        arch("mixer_b16").build(request)


# --- end to end ----------------------------------------------------------------------------


def test_tiny_micro_mixer_sweep(tmp_path):
    config = RunConfig(arch="micro_mixer", target="attention", ranks=(2, 4), epochs=1, teacher_epochs=2,
                       batch_size=128, latency_repeats=2, device="cpu", out=tmp_path / "run")
    records = run_sweep(config).records()
    assert [(r.rank, r.status) for r in records] == [(2, "ok"), (4, "ok")]
    # Per block, fc1 64→32 and fc2 32→64 become r·(64 + 32) each plus their biases (32 + 64):
    # 2·96·r + 96, so 4 blocks hold 4·(192·r + 96): 1,920 at r = 2 and 3,456 at r = 4. The rest
    # stays: patch embedding 1→32 (64), per block two norms (128) and the channel MLP 32→64→32
    # (4,192), final norm (64) and head 32→10 (330): 64 + 4·4,320 + 64 + 330 = 17,738.
    assert [r.cost.factorized_params for r in records] == [1_920, 3_456]
    assert [r.cost.params for r in records] == [17_738 + 1_920, 17_738 + 3_456]
    assert all(0.0 <= r.test_accuracy <= 1.0 for r in records)
