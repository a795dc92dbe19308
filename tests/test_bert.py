"""BERT plugin: sites, branches, full-rank reproduction, hand-counted parameters and MACs, CLI errors
(its tiny sweep is in test_families)."""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from effrank_bench.errors import CheckpointError
from effrank_bench.factorize import LowRankLinear, factorize, resolve_sites
from effrank_bench.measure import count_macs, count_params
from effrank_bench.registry import default_registry
from effrank_bench.specs import DataRequest, ModelRequest
from effrank_bench.taps import BranchTap
from effrank_bench.teacher import apply_checkpoint, load_state_dict

MICRO_LAYERS, MICRO_WIDTH, SEQ = 2, 48, 65
BASE_LAYERS, BASE_WIDTH, BASE_FFN, BASE_SEQ = 12, 768, 3072, 128
BASE_VOCAB, BASE_POSITIONS = 30_522, 512  # bert-base-uncased's token ids and positions


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


@pytest.fixture(scope="module")
def micro_spec():
    return default_registry().architecture("micro_bert")


@pytest.fixture(scope="module")
def digits_tokens():
    return default_registry().dataset("digits_tokens").load(DataRequest())


@pytest.fixture(scope="module")
def micro(micro_spec, digits_tokens):
    torch.manual_seed(0)
    return micro_spec.build(digits_tokens.model_request(micro_spec)).eval()


@pytest.fixture(scope="module")
def batch(digits_tokens):
    return digits_tokens.test.tensors[0][:16]


@pytest.fixture(scope="module")
def bert_base():
    """bert_base for 2 classes, asked for a 19-id vocabulary: it keeps bert-base-uncased's 30,522 ids."""
    spec = default_registry().architecture("bert_base")
    torch.manual_seed(0)
    return spec, spec.build(ModelRequest(num_classes=2, input_size=BASE_SEQ, vocab_size=19)).eval()


# --- sites and branches ---------------------------------------------------------------------


def test_targets_select_the_query_key_value_output_and_mlp_linears(micro_spec, micro):
    attention, mlp, joint = (micro_spec.sites(micro, t) for t in ("attention", "mlp", "joint"))
    layer = "hf.bert.encoder.layer.0"
    assert [s.path for s in attention[:4]] == [f"{layer}.attention.self.query", f"{layer}.attention.self.key",
                                               f"{layer}.attention.self.value", f"{layer}.attention.output.dense"]
    assert [s.path for s in mlp[:2]] == [f"{layer}.intermediate.dense", f"{layer}.output.dense"]
    assert len(attention) == 4 * MICRO_LAYERS and len(mlp) == 2 * MICRO_LAYERS
    assert joint == attention + mlp
    assert all(site.chunks == 1 for site in joint)
    layers = resolve_sites(micro, joint, "split")
    assert all(type(module) is nn.Linear for _, module in layers)
    assert len({id(module) for _, module in layers}) == len(joint)


def test_branches_are_two_per_layer_and_follow_the_factorized_layers(micro_spec, micro, batch):
    student = copy.deepcopy(micro)
    factorize(student, micro_spec.sites(student, "joint"), 2)
    branches = micro_spec.branches(student)
    assert len(branches) == 2 * MICRO_LAYERS
    assert all(isinstance(b.module, LowRankLinear) and b.channel_dim == -1 for b in branches)
    taps = BranchTap(micro_spec.branches(micro)), BranchTap(branches)
    with torch.no_grad():
        teacher, rank2 = (tap.forward(model, batch) for tap, model in zip(taps, (micro, student)))
    shapes = [tuple(f.shape) for f in teacher.features]
    assert shapes == [tuple(f.shape) for f in rank2.features] == [(len(batch), SEQ, MICRO_WIDTH)] * (2 * MICRO_LAYERS)
    # The attention and MLP branch outputs of a rank-2 student are not the teacher's.
    assert all(relative_error(s, t) > 1e-2 for s, t in zip(rank2.features, teacher.features))


@pytest.mark.parametrize("target", ["attention", "mlp", "joint"])
def test_full_rank_svd_student_reproduces_the_teacher(micro_spec, micro, batch, target):
    student = copy.deepcopy(micro)
    replaced = factorize(student, micro_spec.sites(student, target), MICRO_WIDTH)
    assert len(replaced) == {"attention": 8, "mlp": 4, "joint": 12}[target]
    student.eval()
    taps = BranchTap(micro_spec.branches(micro)), BranchTap(micro_spec.branches(student))
    with torch.no_grad():
        teacher, full = (tap.forward(model, batch) for tap, model in zip(taps, (micro, student)))
    assert relative_error(full.logits, teacher.logits) < 1e-5
    assert all(relative_error(s, t) < 1e-5 for s, t in zip(full.features, teacher.features))


# --- the wrapper: padding and checkpoints ---------------------------------------------------


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_padding_changes_no_logit(micro, batch, attention):
    model = copy.deepcopy(micro)
    model.hf.set_attn_implementation(attention)
    short = batch[:, :50]
    padded = torch.cat([short, torch.zeros(len(batch), SEQ - 50, dtype=torch.long)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(padded), model(short), rtol=1e-5, atol=1e-5)
        assert relative_error(model(batch), model(short)) > 1e-3  # the dropped tokens did matter


def test_a_saved_state_dict_loads_back_as_a_teacher_checkpoint(micro_spec, micro, digits_tokens, batch, tmp_path):
    path = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in micro.state_dict().items()}, path)
    torch.manual_seed(1)
    other = micro_spec.build(digits_tokens.model_request(micro_spec)).eval()
    assert apply_checkpoint(other, load_state_dict(path), path) == []
    with torch.no_grad():
        torch.testing.assert_close(other(batch), micro(batch), rtol=0, atol=0)


# --- bert_base: parameters and MACs by hand ---------------------------------------------------


def bert_base_macs(linear_in_attention: int) -> int:
    """Per-sample MACs at 128 tokens; ``linear_in_attention`` is q+k+v+output's MACs per token and layer."""
    per_layer = BASE_SEQ * (linear_in_attention + 2 * BASE_WIDTH * BASE_FFN) + 2 * BASE_SEQ**2 * BASE_WIDTH
    # Embeddings are lookups; the pooler reads the CLS token only; the classifier has 2 outputs.
    return BASE_LAYERS * per_layer + BASE_WIDTH**2 + BASE_WIDTH * 2


def test_bert_base_attention_matmuls_count_the_same_with_sdpa_and_eager(bert_base):
    _, model = bert_base
    ids = torch.randint(1, 30522, (1, BASE_SEQ))
    assert model.hf.config._attn_implementation == "sdpa"
    sdpa = count_macs(model, ids)
    model.hf.set_attn_implementation("eager")
    try:
        eager = count_macs(model, ids)
    finally:
        model.hf.set_attn_implementation("sdpa")
    assert sdpa == eager == bert_base_macs(4 * BASE_WIDTH**2) == 11_174_217_216


def test_bert_base_attention_target_parameters_by_hand(bert_base):
    spec, model = bert_base
    assert count_params(model)[0] == 109_483_778  # bert-base-uncased's 109,482,240 and a 768×2 + 2 classifier
    assert len(spec.branches(model)) == 2 * BASE_LAYERS
    rank = 32
    student = copy.deepcopy(model)
    replaced = factorize(student, spec.sites(student, "attention"), rank, init="random")
    total, factorized = count_params(student, replaced.values())
    # 48 Linears 768×768 (+ bias) become 768×32 and 32×768 factors (+ the same bias).
    assert len(replaced) == 4 * BASE_LAYERS
    assert factorized == 48 * (2 * BASE_WIDTH * rank + BASE_WIDTH) == 2_396_160
    assert total == 109_483_778 - 48 * BASE_WIDTH**2 + 48 * 2 * BASE_WIDTH * rank == 83_531_522
    assert count_macs(student, torch.randint(1, 30522, (1, BASE_SEQ))) == bert_base_macs(4 * 2 * BASE_WIDTH * rank)


# --- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize("arch, dataset, message", [
    ("micro_bert", "digits", "micro_bert takes token sequences but data set 'digits' gives images; pick a data set "
                             "of token sequences (ag_news, digits_tokens, sst2)"),
    ("micro_vit", "digits_tokens", "micro_vit takes images but data set 'digits_tokens' gives token sequences; pick a "
                                   "data set of images (cifar10, cifar100, digits, imagefolder)"),
])
def test_a_modality_mismatch_exits_2_with_one_line_naming_the_data_sets_that_fit(tmp_path, run_cli, arch, dataset,
                                                                                  message):
    code, out, err = run_cli("run", "--arch", arch, "--dataset", dataset, "--out", str(tmp_path / "run"))
    assert (code, out, err) == (2, "", f"error: {message}\n")


def test_a_tokenizer_for_data_that_reads_none_exits_2_before_it_keys_another_teacher(tmp_path, run_cli):
    code, out, err = run_cli("run", "--tokenizer", "bert-base-uncased", "--out", str(tmp_path / "run"))
    assert (code, out, err) == (2, "", "error: --tokenizer bert-base-uncased: data set 'digits' gives images, which are "
                                       "not tokenized; leave --tokenizer out\n")
    assert not (tmp_path / "run").exists()
    code, out, err = run_cli("run", "--arch", "micro_bert", "--dataset", "digits_tokens", "--tokenizer", "tok",
                             "--out", str(tmp_path / "run"))
    assert (code, out, err) == (2, "", "error: --tokenizer tok: data set 'digits_tokens' gives tokens already; leave "
                                       "--tokenizer out\n")


def test_pretrained_bert_base_offline_says_how_to_pass_a_checkpoint():
    # The plugin's own build, not `run`: a run builds an untrained bert_base (2 CPU-s) before it fetches
    # the pretrained one, and test_cli checks how `run` words a pretrained build's CheckpointError.
    spec = default_registry().architecture("bert_base")
    with pytest.raises(CheckpointError) as err:  # the tests' hub is offline (conftest)
        spec.build(ModelRequest(num_classes=2, input_size=BASE_POSITIONS, vocab_size=BASE_VOCAB, pretrained=True))
    message = str(err.value)
    assert "\n" not in message and "cannot fetch the pretrained weights of bert-base-uncased" in message
    assert "--teacher-checkpoint PATH" in message
