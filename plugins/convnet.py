"""ConvNets from timm (ResNet-18/50, ConvNeXt-T) and a micro ResNet for the embedded digits data.

What each target factorizes, walking the stages (timm's ``layer1``..``layer4`` or ``stages``):

- ``conv``: every dense (groups=1) k×k convolution with k > 1. ResNet-18 and micro_convnet:
  ``layerN.M.conv1`` and ``layerN.M.conv2`` (3×3); ResNet-50: ``layerN.M.conv2`` (3×3);
  ConvNeXt-T: its only dense spatial convs, the 2×2 stride-2 downsampling ``stages.{1,2,3}.downsample.1``
  (its 7×7 convs are depthwise).
- ``mlp``: every pointwise channel-mixing layer, 1×1 dense convs and Linears. ResNet-18 and
  micro_convnet: the 1×1 shortcut projections ``layer{2,3,4}.0.downsample.0``; ResNet-50: ``layerN.M.conv1``,
  ``layerN.M.conv3`` and ``layer{1,2,3,4}.0.downsample.0``; ConvNeXt-T: ``stages.N.blocks.M.mlp.fc1``/``fc2``.
- ``joint``: both.

Depthwise convs cannot be factorized as k×k conv in→r then 1×1 r→out, so they are never sites;
the stem and the head stay full rank. ``attention`` does not apply to a ConvNet.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from torch import nn

from effrank_bench import hookimpl
from effrank_bench.specs import ArchitectureSpec, Branch, ModelRequest, Site, TargetSpec
from effrank_bench_plugins.builders import refuse_pretrained, timm_builder, timm_preprocess


def _stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    # timm's ResNets name their stages layer1..layer4; its ConvNeXts keep them in one Sequential, `stages`.
    return [(name, child) for name, child in model.named_children()
            if name == "stages" or re.fullmatch(r"layer\d+", name)]


def _stage_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for prefix, stage in _stages(model):
        yield from stage.named_modules(prefix=prefix)


def _is_spatial(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups == 1 and module.kernel_size != (1, 1)


def _is_pointwise(module: nn.Module) -> bool:
    if isinstance(module, nn.Conv2d):
        return module.groups == 1 and module.kernel_size == (1, 1)
    return isinstance(module, nn.Linear)


def _selecting(*predicates: Callable[[nn.Module], bool]) -> Callable[[nn.Module], list[Site]]:
    def sites(model: nn.Module) -> list[Site]:
        return [Site(path=path) for path, module in _stage_layers(model) if any(p(module) for p in predicates)]

    return sites


_TARGETS = {
    "conv": _selecting(_is_spatial),
    "mlp": _selecting(_is_pointwise),
    "joint": _selecting(_is_spatial, _is_pointwise),
}


def _branch(block: nn.Module) -> Branch:
    from timm.models.convnext import ConvNeXtBlock
    from timm.models.resnet import Bottleneck

    if isinstance(block, ConvNeXtBlock):
        # drop_path (an Identity without stochastic depth) receives the MLP output already scaled by
        # the layer-scale gamma and permuted back to NCHW: the exact branch output before the residual add.
        # Hooking `mlp` instead would compare it before gamma.
        return Branch(block.drop_path, channel_dim=1)
    # The last norm ends the residual branch; timm then adds the shortcut into it in place,
    # which is why the tap copies what it records.
    return Branch(block.bn3 if isinstance(block, Bottleneck) else block.bn2, channel_dim=1)


def _branches(model: nn.Module) -> list[Branch]:
    from timm.models.convnext import ConvNeXtBlock
    from timm.models.resnet import BasicBlock, Bottleneck

    blocks = (module for _, module in _stage_layers(model)
              if isinstance(module, (BasicBlock, Bottleneck, ConvNeXtBlock)))
    return [_branch(block) for block in blocks]


def _build_micro(request: ModelRequest) -> nn.Module:
    from timm.models.resnet import BasicBlock, ResNet

    refuse_pretrained("micro_convnet", request)
    # The deep stem (3×3 convs 8, 8, 16 wide) hands layer1 the 16 channels it keeps, so, as in
    # ResNet-18, only layer2..4 need a 1×1 shortcut projection; at 32×32 (digits upsampled) layer1 sees 8×8.
    return ResNet(BasicBlock, layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), stem_type="deep", stem_width=8,
                  in_chans=request.in_chans, num_classes=request.num_classes)


# timm's default pretrained tag of each name, pinned so a new timm default cannot change the teacher.
_PRESETS = {
    "resnet18": ("resnet18.a1_in1k", "ResNet-18 at 224 (timm resnet18), BasicBlocks"),
    "resnet50": ("resnet50.a1_in1k", "ResNet-50 at 224 (timm resnet50), Bottlenecks"),
    "convnext_tiny": ("convnext_tiny.in12k_ft_in1k", "ConvNeXt-T at 224 (timm convnext_tiny), depthwise 7×7 + MLP"),
}


@hookimpl
def register_targets(register):
    register(TargetSpec(name="conv", description="the dense spatial (k×k, k>1) convolutions of a ConvNet's stages"))


@hookimpl
def register_architectures(register):
    register(ArchitectureSpec(
        name="micro_convnet",
        description="timm ResNet, 32×32 input, one BasicBlock per stage, widths 16–128: trains in seconds on CPU",
        build=_build_micro, targets=_TARGETS, branches=_branches,
        input_size=32, in_chans=1, num_classes=10,
    ))
    for name, (model_name, description) in _PRESETS.items():
        register(ArchitectureSpec(name=name, description=description, build=timm_builder(model_name, fixed_size=False),
                                  targets=_TARGETS, branches=_branches, input_size=224,
                                  preprocess=timm_preprocess(model_name, 224)))
