"""Rough edges met on first use: Ctrl-C, trainer=gpu without CUDA, W&B without a login, and a
relative ``LLMATIC_RUN_DIR`` in the figures notebook."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import compose_config

from llmatic.config import ConfigError, preflight
from llmatic.rundir import read_checkpoint, read_history

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------
# trainer=gpu on a machine without CUDA; logger=wandb without credentials
# --------------------------------------------------------------------------------------
def _no_cuda(monkeypatch):
    import llmatic.config.validate as validate

    monkeypatch.setattr(validate, "cuda_available", lambda: False)


def _no_wandb_login(monkeypatch, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("WANDB_API_KEY", "WANDB_MODE", "NETRC", "WANDB_CONFIG_DIR",
                 "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_gpu_trainer_without_cuda_is_a_config_error(monkeypatch):
    _no_cuda(monkeypatch)
    for trainer in ("trainer=gpu", "trainer=ddp"):
        with pytest.raises(ConfigError, match=r"no CUDA device is visible; use trainer=cpu"):
            preflight(compose_config(trainer))


def test_cpu_trainer_never_looks_for_cuda(monkeypatch):
    import llmatic.config.validate as validate

    def boom():
        raise AssertionError("a CPU trainer must not probe CUDA (it imports torch)")

    monkeypatch.setattr(validate, "cuda_available", boom)
    preflight(compose_config("trainer=cpu"))


def test_wandb_without_credentials_names_both_fixes(monkeypatch, tmp_path):
    _no_wandb_login(monkeypatch, tmp_path)
    with pytest.raises(ConfigError) as err:
        preflight(compose_config("logger=wandb"))
    for fix in ("wandb login", "WANDB_MODE=offline", "logger=csv"):
        assert fix in str(err.value)


def test_wandb_with_a_login_or_offline_passes(monkeypatch, tmp_path):
    home = _no_wandb_login(monkeypatch, tmp_path)
    preflight(compose_config("logger=wandb", "logger.mode=offline"))
    preflight(compose_config("logger=wandb", "logger.mode=disabled"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    preflight(compose_config("logger=wandb"))
    monkeypatch.delenv("WANDB_MODE")
    netrc = home / ".netrc"  # what `wandb login` writes
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    preflight(compose_config("logger=wandb"))
    netrc.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    preflight(compose_config("logger=wandb"))
    preflight(compose_config("logger=csv"))


@pytest.mark.parametrize("case", ["gpu", "wandb"])
def test_the_app_stops_before_any_work(case, monkeypatch, tmp_path, capsys):
    """The command line: exit 2 with the named error; no config.yaml, no history."""
    from llmatic.__main__ import _app

    if case == "gpu":
        _no_cuda(monkeypatch)
        overrides = ["trainer=gpu"]
    else:
        _no_wandb_login(monkeypatch, tmp_path)
        overrides = ["logger=wandb"]
    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["llmatic", *overrides, "dataset=digits", "budget=smoke",
                                      f"hydra.run.dir={run_dir}"])
    started = time.perf_counter()
    with pytest.raises(SystemExit) as exit_:
        _app()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "llmatic: error:" in err and "Traceback" not in err
    assert ("use trainer=cpu" if case == "gpu" else "wandb login") in err
    assert not (run_dir / "config.yaml").exists()
    assert not (run_dir / "history.jsonl").exists()
    assert time.perf_counter() - started < 30  # before the sandbox server or the seed


# --------------------------------------------------------------------------------------
# The notebook: a relative LLMATIC_RUN_DIR is relative to where the command ran
# --------------------------------------------------------------------------------------
def _run_dir_cell() -> str:
    nb = json.loads((ROOT / "notebooks" / "figures.ipynb").read_text())
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    return next(c for c in cells if "LLMATIC_RUN_DIR" in c)


def test_notebook_resolves_a_relative_run_dir_against_the_shell_directory(monkeypatch,
                                                                           tmp_path):
    shell_dir, notebook_dir = tmp_path / "repo", tmp_path / "repo" / "notebooks"
    notebook_dir.mkdir(parents=True)
    monkeypatch.chdir(notebook_dir)  # jupyter starts the kernel in the notebook's folder
    monkeypatch.setenv("PWD", str(shell_dir))  # ... with the user's shell directory in PWD
    monkeypatch.setenv("LLMATIC_RUN_DIR", "outputs/2026-01-01/12-00-00")
    scope: dict = {}
    exec(_run_dir_cell(), scope)  # noqa: S102 - the notebook's own cell
    assert Path(scope["RUN_DIR"]) == shell_dir / "outputs" / "2026-01-01" / "12-00-00"
    monkeypatch.setenv("LLMATIC_RUN_DIR", str(tmp_path / "abs"))
    exec(_run_dir_cell(), scope)  # noqa: S102
    assert Path(scope["RUN_DIR"]) == tmp_path / "abs"


# --------------------------------------------------------------------------------------
# Ctrl-C during a generation
# --------------------------------------------------------------------------------------
# Two generations: whenever the interrupt lands, work is left after it (one generation of
# two candidates can finish within the moment between seeing a job and sending SIGINT).
ARGS = ("dataset=digits", "budget=smoke",
        "budget.generations=2", "budget.candidates_per_generation=2",
        "budget.epochs=6", "sandbox.workers=2", "seed=5")


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else int(fields[1])


def _descendants(root: int) -> set[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent(int(entry))
            if parent is not None:
                parents[int(entry)] = parent
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if _parent(pid) is not None}  # zombies count as gone


@pytest.mark.slow
def test_ctrl_c_stops_within_seconds_and_resumes(tmp_path, shared_sandbox, monkeypatch):
    from conftest import run_app

    from llmatic.config import run_search

    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "llmatic", *ARGS, f"hydra.run.dir={run_dir}"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            # A shell that runs the tests in the background ignores SIGINT,
                            # and children inherit that: give the app a terminal's default.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 240
        jobs = run_dir / "jobs"
        while time.time() < deadline and proc.poll() is None:  # generation 1 is training
            if ((run_dir / "history.jsonl").exists() and jobs.exists()
                    and any(p.name != "000000" for p in jobs.iterdir())):
                break
            time.sleep(0.05)
        time.sleep(0.3)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        tree = _descendants(proc.pid)
        assert len(tree) >= 2, "no sandbox server and candidate running"
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the foreground group
        sent = time.perf_counter()
        code = proc.wait(timeout=120)
        took = time.perf_counter() - sent
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 130, err[-2000:]
    assert took < 10, f"took {took:.1f} s to stop"
    assert f"llmatic resume={run_dir}" in err
    time.sleep(0.5)
    assert not _alive(tree), "sandbox processes survived the interrupt"
    state = read_checkpoint(run_dir)
    assert state.generation < 2, "interrupted after the last generation"
    # Nothing of the interrupted generation: the history ends where the checkpoint does.
    assert len(read_history(run_dir)) == state.history_lines

    # The resume: the same command in this process (conftest.run_app), which saves a start
    # of torch and of a sandbox server; the interrupted run above is the real process.
    assert run_app(f"resume={run_dir}", cwd=tmp_path, monkeypatch=monkeypatch) == 0
    # The resume logged into the run it continued and made no outputs/DATE/TIME of its own.
    assert not (tmp_path / "outputs").exists()
    assert f"resuming {run_dir}" in (run_dir / "__main__.log").read_text()
    reference = tmp_path / "reference"
    run_search(compose_config(*ARGS), reference, show_progress=False, sandbox=shared_sandbox)

    def strip(records):
        return [{k: v for k, v in r.items() if k != "timings"} for r in records]

    assert strip(read_history(run_dir)) == strip(read_history(reference))


# --------------------------------------------------------------------------------------
# llmatic-nb201 report: Hydra's .hydra folders are not runs
# --------------------------------------------------------------------------------------
def test_nb201_report_does_not_count_hydra_folders_as_unfinished_runs(tmp_path, capsys):
    from llmatic.cli.nb201 import main as nb201_main

    result = {"dataset": "cifar10", "table": "/data/nb201.csv", "seed": 0, "budget": 100,
              "optimum_test_accuracy": 94.37, "table_synthetic": False,
              "methods": [{"method": "llmatic", "generator": "rules", "test_accuracy": 93.0}]}
    config = "space: nb201\nnb201:\n  table: x\n"
    for name in ("0", "1"):  # finished runs: their own config and Hydra's copy
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "config.yaml").write_text(config)
        (tmp_path / name / "config.yaml").write_text(config)
        (tmp_path / name / "nb201.json").write_text(json.dumps({**result, "seed": int(name)}))
    assert nb201_main(["report", str(tmp_path)]) == 0
    assert "have no nb201.json" not in capsys.readouterr().out
    # A run stopped before writing its own config.yaml: named once, by its run directory.
    (tmp_path / "2" / ".hydra").mkdir(parents=True)
    (tmp_path / "2" / ".hydra" / "config.yaml").write_text(config)
    assert nb201_main(["report", str(tmp_path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "1 nb201 run(s)" in out and str(tmp_path / "2") in out and ".hydra" not in out


# --------------------------------------------------------------------------------------
# Messages: the progress line, percent in NAS-Bench-201 runs
# --------------------------------------------------------------------------------------
def test_progress_line_names_both_archives_and_never_prints_negative_zero():
    from llmatic.search.loop import progress_info
    from llmatic.search.metrics import exploration_metrics

    one = exploration_metrics([{"instruction_id": 3, "temperature": 0.5}] * 4, instructions=5)
    assert one["instruction_entropy"] == 0.0 and math.copysign(1, one["instruction_entropy"]) > 0
    metrics = {"network_cells": 10, "prompt_cells": 20, "instruction_entropy": -0.0,
               "distinct_temperatures": 3, "qd_score": 8.4567}
    line = progress_info(0.9146, metrics, 0.5)
    assert "best 0.9146  QD 8.46  net cells 10  prompt cells 20" in line and "10/20" not in line
    assert "H 0.0000" in line and "-0.0000" not in line
    assert progress_info(-1e-9, {**metrics, "instruction_entropy": -1e-12}, 0.5).count("-") == 0
    assert "best 91.46%" in progress_info(0.9146, metrics, 0.5, percent=True)


def test_nb201_elites_are_printed_in_percent_like_its_results(capsys):
    from llmatic.search.loop import print_elites

    elite = {"candidate_id": 7, "generation": 2, "fitness": 0.9146, "val_accuracy": 0.9146,
             "params": 1000, "flops": 2e6, "descriptors": {"width_to_depth": 1.0}}
    summary = {"elites": [elite], "network_archive": {"cells_filled": 1}, "candidates": 9,
               "generator": "rules"}
    print_elites(summary)
    assert "0.9146" in capsys.readouterr().out
    print_elites({**summary, "nb201": {}})
    out = capsys.readouterr().out
    assert "91.46%" in out and "0.9146" not in out


# --------------------------------------------------------------------------------------
# A failed command: one named line, exit 2, no stray outputs/DATE/TIME
# --------------------------------------------------------------------------------------
FAILED_COMMANDS = [
    (["budgett=smoke"], "budgett=smoke: no such key (did you mean budget?"),
    (["budget.generatons=3"], "did you mean budget.generations?"),
    (["budget=smok"], "budget=smok: no such option; choose one of: default, nb201, paper, smoke"),
    (["seed=abc"], "seed: must be an integer >= 0, got 'abc'"),
    (["operators.p_mutation=1.5"], "operators.p_mutation: must be in [0, 1]"),
    (["resume=no/such/run"], "resume=no/such/run: no such directory"),
    (["-m", "hydra/launcher=slurm", "budget=smoke"], "Slurm's srun is not on PATH"),
    (["evaluator=ray", "evaluator.workers=8", "evaluator.num_gpus=1"],
     "evaluator.num_gpus=1: evaluator=ray starts a local Ray instance"),
    pytest.param(["dataset=cifar10", "dataset.data_dir=nodata", "dataset.download=false"],
                 "dataset.data_dir", marks=pytest.mark.slow),  # fails after config.yaml
    pytest.param(["llm=hf", "llm.model=/nonexistent/model"],
                 "llm.model='/nonexistent/model' could not be loaded",
                 marks=pytest.mark.slow),  # fails after the children's data/ was written
]


@pytest.mark.parametrize(("args", "message"), FAILED_COMMANDS)
def test_a_failed_command_is_one_named_line_and_leaves_no_run_directory(args, message,
                                                                          tmp_path):
    if "hydra/launcher=slurm" in args and shutil.which("srun"):
        pytest.skip("this machine has Slurm")
    if "evaluator.num_gpus=1" in args:
        from llmatic.config.validate import cuda_available

        if cuda_available():
            pytest.skip("this machine has a GPU")
    proc = subprocess.run([sys.executable, "-m", "llmatic", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("llmatic: error: ") and message in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a stray run directory"


# --------------------------------------------------------------------------------------
# Ray: resources the cluster cannot give are an error before the search starts
# --------------------------------------------------------------------------------------
def test_ray_gpus_on_a_machine_without_cuda_fail_before_ray_starts(monkeypatch):
    _no_cuda(monkeypatch)
    cfg = compose_config("evaluator=ray", "evaluator.workers=8", "evaluator.num_gpus=1")
    with pytest.raises(ConfigError, match=r"evaluator.num_gpus=1: .*no CUDA device"):
        preflight(cfg)
    preflight(compose_config("evaluator=ray", "evaluator.num_gpus=0"))  # CPU actors: fine
    # On a cluster the GPUs are on its nodes: checked once Ray has started.
    preflight(compose_config("evaluator=ray", "evaluator.num_gpus=1", "evaluator.address=auto"))


@pytest.mark.slow
def test_ray_resources_are_checked_once_ray_runs(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from llmatic.config import run_search
    from llmatic.config.validate import check_ray_resources

    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        check_ray_resources(compose_config("evaluator=ray", "evaluator.workers=2"))
        with pytest.raises(ConfigError, match=r"evaluator.workers=1 x evaluator.num_gpus=1 "
                                              r"needs 1 GPUs, the Ray cluster has 0"):
            check_ray_resources(compose_config("evaluator=ray", "evaluator.workers=1",
                                               "evaluator.num_gpus=1"))
        with pytest.raises(ConfigError, match=r"needs 8 CPUs, the Ray cluster has 2 \(waited"):
            check_ray_resources(compose_config("evaluator=ray", "evaluator.workers=8",
                                               "evaluator.address=auto"), wait_s=0.5, poll_s=0.1)
        # The real path: 8 one-CPU actors on 2 CPUs would wait forever; the run stops first.
        cfg = compose_config(*ARGS, "evaluator=ray", "evaluator.workers=8")
        with pytest.raises(ConfigError, match=r"needs 8 CPUs, the Ray cluster has 2"):
            run_search(cfg, tmp_path / "run", show_progress=False)
        assert not (tmp_path / "run" / "history.jsonl").exists()
    finally:
        ray.shutdown()


# --------------------------------------------------------------------------------------
# An unreachable OpenAI-compatible endpoint: a fix that fits the endpoint
# --------------------------------------------------------------------------------------
def test_an_unreachable_endpoint_never_suggests_serving_a_hosted_model():
    from llmatic.llm.openai_backend import OpenAIGenerator
    from llmatic.llm.openai_backend.generator import unreachable_hint

    with pytest.raises(ValueError) as err:  # nothing listens on port 1 of this machine
        OpenAIGenerator(model="gpt-4o-mini", base_url="http://127.0.0.1:1/v1", api_key="x")
    message = str(err.value)
    assert "is unreachable" in message and "vllm serve HF_ORG/MODEL --port 1" in message
    assert "gpt-4o-mini" not in message.split("is unreachable")[1]
    assert "vllm serve Qwen/Qwen2.5-Coder-7B-Instruct" in unreachable_hint(
        "http://localhost:8000/v1", "Qwen/Qwen2.5-Coder-7B-Instruct")
    hosted = unreachable_hint("https://api.openai.com/v1", "gpt-4o-mini")
    assert "network connection" in hosted and "serve" not in hosted
    with pytest.raises(ConfigError, match=r"unreachable .*start the server first") as err:
        preflight(compose_config("llm=openai", "llm.base_url=http://127.0.0.1:1/v1",
                                 "llm.model=gpt-4o-mini"))
    assert "gpt-4o-mini" not in str(err.value)


# --------------------------------------------------------------------------------------
# Citations of the method point at a page in the repository, at sections it has
# --------------------------------------------------------------------------------------
def test_every_citation_of_the_method_resolves_to_a_section_of_docs_method():
    import re

    method = (ROOT / "docs" / "method.md").read_text()
    sections = set(re.findall(r"^##+ (\d+(?:\.\d+)?)[. ]", method, flags=re.M))
    cited, stale = set(), []
    paths = [ROOT / "README.md", *(ROOT / "experiments").rglob("*.md"),
             *(ROOT / "conf").rglob("*.yaml"), *(ROOT / "llmatic").rglob("*.py"),
             *(ROOT / "tests").rglob("*.py")]
    for path in paths:
        text = path.read_text()
        if "METHOD" + ".md" in text:  # split: this file does not cite it
            stale.append(str(path))
        for match in re.finditer(r"docs/method\.md\)?((?:,? ?§\d+(?:\.\d+)?)+)", text):
            cited |= set(re.findall(r"§(\d+(?:\.\d+)?)", match.group(1)))
    assert not stale, f"citations of the spec outside the repository: {stale}"
    assert cited and cited <= sections, f"cited sections missing from docs/method.md: " \
                                        f"{sorted(cited - sections)}"
