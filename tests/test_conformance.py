"""The conformance kit: built-in architectures pass it, broken plugins fail it with the reason,
and a third-party package found through entry-point discovery passes it and sweeps."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from effrank_bench import hookimpl
from effrank_bench.registry import Registry, default_registry
from effrank_bench.specs import Branch, Site
from effrank_bench.sweep import run_sweep
from effrank_bench.testing import ConformanceError, check_architecture

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "effrank_mlp"
MICRO = [name for name in default_registry().names("architecture") if name.startswith("micro_")]
PAPER = [name for name in default_registry().names("architecture") if not name.startswith("micro_")]


@pytest.mark.parametrize("name", MICRO)
def test_every_micro_architecture_conforms(name):
    reports = check_architecture(name)
    assert set(reports) == set(default_registry().architecture(name).targets)
    for report in reports.values():
        assert report.full_rank_rel_error < 1e-5
        assert report.loss_after < report.loss_before
        assert list(report.params.values()) == sorted(report.params.values())


@pytest.mark.skipif(os.environ.get("EFFRANK_BENCH_SLOW") != "1",
                    reason="paper-size kit takes minutes per model on 2 CPU cores; set EFFRANK_BENCH_SLOW=1")
@pytest.mark.parametrize("name", PAPER)
def test_every_paper_size_architecture_conforms(name):
    # The micro presets above share each family's target and branch code; this checks the real shapes.
    reports = check_architecture(name)
    assert all(report.full_rank_rel_error < 1e-5 for report in reports.values())


def _broken(micro, **changes):
    return micro.model_copy(update={"name": "broken", **changes})


def with_architecture(spec):
    """The installed plugins and a third party's registering ``spec``, as a run finds them."""
    class Theirs:
        @hookimpl
        def register_architectures(self, register):
            register(spec)

    return Registry(plugins=[("theirs", Theirs())])


@pytest.fixture(scope="module")
def micro_vit():
    return default_registry().architecture("micro_vit")


def test_a_branch_list_that_differs_between_teacher_and_student_fails(micro_vit):
    def branches(model):
        # Counts factorized layers: the student then has more branches than the teacher.
        return [Branch(m) for m in model.modules() if type(m).__name__ == "LowRankLinear"] + [
            Branch(b.attn) for b in model.blocks]

    with pytest.raises(ConformanceError, match=r"broken, target 'attention': teacher hooks yield 4 branch "
                                               r"outputs, the student 12"):
        check_architecture(_broken(micro_vit, branches=branches))


def test_a_joint_target_that_leaves_layers_out_fails(micro_vit):
    targets = dict(micro_vit.targets)
    targets["joint"] = targets["attention"]
    with pytest.raises(ConformanceError, match=r"target 'joint': is not the union of the other targets: "
                                               r"missing \['blocks.0.mlp.fc1'"):
        check_architecture(_broken(micro_vit, targets=targets))


@pytest.mark.parametrize("path, problem", [("blocks.0.norm1", "is a LayerNorm, not a Linear or Conv2d"),
                                           ("blocks.0.mlp.fc5", "does not exist in the model")])
def test_a_site_that_is_no_layer_fails_naming_the_architecture_and_target(micro_vit, tiny, tmp_path, path, problem):
    from effrank_bench.errors import RegistrationError
    from effrank_bench.setup import prepare

    broken = _broken(micro_vit, targets={"mlp": lambda model: [Site(path=path)]})
    with pytest.raises(ConformanceError, match=rf"^broken, target 'mlp': target site '{path}' {problem}$"):
        check_architecture(broken)

    with pytest.raises(RegistrationError, match=rf"^target 'mlp' of architecture 'broken': target site '{path}' "
                                                rf"{problem}$"):  # a run says so before building a teacher
        prepare(tiny.config(tmp_path / "run", arch="broken", target="mlp"), with_architecture(broken))


@pytest.mark.parametrize("build, message", [
    (lambda request: nn.Linear(4, request.num_classes + 3),  # three logits too many: no error would ever say so
     "broken: a model built for 10 classes gives shape (2, 13) for a batch of 2; expected logits of shape (2, 10)"),
    (lambda request: "a model", "broken: build returned a str, not a torch.nn.Module"),
])
def test_a_build_that_gives_no_model_or_other_logits_than_classes_fails(micro_vit, build, message):
    class Flat(nn.Sequential):  # an image model's input flattened, then the build's layer
        pass

    def wrapped(request):
        made = build(request)
        pixels = request.in_chans * request.input_size ** 2
        return Flat(nn.Flatten(), nn.Linear(pixels, 4), made) if isinstance(made, nn.Module) else made

    with pytest.raises(ConformanceError) as err:
        check_architecture(_broken(micro_vit, build=wrapped))
    assert str(err.value) == message


@pytest.mark.parametrize("build, message", [
    (lambda request: "a model", "build returned a str, not a torch.nn.Module"),
    (lambda request: nn.Sequential(nn.Flatten(), nn.Linear(request.in_chans * request.input_size ** 2,
                                                            request.num_classes + 3)),
     "a model built for 10 classes gives shape (1, 13) for a batch of 1; expected logits of shape (1, 10)"),
    (lambda request: nn.Sequential(nn.Flatten(), nn.Linear(3, request.num_classes)),  # the wrong input width
     "its model failed on a batch of shape (1, 1, 8, 8): RuntimeError: mat1 and mat2 shapes cannot be "
     "multiplied (1x64 and 3x10)"),
])
def test_a_run_of_a_build_that_gives_no_model_or_other_logits_is_refused_naming_it(micro_vit, tiny, tmp_path,
                                                                                    build, message):
    # Three logits too many would train, and report accuracies over classes the data set lacks.
    from effrank_bench.errors import RegistrationError
    from effrank_bench.setup import prepare

    with pytest.raises(RegistrationError) as err:
        prepare(tiny.config(tmp_path / "run", arch="broken"), with_architecture(_broken(micro_vit, build=build)))
    assert str(err.value) == f"architecture 'broken': {message}"


def test_checking_the_logits_draws_no_random_numbers_and_keeps_the_models_mode(micro_vit):
    from effrank_bench.setup import logits_mismatch

    model = micro_vit.build(micro_vit.native_request())
    x = torch.randn(2, 1, 8, 8)
    state = torch.random.get_rng_state()
    assert logits_mismatch(model.train(), x, 10) is None and model.training
    assert logits_mismatch(model.eval(), x, 11) == ("a model built for 11 classes gives shape (2, 10) for a batch of "
                                                    "2; expected logits of shape (2, 11)")
    assert not model.training
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_target_that_selects_nothing_or_no_sites_is_named(micro_vit):
    with pytest.raises(ConformanceError, match=r"^target 'mlp' of architecture 'broken' selects no layers in "):
        check_architecture(_broken(micro_vit, targets={"mlp": lambda model: []}))
    with pytest.raises(ConformanceError, match=r"^target 'mlp' of architecture 'broken' gave blocks.0.mlp.fc1 "
                                                r"\(str\); a target function returns Site\(path=...\)"):
        check_architecture(_broken(micro_vit, targets={"mlp": lambda model: ["blocks.0.mlp.fc1"]}))


def test_a_target_listing_a_site_twice_is_refused_by_the_kit_and_by_a_run_alike(micro_vit, tiny, tmp_path):
    from effrank_bench.errors import RegistrationError
    from effrank_bench.setup import prepare

    twice = _broken(micro_vit, targets={"mlp": lambda m: [Site(path=f"blocks.{i}.mlp.fc1") for i in (0, 1, 0)]})
    message = "target 'mlp' of architecture 'broken' lists a site twice: blocks.0.mlp.fc1"
    with pytest.raises(ConformanceError, match=f"^{message}$"):
        check_architecture(twice)

    with pytest.raises(RegistrationError, match=f"^{message}$"):  # it trained, where the kit refused it
        prepare(tiny.config(tmp_path / "run", arch="broken", target="mlp"), with_architecture(twice))


def failing_build(request):
    return nn.Linear(request.in_channels, 3)  # ModelRequest's field is in_chans


def failing_target(model):
    return [Site(path=f"{i}.fc1") for i in model.layers]  # the model has blocks, not layers


@pytest.mark.parametrize(("changes", "message"), [
    ({"build": failing_build}, "architecture 'broken': build failed for ModelRequest(num_classes=10, input_size=8, "
                               "in_chans=1, vocab_size=None, pretrained=False): AttributeError: 'ModelRequest' object "
                               "has no attribute 'in_channels'"),
    ({"targets": {"mlp": failing_target}}, "target 'mlp' of architecture 'broken' failed on its model: "
                                           "AttributeError: 'VisionTransformer' object has no attribute 'layers'"),
])
def test_a_build_or_target_function_that_raises_is_one_line_naming_it(micro_vit, tiny, tmp_path, changes, message):
    from effrank_bench.errors import RegistrationError
    from effrank_bench.setup import prepare

    with pytest.raises(RegistrationError) as err:
        prepare(tiny.config(tmp_path / "run", arch="broken", target="mlp"), with_architecture(_broken(micro_vit, **changes)))
    assert str(err.value) == message and isinstance(err.value.__cause__, AttributeError)


def test_a_student_whose_factors_get_no_gradient_fails(micro_vit):
    def build(request):
        model = micro_vit.build(request)
        for block in model.blocks:  # the MLP output is discarded: its factors never see a gradient
            block.mlp = _Zero(block.mlp)
        return model

    targets = {"mlp": lambda model: [Site(path=f"blocks.{i}.mlp.inner.fc1") for i in range(len(model.blocks))]}
    with pytest.raises(ConformanceError, match="no gradient reaches the factors of"):
        check_architecture(_broken(micro_vit, build=build, targets=targets,
                                   branches=lambda m: [Branch(b.attn) for b in m.blocks]))


class _TorchAttention(nn.Module):
    """Self-attention through torch's nn.MultiheadAttention, which reads ``out_proj.weight`` itself."""

    def __init__(self, dim):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, 2, batch_first=True)

    def forward(self, x, **unused):  # timm's blocks pass attn_mask and is_causal (None and False here)
        return self.mha(x, x, x, need_weights=False)[0]


def test_a_site_whose_parent_reads_its_weight_conforms_and_trains(micro_vit, tiny, tmp_path):
    # A factorized layer's .weight is its product BA, as a tensor: it was a method, and every plugin built
    # on nn.MultiheadAttention failed (after its teacher had trained) with "linear(): argument 'weight'".
    def build(request):
        model = micro_vit.build(request)
        for block in model.blocks:
            block.attn = _TorchAttention(model.embed_dim)
        return model

    torch_attention = _broken(micro_vit, build=build, branches=lambda m: [Branch(b.attn) for b in m.blocks],
                              targets={"attention": lambda m: [Site(path=f"blocks.{i}.attn.mha.out_proj")
                                                               for i in range(len(m.blocks))]})
    report = check_architecture(torch_attention)["attention"]
    assert report.full_rank_rel_error < 1e-5 and report.loss_after < report.loss_before

    run = run_sweep(tiny.config(tmp_path / "run", arch="broken", target="attention"),
                    registry=with_architecture(torch_attention))
    assert [r.status for r in run.records()] == ["ok", "ok"]


class _Zero(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) * 0


@pytest.fixture
def installed_example(tmp_path, monkeypatch):
    """The example package made discoverable the way pip installs it: a dist-info with entry_points.txt."""
    dist = tmp_path / "effrank_mlp-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: effrank-mlp\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[effrank_bench]\nmlp_classifier = effrank_mlp\n")
    for path in (str(EXAMPLE), str(tmp_path)):
        monkeypatch.syspath_prepend(path)
    return Registry()


def test_a_third_party_plugin_is_discovered_listed_conforms_and_sweeps(installed_example, tiny, tmp_path, run_cli,
                                                                      monkeypatch):
    registry = installed_example  # a fresh Registry: it found the plugin through its entry point alone
    assert ("mlp_classifier", "residual MLP on flattened 8×8 images (example third-party plugin)",
            "mlp_classifier (effrank-mlp)") in registry.listing()["architecture"]

    # `list` as a new process would run it: with the process-wide registry loaded now, not before.
    monkeypatch.setattr("effrank_bench.registry._default", None)
    monkeypatch.setenv("COLUMNS", "200")
    code, listed, _ = run_cli("list")
    assert code == 0 and "mlp_classifier (effrank-mlp)" in listed

    report = check_architecture("mlp_classifier", registry=registry)
    assert report["mlp"].sites == 6 and report["mlp"].branches == 3

    config = tiny.config(tmp_path / "run", arch="mlp_classifier", target="mlp", ranks=(2, 8))
    records = run_sweep(config, registry=registry).records()
    assert [(r.rank, r.status) for r in records] == [(2, "ok"), (8, "ok")]
    assert records[0].cost.params < records[1].cost.params


def test_the_third_party_plugin_refuses_attention_naming_its_target(installed_example):
    from effrank_bench.errors import UnsupportedTargetError

    with pytest.raises(UnsupportedTargetError, match="mlp_classifier does not support target 'attention'; "
                                                     "its targets are: mlp"):
        installed_example.architecture("mlp_classifier").require_target("attention")
