"""One student step before the teacher trains: a plugin's broken branches or loss stop a run in one line naming
its parts, before the teacher's training (hours on a paper-size model), not in a traceback after it."""
from __future__ import annotations

import pytest
import torch

from effrank_bench import hookimpl
from effrank_bench.errors import LossError, RegistrationError
from effrank_bench.preflight import check_student_step
from effrank_bench.registry import Registry, default_registry
from effrank_bench.setup import prepare
from effrank_bench.specs import Branch, LossSpec
from effrank_bench.sweep import execute
from effrank_bench.teacher import CachedTeacher


class Theirs:
    """A third party's plugin: one architecture and one loss."""

    def __init__(self, arch=None, loss=None):
        self.arch, self.loss = arch, loss

    @hookimpl
    def register_architectures(self, register):
        if self.arch is not None:
            register(self.arch)

    @hookimpl
    def register_losses(self, register):
        if self.loss is not None:
            register(self.loss)


def micro_vit(**changes):
    return default_registry().architecture("micro_vit").model_copy(update={"name": "theirs", **changes})


def attention_outputs(model):  # what a first plugin tends to write: the module, not a Branch of it
    return [block.attn for block in model.blocks]


def student_only(model):  # selects factorized layers: the teacher has none
    return [Branch(m) for m in model.modules() if type(m).__name__ == "LowRankLinear"]


def three_arguments(teacher, student, labels):
    return student.logits.sum()


@pytest.mark.parametrize(("plugin", "loss", "error", "message"), [
    (Theirs(micro_vit(branches=attention_outputs)), "geometric", RegistrationError,
     "a rank-2 student of theirs (joint target, geometric loss) fails its first step, on 2 example inputs before "
     "the teacher trains: AttributeError: 'Attention' object has no attribute 'module' (--debug shows where)"),
    (Theirs(micro_vit(branches=student_only)), "geometric", LossError,
     "a rank-2 student of theirs (joint target, geometric loss): geometric loss: the teacher gave 0 branch "
     "outputs but the student gave 16"),
    (Theirs(micro_vit(), LossSpec(name="three", description="x", compute=three_arguments)), "three",
     RegistrationError, "a rank-2 student of theirs (joint target, three loss) fails its first step, on 2 example "
                        "inputs before the teacher trains: TypeError: three_arguments() takes 3 positional "
                        "arguments but 4 were given"),
])
def test_a_broken_plugin_stops_the_run_before_its_teacher_trains(tiny, tmp_path, plugin, loss, error, message):
    setup = prepare(tiny.config(tmp_path / "run", arch="theirs", loss=loss, ranks=(2, 4)),
                    Registry(plugins=[("theirs", plugin)]))
    with pytest.raises(error) as err:
        execute(setup)
    assert str(err.value).startswith(message)
    assert not CachedTeacher.at(setup.teacher_key).exists()  # no teacher was trained for it


@pytest.mark.parametrize("arch", ["micro_vit", "micro_convnet"])  # the convnet's batch norm keeps statistics
def test_the_step_draws_no_random_numbers_and_leaves_the_teacher_as_it_was(tiny, tmp_path, arch):
    setup = prepare(tiny.config(tmp_path / "run", arch=arch, target="mlp", ranks=(2, 4)))
    setup.model.train()
    before = {name: p.clone() for name, p in setup.model.state_dict().items()}
    torch.manual_seed(5)
    state = torch.get_rng_state()
    check_student_step(setup)
    assert torch.equal(torch.get_rng_state(), state)
    after = setup.model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert all(p.grad is None for p in setup.model.parameters()) and setup.model.training


def test_a_teacher_for_its_spectrum_alone_is_not_held_to_a_students_step(tiny, tmp_path):
    # `spectrum` distills nothing: a broken loss of the run's options must not stop it.
    from effrank_bench.teacher import obtain_teacher

    plugin = Theirs(micro_vit(), LossSpec(name="three", description="x", compute=three_arguments))
    setup = prepare(tiny.config(tmp_path / "run", arch="theirs", loss="three", ranks=(2,)),
                    Registry(plugins=[("theirs", plugin)]), sweep=False)
    assert obtain_teacher(setup, students=False).record.test_accuracy > 0


def mean_feature_gap(teacher, student, labels, options):
    gaps = [(s - t).pow(2).mean() for t, s in zip(teacher.features, student.features)]
    return sum(gaps) / len(gaps)


def test_a_loss_reading_branch_outputs_without_uses_features_is_told_to_register_with_it(tiny, tmp_path):
    # In training its features are (): a sum of nothing trains nothing, a mean divides by zero.
    plugin = Theirs(micro_vit(), LossSpec(name="gap", description="x", compute=mean_feature_gap))
    setup = prepare(tiny.config(tmp_path / "run", arch="theirs", loss="gap", ranks=(2,)),
                    Registry(plugins=[("theirs", plugin)]))
    with pytest.raises(LossError) as err:
        check_student_step(setup)
    assert str(err.value) == ("a rank-2 student of theirs (joint target, gap loss): loss 'gap' reads the branch "
                              "outputs (.features) but is registered without uses_features=True, so no branch is "
                              "tapped for it: register it with LossSpec(..., uses_features=True)")
    fixed = plugin.loss.model_copy(update={"uses_features": True})
    check_student_step(prepare(tiny.config(tmp_path / "fixed", arch="theirs", loss="gap", ranks=(2,)),
                               Registry(plugins=[("theirs", Theirs(micro_vit(), fixed))])))


def features_if_any(teacher, student, labels, options):  # a loss written to work with or without branch outputs
    if student.features:
        return sum((s - t).pow(2).mean() for t, s in zip(teacher.features, student.features))
    return (student.logits - teacher.logits).pow(2).mean()


def test_a_loss_that_asks_whether_there_are_branch_outputs_is_not_refused(tiny, tmp_path):
    plugin = Theirs(micro_vit(), LossSpec(name="either", description="x", compute=features_if_any))
    check_student_step(prepare(tiny.config(tmp_path / "run", arch="theirs", loss="either", ranks=(2,)),
                               Registry(plugins=[("theirs", plugin)])))
