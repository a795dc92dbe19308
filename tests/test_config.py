"""RunConfig: defaults, parsing, TOML files, CLI overrides, and the sweep and teacher cache keys."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from effrank_bench.config import RunConfig, load_config
from effrank_bench.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- defaults and parsing --------------------------------------------------------------------


RECIPES = {"vit_b32": {"lr": 1e-4, "epochs": 15, "teacher_optimizer": "sgd"}}


def recipes(arch: str) -> dict:
    return RECIPES.get(arch, {})


def test_an_architectures_recipe_fills_only_what_the_user_leaves_unset(tmp_path):
    config = load_config(overrides={"arch": "vit_b32"}, recipes=recipes)
    assert (config.lr, config.epochs, config.teacher_optimizer) == (1e-4, 15, "sgd")
    assert config.teacher_lr == RunConfig().teacher_lr  # not in the recipe: RunConfig's default
    flagged = load_config(overrides={"arch": "vit_b32", "lr": 5e-4}, recipes=recipes)
    assert (flagged.lr, flagged.epochs) == (5e-4, 15)  # a flag beats the recipe
    path = write(tmp_path / "run.toml", 'arch = "vit_b32"\nepochs = 3\n')
    assert load_config(path, recipes=recipes).epochs == 3  # so does the file
    # Typed or from the recipe, the same options are the same sweep (and run directory).
    assert config.sweep_key() == RunConfig(arch="vit_b32", lr=1e-4, epochs=15, teacher_optimizer="sgd").sweep_key()
    # Other architectures, and the library's RunConfig without recipes, keep RunConfig's defaults.
    assert load_config(recipes=recipes) == RunConfig()
    assert load_config(overrides={"arch": "vit_b32"}) == RunConfig(arch="vit_b32")


def test_a_bad_value_is_refused_before_any_recipe_is_looked_up():
    # The CLI's lookup loads every plugin (seconds): a typo is reported without waiting for it.
    asked = []
    with pytest.raises(ConfigError, match="lr: Input should be greater than 0"):
        load_config(overrides={"arch": "vit_b32", "lr": -1.0}, recipes=lambda arch: asked.append(arch) or {})
    assert asked == []


def test_an_arch_that_is_no_name_is_refused_in_one_line_not_looked_up(tmp_path):
    # Found by test_bad_input's fuzzing: a TOML list reached the recipe lookup, an unhashable key.
    path = write(tmp_path / "run.toml", 'arch = ["vit_b32"]\n')
    with pytest.raises(ConfigError, match=r"arch: Input should be a valid string"):
        load_config(path, recipes=recipes)


def test_defaults_are_the_embedded_run():
    config = RunConfig()
    assert (config.arch, config.target, config.loss, config.dataset) == ("micro_vit", "joint", "geometric", "digits")
    assert config.ranks == (1, 2, 4, 8, 16, 32)
    assert (config.init, config.qkv, config.device) == ("svd", "split", "auto")
    assert config.thresholds == (0.85, 0.95)
    assert config.loss_options.kd_temperature == 4.0 and config.loss_options.kd_alpha == 0.5
    assert load_config() == config


def test_ranks_from_a_string_are_sorted_and_deduplicated():
    assert RunConfig(ranks="8,2,4,4").ranks == (2, 4, 8)
    assert RunConfig(ranks=" 16 , 2,").ranks == (2, 16)
    assert RunConfig(ranks=[32, 1, 32]).ranks == (1, 32)


@pytest.mark.parametrize(("text", "message"), [
    ("1,,2", "^--ranks: entry 2 of '1,,2' is empty: separate entries by one comma$"),
    (" , 2", "^--ranks: entry 1 of ' , 2' is empty"),
    (" , ", "^--ranks: ranks is empty$"),
])
def test_an_empty_entry_between_ranks_is_refused_not_skipped(text, message):
    with pytest.raises(ConfigError, match=message):  # 1,,2 is a typo of 1,2 or of 1,12: neither is a guess to make
        load_config(overrides={"ranks": text})


@pytest.mark.parametrize("ranks", ["0", "4,0,8", "-2"])
def test_a_non_positive_rank_is_a_config_error(ranks):
    with pytest.raises(ConfigError, match="positive"):
        load_config(overrides={"ranks": ranks})


def test_a_non_positive_rank_is_a_validation_error_for_the_model():
    with pytest.raises(ValidationError, match="positive"):
        RunConfig(ranks=(0,))


def test_thresholds_from_a_string_and_their_order():
    assert RunConfig(thresholds="0.5,0.9").thresholds == (0.5, 0.9)
    with pytest.raises(ConfigError, match="0 < low < high"):
        load_config(overrides={"thresholds": "0.95,0.85"})


def test_bad_values_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="^--epochs: "):  # a flag's value: the flag named, as typed
        load_config(overrides={"epochs": 0})
    with pytest.raises(ConfigError, match=r"^--ranks \(entry 2: 'x'\): Input should be a valid integer"):
        load_config(overrides={"ranks": "2,x"})
    with pytest.raises(ConfigError, match="^--thresholds: two thresholds are needed, low and high, like 0.85,0.95; "
                                          "got 1$"):
        load_config(overrides={"thresholds": "0.9"})
    sweep = tmp_path / "sweep.toml"
    sweep.write_text("kd_alpha = 1.5\n")
    with pytest.raises(ConfigError, match=f"^{sweep}: kd_alpha: "):  # a file's value: its key, in the file named
        load_config(sweep, {"epochs": 2})
    with pytest.raises(ConfigError, match=f"^--epochs: .*; {sweep}: kd_alpha: "):  # each where it came from
        load_config(sweep, {"epochs": 0})
    with pytest.raises(ConfigError, match="^--kd-alpha: "):
        load_config(overrides={"kd_alpha": 1.5})


@pytest.mark.parametrize("group", [0, -3, "0", "x", 1.5, True])
def test_a_group_is_a_positive_number_of_students_or_auto(group):
    # A group of none (or fewer) would lay out no groups: nothing trains, and the sweep would ask again forever.
    with pytest.raises(ConfigError, match=r"^--group: group must be a positive number of students or "
                                          r"auto, got .+$"):
        load_config(overrides={"group": group})
    assert [RunConfig(group=g).group for g in (1, "4", " 2", "auto")] == [1, 4, 2, "auto"]


# --- TOML files and overrides --------------------------------------------------------------------


def test_toml_values_load(tmp_path):
    path = write(tmp_path / "run.toml", 'arch = "vit_b32"\nranks = [64, 8]\nepochs = 3\nkd_temperature = 2.0\n')
    config = load_config(path)
    assert config.arch == "vit_b32" and config.ranks == (8, 64) and config.epochs == 3
    assert config.loss_options.kd_temperature == 2.0
    assert config.target == "joint"  # untouched fields keep their defaults


def test_overrides_win_and_none_overrides_are_ignored(tmp_path):
    path = write(tmp_path / "run.toml", 'arch = "vit_b32"\nranks = "8,64"\nepochs = 3\nseed = 7\n')
    config = load_config(path, {"epochs": 5, "ranks": "2", "seed": None, "arch": None, "loss": "kd"})
    assert config.epochs == 5 and config.ranks == (2,) and config.loss == "kd"
    assert config.seeds == (7,) and config.teacher_seed == 7 and config.arch == "vit_b32"


def test_seed_is_one_seed_and_seeds_are_many():
    assert RunConfig(seed=3).seeds == (3,) and RunConfig(seed=3).teacher_seed == 3
    config = RunConfig(seeds="2,0,1")
    assert config.seeds == (2, 0, 1)  # order kept: the first seeds the teacher
    assert config.teacher_seed == 2
    with pytest.raises(ValueError, match="seed 2 is given twice"):  # it would not train the student asked for
        RunConfig(seeds="2,0,2,1")
    assert RunConfig(seeds=[4, 5], teacher_seed=0).teacher_seed == 0
    with pytest.raises(ValueError, match="give seed or seeds, not both"):
        RunConfig(seed=1, seeds=[1, 2])


def test_a_seed_flag_replaces_the_files_seeds(tmp_path):
    path = write(tmp_path / "run.toml", "seeds = [0, 1, 2]\n")
    assert load_config(path).seeds == (0, 1, 2)
    assert load_config(path, {"seed": 5}).seeds == (5,)
    assert load_config(path, {"seeds": "3,4"}).seeds == (3, 4)


def test_a_config_json_with_one_seed_reads_as_seeds(tmp_path):
    # Run directories written before seeds existed hold "seed": N.
    old = RunConfig().model_dump(mode="json")
    del old["seeds"], old["teacher_seed"]
    config = RunConfig.model_validate({**old, "seed": 4})
    assert config.seeds == (4,) and config.teacher_seed == 4


def test_unknown_key_in_toml(tmp_path):
    path = write(tmp_path / "run.toml", 'arch = "micro_vit"\nfoo = 1\n')
    with pytest.raises(ConfigError, match="unknown key 'foo'") as err:
        load_config(path)
    assert str(err.value) == f"{path}: unknown key 'foo'"  # nothing close to suggest


def test_malformed_toml(tmp_path):
    path = write(tmp_path / "run.toml", 'arch = "micro_vit\nranks = [1, 2\n')
    with pytest.raises(ConfigError, match="malformed TOML"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_missing_teacher_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="teacher checkpoint not found"):
        load_config(overrides={"teacher_checkpoint": str(tmp_path / "teacher.safetensors")})
    path = write(tmp_path / "run.toml", 'teacher_checkpoint = "missing.safetensors"\n')
    with pytest.raises(ConfigError, match="teacher checkpoint not found"):
        load_config(path)


def test_paths_in_a_toml_are_relative_to_the_file(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    write(conf / "weights" / "teacher.safetensors", "x")
    path = write(conf / "run.toml",
                 'data_root = "data"\nout = "../runs/a"\nteacher_checkpoint = "weights/teacher.safetensors"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the file is found from the file, not from the working directory
    config = load_config(path)
    assert config.data_root == conf / "data"
    assert config.out.resolve() == (tmp_path / "runs" / "a").resolve()
    assert config.teacher_checkpoint == conf / "weights" / "teacher.safetensors"
    # An absolute path stays as written.
    absolute = write(tmp_path / "abs.toml", f'data_root = "{tmp_path / "d"}"\n')
    assert load_config(absolute).data_root == tmp_path / "d"


# --- cache keys -----------------------------------------------------------------------------------


def test_sweep_key_ignores_what_does_not_change_a_trial():
    base = RunConfig()
    for change in [{"ranks": (3, 5)}, {"device": "cpu"}, {"out": Path("elsewhere")},
                   {"thresholds": (0.5, 0.9)}, {"latency_repeats": 3}, {"seeds": (0, 1, 2)},
                   {"workers": 4}, {"download": True}, {"bootstrap_resamples": 50}]:
        assert RunConfig(**change).sweep_key() == base.sweep_key(), change


@pytest.mark.parametrize("change", [{"epochs": 13}, {"lr": 1e-3}, {"target": "mlp"}, {"loss": "kd"},
                                    {"seed": 1}, {"init": "random"}, {"qkv": "fused"}, {"kd_alpha": 0.2},
                                    {"augment": False}, {"amp": False}, {"label_smoothing": 0.1}])
def test_sweep_key_changes_with_what_a_trial_computes(change):
    assert RunConfig(**change).sweep_key() != RunConfig().sweep_key()


def test_sweep_key_is_deterministic():
    assert RunConfig(epochs=3).sweep_key() == RunConfig(epochs=3).sweep_key()
    assert len(RunConfig().sweep_key()) == 64  # a sha256 hex digest


def test_teacher_key_is_shared_across_student_options():
    base = RunConfig().teacher_key()
    for change in [{"target": "mlp"}, {"loss": "kd"}, {"ranks": (64,)}, {"epochs": 1}, {"lr": 1e-4},
                   {"init": "random"}, {"qkv": "fused"}, {"kd_temperature": 1.0}, {"device": "cpu"},
                   {"weight_decay": 0.1}, {"seeds": (0, 1, 2)}, {"teacher_seed": 0}]:
        assert RunConfig(**change).teacher_key() == base, change


@pytest.mark.parametrize("change", [{"teacher_epochs": 41}, {"seed": 1}, {"arch": "vit_b32"},
                                    {"dataset": "cifar10"}, {"teacher_lr": 1e-3}, {"pretrained": True},
                                    {"teacher_optimizer": "sgd"}, {"teacher_weight_decay": 0.0},
                                    {"teacher_warmup": 0.1}, {"label_smoothing": 0.1}, {"augment": False},
                                    {"tokenizer": "bert-base-uncased"}, {"teacher_seed": 1}])
def test_teacher_key_changes_with_the_teacher(change):
    assert RunConfig(**change).teacher_key() != RunConfig().teacher_key()


def test_teacher_key_follows_the_checkpoints_content(tmp_path):
    weights = write(tmp_path / "teacher.safetensors", "first")
    first = RunConfig(teacher_checkpoint=weights).teacher_key()
    assert first != RunConfig().teacher_key()
    assert RunConfig(teacher_checkpoint=weights).teacher_key() == first
    weights.write_text("second")  # same path, other weights
    assert RunConfig(teacher_checkpoint=weights).teacher_key() != first
    weights.write_text("first")
    assert RunConfig(teacher_checkpoint=weights).teacher_key() == first


def test_sweep_key_follows_the_checkpoints_content(tmp_path):
    # Records of a sweep are only comparable under one teacher: new weights at the same path must
    # not let RunDir.open resume the old records (the teacher key already tells them apart).
    weights = write(tmp_path / "teacher.safetensors", "first")
    first = RunConfig(teacher_checkpoint=weights).sweep_key()
    weights.write_text("second")
    assert RunConfig(teacher_checkpoint=weights).sweep_key() != first


def test_an_untrained_teacher_is_refused():
    with pytest.raises(ValueError, match="teacher_epochs 0 keeps the teacher as loaded, but nothing is loaded"):
        RunConfig(teacher_epochs=0)
    assert RunConfig(teacher_epochs=0, pretrained=True).teacher_epochs == 0


def test_a_suite_given_as_a_runs_config_is_named_as_a_suite():
    suite = Path(__file__).resolve().parent.parent / "benchmarks" / "smoke.toml"
    with pytest.raises(ConfigError) as err:  # it listed name, description, defaults and matrix as unknown keys
        load_config(suite)
    assert str(err.value) == (f"{suite}: a suite (it has [[matrix]] blocks), not a run's config: run it with "
                              f"`effrank-bench run --suite {suite}`")
