"""BERT from transformers: bert-base-uncased's shape and a micro BERT for the embedded digits-as-tokens data."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from effrank_bench import hookimpl
from effrank_bench.errors import CheckpointError, ConfigError
from effrank_bench.specs import ArchitectureSpec, Branch, ModelRequest, Site
from effrank_bench_plugins.builders import refuse_pretrained
from effrank_bench_plugins.hub import cache_only_when_offline, why_it_failed

if TYPE_CHECKING:
    from transformers import BertForSequenceClassification

_BERT_BASE = "bert-base-uncased"
_BASE_VOCAB = 30522
# bert_base's recipe: the teacher fine-tuned as the BERT paper fine-tunes (AdamW, lr 3e-5 of its 2e-5 to 5e-5,
# batch 32, 3 epochs) with a tenth of its steps warming up; students AdamW at lr 1e-4 (as the image models'
# students) for 10 epochs: a starting point, not tuned on text here.
_BASE_RECIPE = {"batch_size": 32, "teacher_lr": 3e-5, "teacher_epochs": 3, "teacher_warmup": 0.1, "lr": 1e-4,
                "epochs": 10}
_BASE_POSITIONS = 512


class BertClassifier(nn.Module):
    """Token ids (B, L) -> logits (B, classes), as the core calls every model; id 0 is padding.

    The Hugging Face model sits at ``hf``, so site paths and state-dict keys start with ``hf.``.
    """

    def __init__(self, hf: BertForSequenceClassification):
        super().__init__()
        self.hf = hf

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=ids, attention_mask=ids != 0).logits

    def get_classifier(self) -> nn.Module:
        """The head, named as timm names it, so --init paper-rebuild can give a fresh one."""
        return self.hf.classifier


def _layers(model: nn.Module) -> range:
    return range(len(model.hf.bert.encoder.layer))


def _layer(i: int) -> str:
    return f"hf.bert.encoder.layer.{i}"


def _attention(model: nn.Module) -> list[Site]:
    # q, k and v are three separate Linears in BERT, each its own rank-r map.
    return [Site(path=f"{_layer(i)}.attention.{name}") for i in _layers(model)
            for name in ("self.query", "self.key", "self.value", "output.dense")]


def _mlp(model: nn.Module) -> list[Site]:
    return [Site(path=f"{_layer(i)}.{name}") for i in _layers(model) for name in ("intermediate.dense", "output.dense")]


def _branches(model: nn.Module) -> list[Branch]:
    # The two dense layers that end each branch, before dropout and the residual add + LayerNorm.
    # Looked up by path now, not at build time: in a student they are the low-rank replacements.
    return [Branch(model.get_submodule(f"{_layer(i)}.{name}")) for i in _layers(model)
            for name in ("attention.output.dense", "output.dense")]


_TARGETS = {"attention": _attention, "mlp": _mlp}  # joint: the two together (ArchitectureSpec adds it)


def _build_micro(request: ModelRequest) -> nn.Module:
    # transformers is imported where a BERT is built: it takes seconds, and `list` or a run of any other
    # architecture loads this plugin without needing it.
    from transformers import BertConfig, BertForSequenceClassification

    refuse_pretrained("micro_bert", request)
    # No dropout: distillation on a thousand examples should be deterministic given the seed.
    # Width 48 and two layers: 65 tokens cost four times micro_vit's 17 per layer, and the CPU default
    # must stay within two minutes. Init std 0.1, near 0.7/sqrt(48): BERT's 0.02 suits width 768 and
    # left a width-64 model learning slowly (0.885 test accuracy after 40 epochs, against 0.941).
    config = BertConfig(
        vocab_size=request.vocab_size, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=96, max_position_embeddings=request.input_size, num_labels=request.num_classes,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.1,
        attn_implementation="sdpa",
    )
    return BertClassifier(BertForSequenceClassification(config))


def _build_bert_base(request: ModelRequest) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    # bert-base-uncased's vocabulary and positions are kept even when the data use fewer, so that a
    # pretrained and a from-scratch teacher have the same shapes (cache and checkpoints load into either).
    vocab = max(request.vocab_size or _BASE_VOCAB, _BASE_VOCAB)
    positions = max(request.input_size, _BASE_POSITIONS)
    if not request.pretrained:
        config = BertConfig(vocab_size=vocab, max_position_embeddings=positions, num_labels=request.num_classes,
                            attn_implementation="sdpa")
        return BertClassifier(BertForSequenceClassification(config))
    if (vocab, positions) != (_BASE_VOCAB, _BASE_POSITIONS):
        raise ConfigError(f"{_BERT_BASE} has {_BASE_VOCAB} token ids and {_BASE_POSITIONS} positions; this data set "
                          f"needs {vocab} ids and {positions} positions: train bert_base from scratch instead")
    try:
        with cache_only_when_offline() as offline:
            hf = BertForSequenceClassification.from_pretrained(_BERT_BASE, num_labels=request.num_classes,
                                                               attn_implementation="sdpa")
    except OSError as err:
        raise CheckpointError(
            f"cannot fetch the pretrained weights of {_BERT_BASE} ({why_it_failed(offline, err)}); "
            "where you have network access, save the state_dict of effrank_bench_plugins.bert.BertClassifier "
            f"wrapping BertForSequenceClassification.from_pretrained('{_BERT_BASE}') and pass that file with "
            "--teacher-checkpoint PATH"
        ) from None
    return BertClassifier(hf)


@hookimpl
def register_architectures(register):
    register(ArchitectureSpec(
        name="micro_bert",
        description="transformers BERT, 2 layers of width 48, no dropout, 65 tokens: trains in seconds on CPU",
        build=_build_micro, targets=_TARGETS, branches=_branches,
        modality="tokens", input_size=65, vocab_size=19, num_classes=10,
    ))
    register(ArchitectureSpec(
        name="bert_base",
        description="BERT-base at 128 tokens (bert-base-uncased: 12 layers of width 768, vocabulary 30,522)",
        build=_build_bert_base, targets=_TARGETS, branches=_branches,
        modality="tokens", input_size=128, vocab_size=_BASE_VOCAB, num_classes=2, tokenizer=_BERT_BASE,
        recipe=_BASE_RECIPE,
    ))
