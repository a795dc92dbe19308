"""MLP-Mixers from timm: Mixer-B/16 and a micro Mixer for the embedded digits data.

The token-mixing MLP plays the role of attention, so ``attention`` factorizes
``blocks.N.mlp_tokens.fc1``/``fc2``, ``mlp`` the channel-mixing ``blocks.N.mlp_channels.fc1``/``fc2``,
and ``joint`` both; the patch embedding, norms and head stay full rank.
"""
from __future__ import annotations

from torch import nn

from effrank_bench import hookimpl
from effrank_bench.specs import ArchitectureSpec, Branch, ModelRequest, Site
from effrank_bench_plugins.builders import IMAGE_RECIPE, refuse_pretrained, timm_builder, timm_preprocess
from effrank_bench_plugins.patch_embed import with_patch_matmul


def _token_mixing(model: nn.Module) -> list[Site]:
    return [Site(path=f"blocks.{i}.mlp_tokens.{fc}") for i in range(len(model.blocks)) for fc in ("fc1", "fc2")]


def _channel_mixing(model: nn.Module) -> list[Site]:
    return [Site(path=f"blocks.{i}.mlp_channels.{fc}") for i in range(len(model.blocks)) for fc in ("fc1", "fc2")]


def _branches(model: nn.Module) -> list[Branch]:
    # Both MLP outputs come before the residual add (drop_path is an identity without stochastic
    # depth). The token-mixing MLP runs on the transposed (B, C, N) input, so its channels are dim 1.
    return [branch for block in model.blocks
            for branch in (Branch(block.mlp_tokens, channel_dim=1), Branch(block.mlp_channels, channel_dim=-1))]


_TARGETS = {"attention": _token_mixing, "mlp": _channel_mixing}  # joint: the two together (ArchitectureSpec adds it)


def _build_micro(request: ModelRequest) -> nn.Module:
    from timm.models.mlp_mixer import MlpMixer

    refuse_pretrained("micro_mixer", request)
    # Patch 1 gives 64 tokens on an 8×8 image and a token MLP of width 32, so the default
    # rank grid (up to 32) fits the token-mixing layers.
    return MlpMixer(img_size=request.input_size, patch_size=1, in_chans=request.in_chans,
                    num_classes=request.num_classes, num_blocks=4, embed_dim=32, mlp_ratio=(1.0, 2.0))


# timm's default pretrained tag of mixer_b16_224, pinned so a new timm default cannot change the teacher.
_MIXER_B16 = "mixer_b16_224.goog_in21k_ft_in1k"


@hookimpl
def register_architectures(register):
    register(ArchitectureSpec(
        name="micro_mixer",
        description="timm MLP-Mixer, 8×8 input, patch 1 (64 tokens), 4 blocks of width 32: trains in seconds on CPU",
        build=with_patch_matmul(_build_micro), targets=_TARGETS, branches=_branches,
        input_size=8, in_chans=1, num_classes=10,
    ))
    register(ArchitectureSpec(
        name="mixer_b16",
        description="Mixer-B/16 at 224 (timm mixer_b16_224), token-mixing MLP as its attention",
        build=with_patch_matmul(timm_builder(_MIXER_B16, fixed_size=True)), targets=_TARGETS, branches=_branches,
        input_size=224, preprocess=timm_preprocess(_MIXER_B16, 224), recipe=IMAGE_RECIPE,
    ))
