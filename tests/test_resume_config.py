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
                                                                          shared_sandbox,
                                                                          capsys):
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
    # Resumed again once finished: it says nothing was left to do and changes nothing.
    capsys.readouterr()
    again = run_search(resumed, tmp_path, resume=True, show_progress=False,
                       sandbox=shared_sandbox)
    err = " ".join(capsys.readouterr().err.split())
    assert "already finished its 1 generations: nothing left to do" in err
    assert read_history(tmp_path) == history and again["candidates"] == summary["candidates"]


def test_the_readme_lists_every_override_a_resume_may_change():
    from pathlib import Path

    from llmatic.config import RESUMABLE_OVERRIDES

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("# continue an interrupted run")
    paragraph = readme[start:readme.index("resume=outputs/", start)]
    missing = [key for key in RESUMABLE_OVERRIDES if f"{key}" not in paragraph]
    assert not missing, f"README's resume comment does not list {missing}"
    search_yaml = (Path(__file__).resolve().parent.parent / "conf" / "search.yaml").read_text()
    assert "refused" in search_yaml[search_yaml.index("resume: null") - 300:][:300]
