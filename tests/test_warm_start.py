"""No cold start on the critical path (issue 29, item 4).

The sandbox server a config will use starts before the config is checked, so it imports
torch and Lightning while the search process validates, loads the data and builds the
archives; the seed is submitted before the archives are built; the search process's data
path imports neither torch nor Lightning. Cheap: no search trains anything here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_config

from llmatic.errors import ConfigError

#: A memory limit no other test uses: this config's server is its own (process_sandbox's
#: key; the timeout is not part of it, it travels with each job).
OWN = ("dataset=digits", "budget=smoke", "sandbox.memory_mb=4001")


def test_server_starts_before_the_config_is_checked_and_goes_when_it_fails(
        monkeypatch, tmp_path):
    import llmatic.config.runner as runner
    from llmatic.config.build import sandbox_limits
    from llmatic.sandbox.evaluators import process_sandbox

    cfg = compose_config(*OWN)
    limits = sandbox_limits(cfg)
    key = {"timeout_s": limits.timeout_s, "memory_mb": limits.memory_mb,
           "torch_threads": limits.torch_threads, "isolation": limits.isolation,
           "caps": limits.caps}
    seen = {}

    def checks(c):  # noqa: ANN001 - the config's checks, stopped with a named error
        box = process_sandbox(**key)
        seen["box"], seen["proc"] = box, box._proc
        seen["running"] = box._proc is not None and box._proc.poll() is None
        raise ConfigError("budget.epochs: stopped by the test")

    monkeypatch.setattr(runner, "validate_config", checks)
    with pytest.raises(ConfigError, match="stopped by the test"):
        runner.run_search(cfg, tmp_path / "run", show_progress=False)
    assert seen["running"], "the server was not started before the config's checks"
    # Started for a config that failed: killed at once (not left importing), and forgotten.
    assert seen["proc"].poll() is not None
    assert seen["box"]._proc is None
    assert process_sandbox(**key) is not seen["box"]


def test_the_seed_is_submitted_before_the_archives_are_built(tmp_path):
    from rich.console import Console

    from llmatic.config import validate_config
    from llmatic.config.build import build_search
    from llmatic.nb201.table import write_synthetic_table
    from llmatic.report.loggers import CSVLogger
    from llmatic.search import run

    table = tmp_path / "synthetic.csv"
    write_synthetic_table(table, seed=0)
    cfg = compose_config("experiment=paper_nb201", "llm=rules", "nb201.baselines=[]",
                         "budget.generations=1", "budget.candidates_per_generation=2",
                         f"nb201.table={table}")
    validate_config(cfg)
    (tmp_path / "run").mkdir()
    search = build_search(cfg, tmp_path / "run")
    events = []
    submit, new_state = search.space.submit, search.new_state

    def spy_submit(source, class_name, candidate_id):  # noqa: ANN001, ANN202
        events.append(("submit", candidate_id))
        return submit(source, class_name, candidate_id)

    def spy_new_state():  # noqa: ANN202
        events.append(("new_state", None))
        return new_state()

    search.space.submit, search.new_state = spy_submit, spy_new_state
    run(search, None, logger=CSVLogger(), run_config={}, console=Console(quiet=True),
        show_progress=False)
    assert events[:2] == [("submit", 0), ("new_state", None)]
    assert [e for e in events if e == ("submit", 0)] == [("submit", 0)]  # submitted once


def test_the_search_process_data_path_imports_neither_torch_nor_lightning(tmp_path):
    """What the search process does before the seed: data, child arrays, worker slots."""
    code = f"""
import os, sys
from hydra.utils import instantiate
from conftest import compose_config
from llmatic.config.validate import datamodule_kwargs
from llmatic.sandbox import Sandbox
from llmatic.sandbox.evaluators import PoolEvaluator

cfg = compose_config("dataset=digits")
dm = instantiate(datamodule_kwargs(cfg.dataset), _convert_="all")
dm.prepare_data()
dm.setup()
dm.write_child_arrays({str(tmp_path)!r})
box = Sandbox(timeout_s=30, memory_mb=None)
pool = PoolEvaluator(workers=2, sandbox=box)
pool.start(timeout_s=30, memory_mb=None, torch_threads=1)
box.close()
gpu_driver = os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/kfd")
print("lightning" in sys.modules, "torch" in sys.modules and not gpu_driver)
"""
    tests = Path(__file__).parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tests, timeout=300, env={**__import__("os").environ,
                                                      "PYTHONPATH": str(tests)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False"]
    assert (tmp_path / "x_train.npy").exists()
