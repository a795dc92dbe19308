"""What the ConvNet, MLP-Mixer and BERT plugins do alike, each checked with its own hand-counted numbers:
a tiny sweep's costs, full-rank students, branch shapes, refused targets and pretrained weights."""
from __future__ import annotations

import pytest
import timm
import torch

from effrank_bench.errors import CheckpointError
from effrank_bench.factorize import factorize, full_rank
from effrank_bench.specs import ModelRequest
from effrank_bench.sweep import run_sweep
from effrank_bench.taps import BranchTap

# The micro presets' inputs: digits as one-channel images, 32×32 for the ConvNet (its stem and
# max-pool quarter the side), 8×8 for the Mixer (one token per pixel).
REQUESTS = {"micro_convnet": ModelRequest(num_classes=10, in_chans=1, input_size=32),
            "micro_mixer": ModelRequest(num_classes=10, in_chans=1, input_size=8)}


# --- a sweep end to end: hand-counted costs per rank -----------------------------------------------


@pytest.mark.parametrize("name, target, dataset, factorized, params, macs", [
    # Joint sites (in→out, k): layer1 16→16 ×2 (3×3); layer2 16→32, 32→32 (3×3), 16→32 (1×1); layer3
    # and layer4 likewise at 32→64 and 64→128. Rank r costs r·(k²·in + out) per site: at r = 2,
    # 640 + 1,088 + 2,176 + 4,352 = 8,256 (twice that at r = 4). Their full weights are 305,664 of
    # the teacher's 310,226 parameters; stem, norms and head (4,562) stay.
    pytest.param("micro_convnet", "joint", "digits", [8_256, 16_512], [4_562 + 8_256, 4_562 + 16_512], None,
                 id="convnet"),
    # Per block, fc1 64→32 and fc2 32→64 become r·(64 + 32) each plus their biases (32 + 64):
    # 2·96·r + 96, so 4 blocks hold 4·(192·r + 96): 1,920 at r = 2 and 3,456 at r = 4. The rest
    # stays: patch embedding 1→32 (64), per block two norms (128) and the channel MLP 32→64→32
    # (4,192), final norm (64) and head 32→10 (330): 64 + 4·4,320 + 64 + 330 = 17,738.
    pytest.param("micro_mixer", "attention", "digits", [1_920, 3_456], [17_738 + 1_920, 17_738 + 3_456], None,
                 id="mixer"),
    # Teacher 44,986 parameters: embeddings 19·48 + 65·48 + 2·48 + LayerNorm 96 = 4,224; per layer
    # 4·(48² + 48) + 2·48·96 + 96 + 48 + 2 LayerNorms 192 = 18,960; pooler 2,352; classifier 490.
    # At rank r each layer's two MLP Linears (9,216 weights) become 2·r·(48 + 96) factor weights
    # (27,706 and 28,858 parameters in all; 1,440 and 2,592 of them factorized, biases included).
    # MACs per sample: 65 tokens through 4·48² + 2·48·96 per layer, 2·65²·48 attention, pooler 48²,
    # classifier 480: 3,210,144 for the teacher; at rank r the MLPs cost 2·65·2·r·144 instead of 2·65·2·48·96.
    pytest.param("micro_bert", "mlp", "digits_tokens", [2 * (2 * r * 144 + 96 + 48) for r in (2, 4)],
                 [44_986 - 2 * 9_216 + 2 * 2 * r * 144 for r in (2, 4)],
                 [2 * (65 * (4 * 48**2 + 2 * 48 * 96) + 2 * 65**2 * 48) + 48**2 + 480
                  - 2 * 65 * (2 * 48 * 96 - 2 * r * 144) for r in (2, 4)], id="bert"),
])
def test_a_tiny_sweep_records_the_hand_counted_cost_of_each_rank(tiny, tmp_path, name, target, dataset, factorized,
                                                                 params, macs):
    records = run_sweep(tiny.config(tmp_path / "run", arch=name, target=target, dataset=dataset)).records()
    assert [(r.rank, r.status) for r in records] == [(2, "ok"), (4, "ok")]
    assert [r.cost.factorized_params for r in records] == factorized
    assert [r.cost.params for r in records] == params
    if macs is not None:
        assert [r.cost.macs for r in records] == macs
    assert records[0].cost.macs < records[1].cost.macs
    assert all(0.0 <= r.test_accuracy <= 1.0 and len(r.history) == 1 for r in records)


# --- full-rank students and branch outputs ---------------------------------------------------------


@pytest.mark.parametrize("name, target", [
    ("micro_convnet", "conv"), ("micro_convnet", "mlp"), ("micro_convnet", "joint"),
    ("micro_mixer", "attention"), ("micro_mixer", "mlp"), ("micro_mixer", "joint"),
])
def test_a_full_rank_student_reproduces_the_teachers_logits(architecture, scrambled, name, target):
    spec, request = architecture(name), REQUESTS[name]
    teacher, student = (scrambled(lambda: spec.build(request)) for _ in range(2))
    sites = spec.sites(student, target)
    rank = max(full_rank(student.get_submodule(site.path)) for site in sites)
    factorize(student, sites, rank, init="svd")
    x = torch.randn(16, 1, request.input_size, request.input_size)
    with torch.no_grad():
        t, s = teacher(x), student.eval()(x)
    assert float(t.norm()) > 1.0
    assert float((t - s).norm() / t.norm()) < 1e-5


@pytest.mark.parametrize("name, shapes", [
    # 32×32 → stem and max-pool → 8×8 in layer1, halved per stage; channels last.
    ("micro_convnet", [(3, 8, 8, 16), (3, 4, 4, 32), (3, 2, 2, 64), (3, 1, 1, 128)]),
    # 64 tokens of width 32, two branches × 4 blocks.
    ("micro_mixer", [(3, 64, 32)] * 8),
])
def test_branch_shapes_are_channel_last_and_match_a_rank_2_student(architecture, scrambled, name, shapes):
    spec, request = architecture(name), REQUESTS[name]
    teacher, student = (scrambled(lambda: spec.build(request)) for _ in range(2))
    factorize(student, spec.sites(student, "joint"), 2)
    x = torch.randn(3, 1, request.input_size, request.input_size)
    seen = []
    for model in (teacher, student):
        tap = BranchTap(spec.branches(model))
        with torch.no_grad():
            seen.append([tuple(f.shape) for f in tap.forward(model, x).features])
        tap.close()
    assert seen[0] == seen[1] == shapes


# --- what a family refuses ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, target, targets", [
    ("resnet18", "attention", "conv, mlp, joint"),
    ("micro_mixer", "conv", "attention, mlp, joint"),
])
def test_a_target_the_family_lacks_is_refused_naming_its_targets(run_cli, name, target, targets):
    code, _, err = run_cli("run", "--arch", name, "--target", target)
    assert code == 2
    assert err.strip() == f"error: {name} does not support target '{target}'; its targets are: {targets}"


@pytest.mark.parametrize("name", ["micro_convnet", "micro_mixer"])
def test_a_micro_preset_has_no_pretrained_weights(architecture, name):
    with pytest.raises(CheckpointError, match=f"{name} has no pretrained weights.*--teacher-checkpoint"):
        architecture(name).build(REQUESTS[name].model_copy(update={"pretrained": True}))


@pytest.mark.parametrize("name, weights", [("resnet50", r"resnet50\.a1_in1k"),
                                           ("mixer_b16", r"mixer_b16_224\.goog_in21k_ft_in1k")])
def test_unreachable_pretrained_weights_point_to_teacher_checkpoint(architecture, monkeypatch, name, weights):
    from huggingface_hub.utils import LocalEntryNotFoundError

    def offline(model_name, pretrained=False, **kwargs):  # as the hub's offline mode fails a file it has not cached
        raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache")

    monkeypatch.setattr(timm, "create_model", offline)
    spec = architecture(name)
    request = spec.native_request().model_copy(update={"pretrained": True})
    # Tests run with HF_HUB_OFFLINE=1 (conftest): the message says so.
    with pytest.raises(CheckpointError, match=weights + r" \(the hub's offline mode is on \(HF_HUB_OFFLINE\)\); "
                                                        r".*--teacher-checkpoint PATH"):
        spec.build(request)

    def corrupt(model_name, pretrained=False, **kwargs):  # a cached file that does not load: not the network's fault
        raise RuntimeError("Error while deserializing header: HeaderTooLarge")

    monkeypatch.setattr(timm, "create_model", corrupt)
    with pytest.raises(CheckpointError, match=weights + r" \(RuntimeError: Error while deserializing header: "
                                                        r"HeaderTooLarge\); .*--teacher-checkpoint PATH"):
        spec.build(request)
