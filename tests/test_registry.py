"""The plugin registry: entry points, duplicate names, wrong specs, unknown names."""
from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest
from pydantic import ValidationError
from torch import nn

from effrank_bench import hookimpl
from effrank_bench.errors import RegistrationError, UnknownNameError
from effrank_bench.registry import Registry, default_registry
from effrank_bench.specs import ArchitectureSpec, LossSpec, TargetSpec


def tiny_arch(name: str = "tiny", targets=("joint",)) -> ArchitectureSpec:
    return ArchitectureSpec(
        name=name, description="a Linear", build=lambda request: nn.Linear(4, 4),
        targets={t: (lambda model: []) for t in targets}, branches=lambda model: [], input_size=4,
    )


class ArchPlugin:
    """A plugin as a third party would write it: an object with @hookimpl methods (taking self)."""

    def __init__(self, *specs):
        self.specs = specs

    @hookimpl
    def register_architectures(self, register):
        for spec in self.specs:
            register(spec)


class TargetPlugin:
    def __init__(self, *names):
        self.names = names

    @hookimpl
    def register_targets(self, register):
        for name in self.names:
            register(TargetSpec(name=name, description=name))


# --- the built-in plugins, loaded through the installed entry points -----------------------------


def test_entry_points_register_the_built_ins():
    registry = default_registry()
    assert {"micro_vit", "vit_b32"} <= set(registry.names("architecture"))
    assert {"attention", "mlp", "joint"} <= set(registry.names("target"))
    assert {"geometric", "logit", "kd"} <= set(registry.names("loss"))
    assert "digits" in registry.names("dataset")
    assert registry.loss("geometric").uses_features is True
    assert registry.loss("kd").uses_features is False


def test_registering_the_built_ins_imports_neither_timm_nor_torchvision():
    # They cost 2.5-3 s (torchvision imports torch._dynamo): `list` and every bad-input error would wait for them.
    # A fresh interpreter: this one has imported them for other tests.
    code = ("import sys; from effrank_bench.registry import default_registry; default_registry(); "
            "print(sorted(m for m in ('timm', 'torchvision', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (0, "[]\n"), result.stderr


@pytest.mark.parametrize("kind, name, label", [
    ("architecture", "micro_vit", "vit (effrank-bench)"),
    ("architecture", "vit_b32", "vit (effrank-bench)"),
    ("target", "attention", "targets (effrank-bench)"),
    ("target", "mlp", "targets (effrank-bench)"),
    ("target", "joint", "targets (effrank-bench)"),
    ("loss", "geometric", "losses (effrank-bench)"),
    ("loss", "logit", "losses (effrank-bench)"),
    ("loss", "kd", "losses (effrank-bench)"),
    ("dataset", "digits", "datasets (effrank-bench)"),
])
def test_listing_names_the_entry_point_and_distribution(kind, name, label):
    rows = {row[0]: row for row in default_registry().listing()[kind]}
    assert rows[name][2] == label
    assert rows[name][1]  # a description to show


def test_every_built_in_architecture_uses_only_registered_targets():
    registry = default_registry()
    for name in ("micro_vit", "vit_b32"):
        assert set(registry.architecture(name).targets) == {"attention", "mlp", "joint"}


# --- plugins passed in directly -----------------------------------------------------------------


def test_plugins_without_entry_points():
    registry = Registry(plugins=[("mine", ArchPlugin(tiny_arch())), ("targets", TargetPlugin("joint"))],
                        entry_points=False)
    assert registry.names("architecture") == ["tiny"]
    assert registry.names("target") == ["joint"]
    assert registry.names("loss") == []
    # No distribution behind a plugin passed in: its label is its name alone.
    assert registry.listing()["architecture"] == [("tiny", "a Linear", "mine")]


def test_a_name_registered_twice_names_both_plugins():
    with pytest.raises(RegistrationError, match="architecture 'tiny' is registered twice") as err:
        Registry(plugins=[("a", ArchPlugin(tiny_arch())), ("b", ArchPlugin(tiny_arch())),
                          ("targets", TargetPlugin("joint"))], entry_points=False)
    assert "'a'" in str(err.value) and "'b'" in str(err.value)


def test_a_name_registered_twice_by_one_plugin_is_refused():
    with pytest.raises(RegistrationError, match="registered twice: by plugin 'a' and by plugin 'a'"):
        Registry(plugins=[("a", ArchPlugin(tiny_arch(), tiny_arch())), ("targets", TargetPlugin("joint"))],
                 entry_points=False)


def test_a_built_in_name_registered_again_names_the_entry_point():
    with pytest.raises(RegistrationError, match="'vit'") as err:
        Registry(plugins=[("third_party", ArchPlugin(tiny_arch("micro_vit")))])
    assert "'third_party'" in str(err.value)


def test_a_spec_of_the_wrong_kind_is_refused():
    class Wrong:
        @hookimpl
        def register_architectures(self, register):
            register(TargetSpec(name="joint", description="not an architecture"))

    with pytest.raises(RegistrationError, match=r"plugin 'wrong' registered a TargetSpec as architecture; "
                                                r"expected ArchitectureSpec"):
        Registry(plugins=[("wrong", Wrong())], entry_points=False)


def test_a_loss_registered_as_a_target_is_refused():
    class Wrong:
        @hookimpl
        def register_targets(self, register):
            register(LossSpec(name="mse", description="a loss", compute=lambda t, s, y, o: 0))

    with pytest.raises(RegistrationError, match="registered a LossSpec as target; expected TargetSpec"):
        Registry(plugins=[("wrong", Wrong())], entry_points=False)


def test_an_architecture_using_an_unregistered_target_is_refused():
    with pytest.raises(RegistrationError, match=r"architecture 'tiny' \(plugin 'mine'\) uses target\(s\) "
                                                r"rows, tokens that no plugin registered"):
        Registry(plugins=[("mine", ArchPlugin(tiny_arch(targets=("joint", "tokens", "rows")))),
                          ("targets", TargetPlugin("joint"))], entry_points=False)


# --- asking for names ------------------------------------------------------------------------------


def test_unknown_name_suggests_the_closest_and_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="did you mean 'vit_b32'") as err:
        default_registry().architecture("vit_b23")
    message = str(err.value)
    assert "unknown architecture 'vit_b23'" in message
    assert "micro_vit" in message and "vit_b32" in message


def test_unknown_name_without_a_close_match_only_lists():
    with pytest.raises(UnknownNameError) as err:
        default_registry().loss("zzzz")
    message = str(err.value)
    assert "did you mean" not in message
    assert "valid: geometric, kd, logit" in message


def test_unknown_name_in_an_empty_kind():
    registry = Registry(entry_points=False)
    with pytest.raises(UnknownNameError, match="none registered"):
        registry.dataset("digits")


# --- specs are validated at construction -----------------------------------------------------


@pytest.mark.parametrize("name", ["ViT", "my vit", "1vit", "vit-b", ""])
def test_architecture_name_must_be_lowercase_identifier(name):
    with pytest.raises(ValidationError, match="name"):
        tiny_arch(name)


def test_architecture_needs_a_target():
    with pytest.raises(ValidationError, match="at least one target"):
        tiny_arch(targets=())


def test_an_architecture_without_joint_gets_the_union_of_its_targets_as_joint():
    from effrank_bench.specs import Site

    def sites(*paths):
        return lambda model: [Site(path=path) for path in paths]

    spec = ArchitectureSpec(name="two", description="two targets", build=lambda request: nn.Linear(4, 4),
                            targets={"attention": sites("a.0", "a.1"), "mlp": sites("m.0", "a.1")},
                            branches=lambda model: [], input_size=4)
    assert list(spec.targets) == ["attention", "mlp", "joint"]
    assert [site.path for site in spec.sites(nn.Linear(4, 4), "joint")] == ["a.0", "a.1", "m.0"]
    one = ArchitectureSpec(name="one", description="one target", build=lambda request: nn.Linear(4, 4),
                           targets={"mlp": sites("m.0", "m.1")}, branches=lambda model: [], input_size=4)
    assert list(one.targets) == ["mlp", "joint"]  # the default --target joint runs it: its one target's sites
    assert [site.path for site in one.sites(nn.Linear(4, 4), "joint")] == ["m.0", "m.1"]
    own = ArchitectureSpec(name="own", description="its own joint", build=lambda request: nn.Linear(4, 4),
                           targets={"attention": sites("a.0"), "mlp": sites("m.0"), "joint": sites("m.0")},
                           branches=lambda model: [], input_size=4)
    assert [site.path for site in own.sites(nn.Linear(4, 4), "joint")] == ["m.0"]  # kept, for the kit to judge


@pytest.mark.parametrize("recipe, message", [
    ({"learning_rate": 1e-4}, "recipe: learning_rate not among the recipe's options (epochs, teacher_epochs, "),
    ({"arch": "vit_b32"}, "recipe: arch not among the recipe's options"),  # a run option, not a recipe's
    ({"lr": -1.0}, "recipe: lr: Input should be greater than 0"),
])
def test_an_architectures_recipe_holds_valid_recipe_options(recipe, message):
    class BadRecipe:
        @hookimpl
        def register_architectures(self, register):
            register(ArchitectureSpec(**{**tiny_arch().model_dump(), "recipe": recipe}))

    with pytest.raises(RegistrationError) as err:
        Registry(plugins=[("mine", BadRecipe()), ("targets", TargetPlugin("joint"))], entry_points=False)
    # One line, the field named once (pydantic names it, and the recipe's own check did too).
    assert str(err.value).startswith("plugin 'mine' built an invalid architecture spec: ArchitectureSpec: " + message)


# --- plugins that cannot be loaded ----------------------------------------------------------------------


class FakeEntryPoint:
    """An installed package's entry point, as importlib.metadata gives it: ``load()`` imports its module."""

    group = "effrank_bench"

    def __init__(self, name, load):
        self.name, self.load = name, load


def fake_dist(package, *entry_points):
    """An installed ``package`` with ``entry_points`` in the effrank_bench group, as importlib.metadata gives it."""
    return type("Dist", (), {"entry_points": entry_points, "metadata": {"Name": package}})()


def installed(monkeypatch, *entry_points, package="their-plugins", beside=()):
    """As if ``package`` were installed with ``entry_points`` in the effrank_bench group (after ``beside``)."""
    monkeypatch.setattr("importlib.metadata.distributions", lambda: [*beside, fake_dist(package, *entry_points)])


class TheirLoss:
    """A third party's loss plugin module."""

    @hookimpl
    def register_losses(self, register):
        register(LossSpec(name="theirs", description="their loss", compute=lambda t, s, y, o: 0))


def test_an_entry_point_named_as_a_built_in_one_registers_beside_it_not_in_its_place(monkeypatch):
    # "losses" is what the built-ins call theirs: a package naming its own so took the built-in losses away.
    built_ins = importlib.metadata.distribution("effrank-bench")
    installed(monkeypatch, FakeEntryPoint("losses", TheirLoss), beside=[built_ins])
    registry = Registry()
    assert {"geometric", "logit", "kd", "theirs"} <= set(registry.names("loss"))
    label = dict((name, plugin) for name, _, plugin in registry.listing()["loss"])
    assert label["theirs"] == "their-plugins:losses (their-plugins)" and label["kd"] == "losses (effrank-bench)"


def test_a_package_found_twice_on_the_path_is_loaded_once(monkeypatch):
    entry = FakeEntryPoint("theirs", TheirLoss)
    installed(monkeypatch, entry, beside=[fake_dist("Their_Plugins", entry)])  # a stale copy of its metadata
    assert Registry().names("loss") == ["theirs"]  # not "loss 'theirs' is registered twice"
    # A renamed package's stale metadata: another name, the same module (an import gives the one module object).
    module = TheirLoss()
    installed(monkeypatch, FakeEntryPoint("mine", lambda: module),
              beside=[fake_dist("old-name", FakeEntryPoint("theirs", lambda: module))])
    assert Registry().names("loss") == ["theirs"]  # pluggy refused a plugin registered under two names


def test_a_hook_that_raises_is_one_line_naming_its_plugin_and_package(monkeypatch):
    class Raising:
        @hookimpl
        def register_losses(self, register):
            raise NameError("name 'helper' is not defined")  # a typo in the plugin's own code

    installed(monkeypatch, FakeEntryPoint("theirs", Raising))
    with pytest.raises(RegistrationError) as err:
        Registry()
    assert str(err.value) == ("plugin 'theirs' of package their-plugins failed in register_losses: NameError: name "
                              "'helper' is not defined; fix it or uninstall their-plugins")
    assert isinstance(err.value.__cause__, NameError)  # --debug shows where


def test_a_hook_function_without_hookimpl_is_refused_instead_of_never_called():
    class Undecorated:
        def register_losses(self, register):
            register(LossSpec(name="theirs", description="never registered", compute=lambda t, s, y, o: 0))

    with pytest.raises(RegistrationError) as err:
        Registry(plugins=[("mine", Undecorated())], entry_points=False)
    assert str(err.value) == ("plugin 'mine' defines register_losses without @hookimpl, so it would never be called: "
                              "decorate it (from effrank_bench import hookimpl)")


def test_a_plugin_that_fails_to_import_is_named_with_its_package_in_one_line(monkeypatch):
    def load():
        raise ModuleNotFoundError("No module named 'their_plugins.helpers'")

    installed(monkeypatch, FakeEntryPoint("theirs", load))
    with pytest.raises(RegistrationError) as err:
        Registry()
    assert str(err.value) == ("plugin 'theirs' of package their-plugins cannot be loaded: ModuleNotFoundError: "
                              "No module named 'their_plugins.helpers'; fix it or uninstall their-plugins")
    assert isinstance(err.value.__cause__, ModuleNotFoundError)  # --debug shows where it failed


def test_a_hook_with_other_arguments_than_the_hooks_is_named_with_its_package(monkeypatch):
    class OtherArguments:
        @hookimpl
        def register_targets(self, reg):
            pass

    installed(monkeypatch, FakeEntryPoint("theirs", OtherArguments))
    with pytest.raises(RegistrationError, match=r"^plugin 'theirs' of package their-plugins cannot be loaded: "
                                                r"PluginValidationError: .*\breg\b.*; fix it or uninstall"):
        Registry()


def test_a_plugin_passed_in_with_other_arguments_than_the_hooks_is_named():
    class OtherArguments:
        @hookimpl
        def register_targets(self, reg):
            pass

    with pytest.raises(RegistrationError, match=r"^plugin 'mine' cannot be loaded: PluginValidationError: .*\breg\b"):
        Registry(plugins=[("mine", OtherArguments())], entry_points=False)


def test_an_optional_hook_of_another_name_is_left_alone_as_pluggy_leaves_it():
    class Optional:
        @hookimpl(optionalhook=True)
        def register_metrics(self, register):  # a hook some later version may have
            pass

    assert Registry(plugins=[("mine", Optional())], entry_points=False).names("target") == []


def test_a_hook_of_a_name_no_hook_has_is_refused_instead_of_never_called():
    class Misspelled:
        @hookimpl
        def register_target(self, register):
            register(TargetSpec(name="mine", description="never registered"))

    with pytest.raises(RegistrationError) as err:
        Registry(plugins=[("mine", Misspelled())], entry_points=False)
    assert str(err.value) == ("plugin 'mine' implements register_target, which is no effrank-bench hook; the hooks "
                              "are register_architectures, register_targets, register_losses, register_datasets, "
                              "register_executors")


def test_the_paper_size_built_ins_have_their_own_recipe_and_the_micro_ones_the_run_options():
    registry = default_registry()
    assert registry.recipe("vit_b32") == registry.recipe("vit_b32_tv") == registry.recipe("mixer_b16") == {
        "batch_size": 256, "teacher_optimizer": "sgd", "teacher_lr": 0.01, "teacher_weight_decay": 0.0,
        "teacher_epochs": 10, "lr": 1e-4, "epochs": 15}
    assert registry.recipe("bert_base")["teacher_lr"] == 3e-5
    # The embedded default's students settle in one epoch; the other micro families take RunConfig's two.
    assert registry.recipe("micro_vit") == {"epochs": 1}
    assert [registry.recipe(name) for name in ("micro_convnet", "micro_mixer", "micro_bert")] == [{}] * 3
    assert registry.recipe("no_such_arch") == {}  # left to the run's own check, which names the valid ones


def test_specs_are_frozen():
    spec = tiny_arch()
    with pytest.raises(ValidationError):
        spec.name = "other"


def test_a_plugin_building_an_invalid_spec_is_a_registration_error_naming_it():
    class Bad:
        @hookimpl
        def register_targets(self, register):
            register(TargetSpec(name="Bad Name", description="uppercase and a space"))

    with pytest.raises(RegistrationError, match=r"plugin 'bad' built an invalid target spec: .*name"):
        Registry(plugins=[("bad", Bad())], entry_points=False)
