"""The real configs compose, and bad values fail fast naming the key."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from conftest import compose_config

from llmatic.config import ConfigError, validate_config

GROUPS = {
    "llm": ["rules", "hf"], "dataset": ["digits", "cifar10"], "archive": ["cvt", "grid"],
    "descriptors": ["width_depth_flops", "params_depth", "nb201_ops", "nb201_cost"],
    "operators": ["paper", "extended", "nb201"],
    "temperature": ["adaptive", "constant", "linear_decay"], "trainer": ["cpu", "gpu", "ddp"],
    "module": ["default", "paper_sgd"], "logger": ["csv", "wandb"],
    "budget": ["smoke", "default", "paper", "nb201"],
}


@pytest.mark.parametrize(("group", "option"), [(g, o) for g, os_ in GROUPS.items() for o in os_])
def test_every_option_composes(group, option):
    cfg = compose_config(f"{group}={option}")
    assert cfg[group] is not None
    if (group, option) == ("descriptors", "nb201_ops"):  # cell-only: refused for networks
        with pytest.raises(ConfigError, match="describe NAS-Bench-201 cells"):
            validate_config(cfg)
        cfg = compose_config(f"{group}={option}", "experiment=paper_nb201",
                             f"nb201.table={__file__}")  # validation only checks it exists
    if group != "llm":
        validate_config(cfg)


def test_paper_budget_and_instructions():
    cfg = compose_config("budget=paper")
    assert cfg.budget.generations * cfg.budget.candidates_per_generation == 2000
    instr = list(cfg.operators.mutation_instructions)
    assert len(instr) == 13
    assert instr[0] == "Add a layer to improve the above network"
    assert instr[12] == "Add recurrent layer to improve the above network"
    assert cfg.operators.p_mutation == 0.7
    assert cfg.temperature.start == 0.6 and cfg.temperature.step == 0.05


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("operators.p_mutation=1.5", "operators.p_mutation"),
        ("budget.generations=-1", "budget.generations"),
        ("budget.candidates_per_generation=0", "budget.candidates_per_generation"),
        ("sandbox.timeout_s=0", "sandbox.timeout_s"),
        ("fitness=speed", "fitness"),
        ("operators.mutation_template=no placeholders", "operators.mutation_template"),
        ("temperature.min=2.0", "temperature.min"),
        ("descriptors.names=[width_to_depth,colour]", "descriptors.names"),
        ("operators.p_mutation=abc", "operators.p_mutation"),
        (("trainer=ddp", "trainer.num_nodes=2"), "trainer.num_nodes"),
        (("trainer=ddp", "trainer.strategy=ddp_spawn"), "trainer.strategy"),
        (("trainer=ddp", "evaluator.gpus_per_worker=0"), "evaluator.gpus_per_worker"),
        ("space=cells", "space"),
        ("pipeline_generations=sometimes", "pipeline_generations"),
        ("dataset.max_flops=0", "dataset.max_flops"),
        ("parent_selection.tournament=0", "parent_selection.tournament"),
        ("dataset.max_flops=lots", "dataset.max_flops"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(compose_config(*(override if isinstance(override, tuple)
                                         else (override,))))


def _cli(*args, cwd):
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "llmatic", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    return proc, time.perf_counter() - started


def test_cli_bad_value_exits_fast_without_history(tmp_path):
    proc, _ = _cli("operators.p_mutation=1.5", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert proc.returncode == 2
    assert "operators.p_mutation" in proc.stderr
    assert not (tmp_path / "run" / "history.jsonl").exists()


def test_cli_unknown_group_option_and_key(tmp_path):
    proc, _ = _cli("dataset=imagenet", cwd=tmp_path)
    assert proc.returncode != 0 and "imagenet" in proc.stderr
    proc, _ = _cli("sandbox.timeout=3", cwd=tmp_path)
    assert proc.returncode != 0 and "timeout" in proc.stderr


def test_cli_missing_cifar_dir_fails_before_search(tmp_path):
    proc, seconds = _cli("dataset=cifar10", f"dataset.data_dir={tmp_path}/nope",
                         "dataset.download=false", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert proc.returncode == 2
    assert "dataset.data_dir" in proc.stderr
    assert not (tmp_path / "run" / "history.jsonl").exists()


def test_hf_without_model_names_the_key(tmp_path):
    proc, _ = _cli("llm=hf", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert proc.returncode == 2
    assert "llm.model" in proc.stderr


@pytest.mark.parametrize(("launcher", "target"), [
    ("parallel", "JoblibLauncher"), ("slurm", "SlurmLauncher"), ("basic", "BasicLauncher")])
def test_launcher_presets_compose(launcher, target):
    from conftest import CONFIG_DIR
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="search", overrides=[f"hydra/launcher={launcher}"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)


@pytest.mark.parametrize("experiment", ["paper_cifar10", "ratio_sweep", "ablations",
                                        "paper_cifar10_smoke", "ratio_sweep_smoke",
                                        "ablations_smoke"])
def test_experiment_presets_compose_with_their_sweeps(experiment):
    from conftest import CONFIG_DIR
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="search", overrides=[f"experiment={experiment}"],
                      return_hydra_config=True)
    assert cfg.experiment_name == experiment
    params = cfg.hydra.sweeper.params
    assert "seed" in params
    if experiment.startswith("paper"):
        assert cfg.budget.generations * cfg.budget.candidates_per_generation in (2000, 12)
    if "smoke" in experiment:
        assert cfg.llm._target_.endswith("RuleBasedMutator") and cfg.dataset.name == "digits"
    if experiment.startswith("ablations"):
        assert len(str(params.ablation).split(",")) == 6
    if experiment.startswith("ratio_sweep"):
        assert str(params["operators.p_mutation"]) == "0.3,0.5,0.7,0.85"
