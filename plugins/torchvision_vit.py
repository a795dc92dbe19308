"""torchvision's ViT-B/32 (the reference paper's teacher) as a timm VisionTransformer: same layers, its weights."""
from __future__ import annotations

import re
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn

from effrank_bench.errors import CheckpointError, one_line
from effrank_bench.specs import ModelRequest, Preprocess

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

# torchvision key (after the encoder layer's prefix is cut) -> timm key; the blocks' parts keep their order.
_BLOCK = {
    "ln_1": "norm1", "ln_2": "norm2",
    "self_attention.out_proj": "attn.proj",
    "mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2",
}
_TOP = {
    "conv_proj": "patch_embed.proj", "encoder.ln": "norm", "heads.head": "head",
}
_LAYER = re.compile(r"^encoder\.layers\.encoder_layer_(\d+)\.(.+)$")


def _timm_key(key: str) -> str:
    if key == "class_token":
        return "cls_token"
    if key == "encoder.pos_embedding":
        return "pos_embed"
    if layer := _LAYER.match(key):
        block, rest = layer.groups()
        # nn.MultiheadAttention keeps q, k, v stacked in one in_proj, in the order timm's fused qkv splits them.
        if rest in ("self_attention.in_proj_weight", "self_attention.in_proj_bias"):
            return f"blocks.{block}.attn.qkv.{rest.rsplit('_', 1)[1]}"
        module, _, param = rest.rpartition(".")
        if module in _BLOCK:
            return f"blocks.{block}.{_BLOCK[module]}.{param}"
    else:
        module, _, param = key.rpartition(".")
        if module in _TOP:
            return f"{_TOP[module]}.{param}"
    raise CheckpointError(f"'{key}' is not a key of torchvision's vit_b_32 (a representation layer, or another "
                          "model?); only the plain ViT with a linear head converts")


def timm_state_dict_from_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision ``vit_b_*`` keys renamed to timm's VisionTransformer's; timm's own keys are returned as they are."""
    if "conv_proj.weight" not in state:
        return dict(state)
    return {_timm_key(key): value for key, value in state.items()}


def _vit_b32(request: ModelRequest) -> VisionTransformer:
    from timm.models.vision_transformer import VisionTransformer

    # torchvision's vit_b_32: LayerNorm eps 1e-6, biased qkv, class token, exact GELU, pre-norm blocks,
    # a final norm and a linear head on the class token.
    return VisionTransformer(
        img_size=request.input_size, patch_size=32, in_chans=request.in_chans, num_classes=request.num_classes,
        embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, qkv_bias=True, class_token=True,
        global_pool="token", norm_layer=partial(nn.LayerNorm, eps=1e-6), act_layer=nn.GELU,
    )


def _fetch_weights() -> dict[str, torch.Tensor]:
    from torchvision.models import ViT_B_32_Weights

    weights = ViT_B_32_Weights.IMAGENET1K_V1
    try:
        # torch's hub cache (~/.cache/torch/hub/checkpoints) is read first; the network only when it lacks the file.
        return weights.get_state_dict(progress=False, weights_only=True)
    except Exception as err:  # noqa: BLE001 - offline, a proxy, a bad hash: the way out is the same
        raise CheckpointError(
            f"cannot fetch torchvision's {weights} ({one_line(err)}); download {weights.url} where you have "
            "network access and pass the file with --teacher-checkpoint PATH"
        ) from None


def _fit(model: VisionTransformer, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The converted weights shaped for ``model``: its channels and grid kept, a head of other classes left out."""
    from timm.layers import resample_abs_pos_embed
    from timm.models import adapt_input_conv

    state = dict(state)
    own = model.state_dict()
    if state["patch_embed.proj.weight"].shape[1] != model.patch_embed.proj.in_channels:
        state["patch_embed.proj.weight"] = adapt_input_conv(model.patch_embed.proj.in_channels,
                                                            state["patch_embed.proj.weight"])
    if state["pos_embed"].shape != own["pos_embed"].shape:
        state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], new_size=model.patch_embed.grid_size,
                                                    num_prefix_tokens=model.num_prefix_tokens)
    for key in ("head.weight", "head.bias"):
        if state[key].shape != own[key].shape:  # another number of classes: timm's fresh head stays
            del state[key]
    return state


def build_vit_b32_tv(request: ModelRequest) -> nn.Module:
    """``build`` of vit_b32_tv: pretrained, torchvision's IMAGENET1K_V1 weights, a new head for other classes."""
    torchvision_state = _fetch_weights() if request.pretrained else None  # offline fails before a model is built
    model = _vit_b32(request)
    if torchvision_state is not None:
        state = _fit(model, timm_state_dict_from_torchvision(torchvision_state))
        result = model.load_state_dict(state, strict=False)
        if set(result.missing_keys) - {"head.weight", "head.bias"} or result.unexpected_keys:
            raise CheckpointError(f"torchvision's ViT-B/32 weights do not fit: missing {result.missing_keys[:3]}, "
                                  f"unexpected {result.unexpected_keys[:3]}")
    return model


def preprocess() -> Preprocess:
    """What IMAGENET1K_V1 was evaluated with: shorter side to 256, center crop 224, ImageNet mean and std.

    The numbers of ``ViT_B_32_Weights.IMAGENET1K_V1.transforms()``, copied: importing torchvision.models at
    registration took 2.5 s of every command (tests/test_vit_preprocess.py checks them against torchvision's)."""
    return Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resize=256, crop=224,
                      interpolation="bilinear")
