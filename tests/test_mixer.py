"""The MLP-Mixer plugin: published MACs, hand-counted parameters, sites and branches (see also test_families)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from effrank_bench.factorize import factorize, full_rank
from effrank_bench.measure import count_macs, count_params
from effrank_bench.specs import ModelRequest

MICRO = ModelRequest(num_classes=10, in_chans=1, input_size=8)


# --- cost: published MACs and hand-counted parameters --------------------------------------


def test_mixer_b16_attention_target_costs(architecture):
    spec = architecture("mixer_b16")
    with torch.device("meta"):  # the counts need shapes only, not 60M initialised weights
        teacher = spec.build(spec.native_request())
        student = copy.deepcopy(teacher)
        replaced = factorize(student, spec.sites(student, "attention"), 8, init="random")
    assert count_macs(teacher, torch.randn(1, 3, 224, 224, device="meta")) == pytest.approx(12.62e9, rel=0.01)
    # timm's published 12.62 GMACs at 224. Each of the 12 blocks mixes 196 tokens through 384 hidden
    # units: fc1 196→384 and fc2 384→196, 2·196·384 = 150,528 weights. At rank 8 each becomes
    # 8·(196 + 384) = 4,640, so a block keeps 9,280 plus its biases (384 + 196), 9,860; 12 blocks: 118,320.
    assert count_params(teacher) == (59_880_472, 0)
    assert count_params(student, replaced.values()) == (59_880_472 - 12 * 150_528 + 12 * 9_280, 118_320)


# --- sites -------------------------------------------------------------------------------


@pytest.mark.parametrize("name, blocks", [("micro_mixer", 4), ("mixer_b16", 12)])
def test_sites_are_the_token_and_channel_mlps(architecture, name, blocks):
    spec = architecture(name)
    with torch.device("meta"):
        model = spec.build(spec.native_request())
    paths = {target: [site.path for site in spec.sites(model, target)] for target in ("attention", "mlp", "joint")}
    for target_paths in paths.values():
        assert len(target_paths) == len(set(target_paths))
        assert all(isinstance(model.get_submodule(p), nn.Linear) for p in target_paths)
    assert paths["attention"] == [f"blocks.{i}.mlp_tokens.{fc}" for i in range(blocks) for fc in ("fc1", "fc2")]
    assert paths["mlp"] == [f"blocks.{i}.mlp_channels.{fc}" for i in range(blocks) for fc in ("fc1", "fc2")]
    assert set(paths["joint"]) == set(paths["attention"]) | set(paths["mlp"])


def test_micro_mixer_token_mlp_fits_the_default_rank_grid(architecture):
    # The default grid goes up to rank 32; the token-mixing layers (64 tokens, width 32) reach it.
    spec = architecture("micro_mixer")
    model = spec.build(MICRO)
    sites = spec.sites(model, "attention")
    assert {full_rank(model.get_submodule(s.path)) for s in sites} == {32}


# --- branches ----------------------------------------------------------------------------


def test_branches_are_the_two_mlp_outputs_before_each_residual_add(architecture, scrambled, block_io):
    spec = architecture("micro_mixer")
    model = scrambled(lambda: spec.build(MICRO))
    branches = spec.branches(model)
    assert len(branches) == 2 * len(model.blocks)
    seen, features = block_io(model, model.blocks, branches, torch.randn(2, 1, 8, 8))
    # Channels last, the token-mixing output (B, C, N) lines up with the tokens (B, N, C),
    # so each block's output is its input plus its two branch outputs.
    for (x, out), tokens, channels in zip(seen, features[0::2], features[1::2]):
        torch.testing.assert_close(out, x + tokens + channels)
