"""What a resume may change, and a run killed before its first checkpoint."""

from __future__ import annotations

import pytest
from conftest import SMOKE, compose_config
from omegaconf import OmegaConf

from llmatic.__main__ import resume_config
from llmatic.config import run_search
from llmatic.errors import ConfigError
from llmatic.rundir import read_history


def _saved(tmp_path, *overrides):
    cfg = compose_config(*SMOKE, *overrides)
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return cfg


def _resume(tmp_path, *overrides):
    args = [*overrides, f"resume={tmp_path}"]
    return resume_config(compose_config(*SMOKE, *args), args)


@pytest.mark.parametrize(("override", "key"), [
    ("sandbox.torch_threads=2", "sandbox.torch_threads"),  # accepted before: a quiet change
    ("temperature=constant", "temperature"),
    ("seed=5", "seed"),
    ("budget.epochs=3", "budget.epochs"),
])
def test_resume_refuses_an_override_that_changes_results_naming_the_key(tmp_path, override,
                                                                        key):
    _saved(tmp_path)
    with pytest.raises(ConfigError, match=rf"{key}.*would change the results"):
        _resume(tmp_path, override)


def test_resume_takes_the_allowed_overrides_and_repeated_values(tmp_path):
    _saved(tmp_path)
    cfg = _resume(tmp_path, "budget.generations=9", "sandbox.workers=1",
                  "sandbox.torch_threads=1")  # the saved value: no change, accepted
    assert cfg.budget.generations == 9 and cfg.sandbox.workers == 1
    assert cfg.resume == str(tmp_path)


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(tmp_path,
                                                                          shared_sandbox):
    # What Hydra leaves when the process dies during start-up: .hydra/ and the log.
    (tmp_path / ".hydra").mkdir()
    cfg = compose_config(*SMOKE, "budget.generations=1")
    (tmp_path / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (tmp_path / "__main__.log").write_text("")
    resumed = resume_config(compose_config(*SMOKE, f"resume={tmp_path}"), [f"resume={tmp_path}"])
    summary = run_search(resumed, tmp_path, resume=True, show_progress=False,
                         sandbox=shared_sandbox)
    history = read_history(tmp_path)
    assert history[0]["operator"] == "seed"
    assert summary["candidates"] == len(history) == 1 + cfg.budget.candidates_per_generation
    assert (tmp_path / "config.yaml").exists()
