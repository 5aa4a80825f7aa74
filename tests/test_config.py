"""The real configs compose, and bad values fail fast naming the key."""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CONFIG_DIR, compose_config
from omegaconf import OmegaConf

from llmatic.config import ConfigError, validate_config

LLM_PRESETS = sorted(p.stem for p in (Path(CONFIG_DIR) / "llm").glob("*.yaml"))
GROUPS = {
    "llm": LLM_PRESETS, "dataset": ["digits", "mnist5k", "cifar10"], "archive": ["cvt", "grid"],
    "descriptors": ["width_depth_flops", "params_depth", "nb201_ops", "nb201_cost"],
    "operators": ["paper", "extended", "nb201"],
    "temperature": ["adaptive", "constant", "linear_decay"], "trainer": ["cpu", "gpu", "ddp"],
    "module": ["default", "adam", "paper_sgd"], "logger": ["csv", "wandb", "tensorboard"],
    "evaluator": ["local", "pool", "ray"],
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
    if (group, option) == ("budget", "nb201"):  # epochs: 0 (looked up): cells only
        with pytest.raises(ConfigError, match=r"budget\.epochs"):
            validate_config(cfg)
        cfg = compose_config(f"{group}={option}", "experiment=paper_nb201",
                             f"nb201.table={__file__}")
    if group == "llm" and OmegaConf.is_missing(cfg.llm, "model"):
        cfg = compose_config(f"{group}={option}", "llm.model=/models/some-model")
    validate_config(cfg)


# What the README's table promises of each preset.
PRESET_PROMISES = {
    "codegen6b": {"model": "Salesforce/codegen-6B-mono", "torch_dtype": "float32",
                  "max_new_tokens": 350, "prompt_format": "completion"},
    "qwen_coder": {"model": "Qwen/Qwen2.5-Coder-7B-Instruct", "torch_dtype": "bfloat16",
                   "prompt_format": "chat"},
    "hf": {"prompt_format": "completion"},
    "vllm": {"base_url": "http://127.0.0.1:8000/v1", "prompt_format": "chat"},
    "ollama": {"base_url": "http://127.0.0.1:11434/v1", "prompt_format": "chat"},
    "openai": {"base_url": None, "prompt_format": "chat"},
    "rules": {"prompt_format": "completion"},
}


@pytest.mark.parametrize("preset", LLM_PRESETS)
def test_every_llm_preset_matches_its_constructor_and_the_readme(preset):
    """Every key a preset sets is an argument of its generator (a typo in conf/llm/*.yaml,
    or a key the constructor dropped, fails here), and it is the preset the README lists."""
    from hydra.utils import get_class

    from llmatic.config.build import LLM_SEARCH_KEYS

    cfg = compose_config(f"llm={preset}")
    assert preset in PRESET_PROMISES, f"conf/llm/{preset}.yaml is not in the README's table"
    for key, value in PRESET_PROMISES[preset].items():
        assert cfg.llm[key] == value, (preset, key)
    params = inspect.signature(get_class(cfg.llm._target_).__init__).parameters
    keys = set(cfg.llm.keys()) - {"_target_", *LLM_SEARCH_KEYS}
    assert keys <= set(params), (preset, sorted(keys - set(params)))
    required = {n for n, p in params.items() if n != "self" and p.default is p.empty
                and p.kind is not p.VAR_KEYWORD}
    assert required <= keys, (preset, sorted(required - keys))
    if "trust_remote_code" in params:
        assert cfg.llm.trust_remote_code is False


@pytest.mark.slow  # loads the tiny model three times
@pytest.mark.parametrize("preset", ["hf", "codegen6b", "qwen_coder"])
def test_hf_presets_build_their_generator_on_a_tiny_model(preset, tiny_gpt2_dir):
    """The preset's own values reach from_pretrained (only the weights and the token budget
    are swapped for the tiny test model's)."""
    from llmatic.config.build import build_generator

    cfg = compose_config(f"llm={preset}", f"llm.model={tiny_gpt2_dir}",
                         "llm.max_new_tokens=16", "llm.cache=false")
    validate_config(cfg)
    gen = build_generator(cfg)
    assert gen.name == f"hf:{tiny_gpt2_dir}"
    dtype = {"float32": "float32", "bfloat16": "bfloat16", "auto": "float32"}
    assert str(gen.model.dtype) == f"torch.{dtype[cfg.llm.torch_dtype]}"
    assert gen.stop == tuple(cfg.llm.stop)


@pytest.mark.parametrize("preset", ["vllm", "ollama", "openai"])
def test_openai_presets_build_and_answer_through_a_local_server(preset):
    """The preset, pointed at a local OpenAI-compatible server (a stand-in: no network
    here), probes it at start-up and gets a completion through the cache."""
    from openai_server import FakeOpenAIServer

    from llmatic.config.build import build_generator
    from llmatic.types import GenerationRequest

    model = compose_config(f"llm={preset}", "llm.model=some-model").llm.model
    with FakeOpenAIServer(models=(model,)) as server:
        cfg = compose_config(f"llm={preset}", f"llm.model={model}",
                             f"llm.base_url={server.base_url}", "llm.api_key=test")
        validate_config(cfg)
        gen = build_generator(cfg)
        try:
            [c] = gen.generate([GenerationRequest(prompt="write a net", temperature=0.5,
                                                  instruction="", parents=(), seed=0)])
        finally:
            getattr(gen, "close", lambda: None)()
        assert c.ok and "class Net" in c.text, c
        assert [r["path"] for r in server.requests][0].endswith("/models")
        post = server.completion_requests[0]
        assert post["body"]["model"] == model and "messages" in post["body"]  # chat


def test_trust_remote_code_false_never_runs_a_models_own_code(tiny_gpt2_dir, tmp_path):
    """A checkpoint that ships its own modelling code (config.json's auto_map) loads with the
    library's classes under llm.trust_remote_code=false: its code is never imported."""
    import json
    import shutil

    from llmatic.config.build import build_generator

    model = tmp_path / "remote_code_model"
    shutil.copytree(tiny_gpt2_dir, model)
    marker = tmp_path / "remote_code_ran"
    (model / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\n"
        "from transformers import GPT2Config, GPT2LMHeadModel\n"
        "class EvilConfig(GPT2Config):\n    pass\n"
        "class EvilModel(GPT2LMHeadModel):\n    config_class = EvilConfig\n")
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig",
                          "AutoModelForCausalLM": "evil.EvilModel"}
    (model / "config.json").write_text(json.dumps(config))
    cfg = compose_config("llm=hf", f"llm.model={model}", "llm.max_new_tokens=16",
                         "llm.cache=false")
    assert cfg.llm.trust_remote_code is False  # the default
    gen = build_generator(cfg)
    assert type(gen.model).__name__ == "GPT2LMHeadModel"
    assert not marker.exists(), "the checkpoint's own code was imported"


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
        ("temperature.start=-1", "temperature.start"),  # was clipped to min without a word
        (("temperature=linear_decay", "temperature.end=0.01"), "temperature.end"),
        (("temperature=constant", "temperature.value=1.5"), "temperature.value"),
        ("temperature.step=-0.1", "temperature.step"),
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
        ("budget.epochs=0", "budget.epochs"),  # networks: before, every candidate crashed
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
