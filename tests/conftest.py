"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

# The files that take longest (wall time in `make test` on 2 cores), longest first. pytest-xdist
# hands out whole files (--dist loadfile) in collection order (--no-loadscope-reorder; its
# default order puts the files with the most tests first, which leaves the long one-test
# files to end the run on one worker while the other waits). Unlisted files follow in
# their usual order.
LONGEST_FIRST = (
    "test_evaluators.py", "test_nb201_search.py", "test_kill_resume.py", "test_steady.py",
    "test_friction.py", "test_promises.py", "test_disk_full.py", "test_ddp.py",
    "test_sandbox.py", "test_figures.py", "test_ablations.py", "test_sandbox_ddp.py",
    "test_adversarial.py", "test_export.py", "test_config.py", "test_isolation.py",
    "test_evaluate_cli.py", "test_multirun.py", "test_caps.py", "test_nb201_redraw.py",
    "test_bench_search.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the tests by file, :data:`LONGEST_FIRST` first (a stable sort)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(autouse=True, scope="session")
def _private_completion_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep the completion cache of every test out of the user's ~/.cache."""
    import os

    old = os.environ.get("LLMATIC_CACHE_DIR")
    os.environ["LLMATIC_CACHE_DIR"] = str(tmp_path_factory.mktemp("llm_cache"))
    yield
    if old is None:
        os.environ.pop("LLMATIC_CACHE_DIR", None)
    else:
        os.environ["LLMATIC_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT-2 and its BPE tokenizer, saved for ``from_pretrained`` (built once)."""
    # tests/ has no __init__.py, so pytest's default "prepend" import mode puts it on sys.path.
    from tiny_lm import build_tiny_gpt2

    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny_gpt2"))


CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def compose_config(*overrides: str):
    """Compose the real ``conf/search.yaml`` with overrides (as the CLI would)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="search", overrides=list(overrides))


# A tiny, fast search: digits (not the default mnist5k: 8x8 images train ~5x faster),
# 2 generations x 6 candidates, 1 epoch.
SMOKE = ("dataset=digits", "budget=smoke", "sandbox.workers=2", "sandbox.timeout_s=60")


@pytest.fixture(scope="session")
def shared_sandbox():
    """One pre-warmed sandbox server for the searches of a test session.

    Each search would otherwise start its own server (~10 s of imports on 2 cores); every
    candidate still runs in its own fresh child, exactly as in a real run. It is this
    process's server for the SMOKE limits (``process_sandbox``), so the app run in-process
    (:func:`run_app`) with those limits, whatever its ``sandbox.timeout_s``, uses it too.
    """
    from llmatic.config.build import sandbox_limits
    from llmatic.sandbox.evaluators import process_sandbox

    limits = sandbox_limits(compose_config(*SMOKE))
    box = process_sandbox(timeout_s=limits.timeout_s, memory_mb=limits.memory_mb,
                          torch_threads=limits.torch_threads, isolation=limits.isolation,
                          caps=limits.caps)
    box.start()
    return box  # stopped when this process exits (process_sandbox's atexit hook)


@pytest.fixture(scope="session")
def unit_sandbox():
    """One sandbox server (1 GiB, 20 s by default) for the tests that send it jobs directly.

    Each job brings its own timeout (``Sandbox.run(timeout_s=...)``, or the search's
    ``sandbox.timeout_s`` for a search it is lent to), so tests with different timeouts
    share it; every job still runs in its own fresh child.
    """
    from llmatic.sandbox import Sandbox

    with Sandbox(timeout_s=20, memory_mb=1024) as box:
        box._ensure_server()  # time the candidates, not the server's imports
        yield box


def run_app(*args: str, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """``llmatic ARGS`` run in this process from ``cwd`` (the console script's own ``main``).

    The same code path as the command line below the interpreter's start: the command-line
    checks, Hydra, resume and the app; only torch's and the sandbox server's imports are
    saved (~20 s of CPU per call). Returns the exit code (0 when the app returned).
    """
    import sys

    from llmatic.__main__ import main

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["llmatic", *args])
    try:
        main()
    except SystemExit as exc:
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    return 0


def once_per_test_run(tmp_path_factory: pytest.TempPathFactory, name: str, cfg, sandbox):
    """``run_search(cfg)`` once for the whole test run: its directory and its summary.

    Under pytest-xdist each process would run its own copy of a session fixture's search;
    the first process to need it runs it here, under a file lock in the directory the
    processes share, and the others read the finished run (tests never change it: those
    that write copy it first). Every process gets the summary ``run_search`` returned (kept
    beside the run, not read back from its ``summary.json``).
    """
    import os
    import pickle
    import shutil

    from filelock import FileLock

    from llmatic.config import run_search

    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        root = tmp_path_factory.getbasetemp()
    else:  # the basetemp of each worker lies in the test run's own directory
        root = tmp_path_factory.getbasetemp().parent
    run_dir, returned = root / f"shared-{name}", root / f"shared-{name}.summary.pkl"
    with FileLock(str(root / f"shared-{name}.lock")):
        if not returned.exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # an earlier, interrupted attempt
            summary = run_search(cfg, run_dir, show_progress=False, sandbox=sandbox)
            returned.write_bytes(pickle.dumps(summary))
    return run_dir, pickle.loads(returned.read_bytes())


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, shared_sandbox):
    """One real end-to-end search with llm=rules on digits, shared by several tests (and by
    the test processes: :func:`once_per_test_run`)."""
    cfg = compose_config(*SMOKE, "budget.generations=3")
    run_dir, summary = once_per_test_run(tmp_path_factory, "smoke_run", cfg, shared_sandbox)
    return run_dir, summary, cfg


def val_labels(*overrides: str):
    """The labels of the validation split the search scores on (from the real config)."""
    import numpy as np
    from hydra.utils import instantiate

    from llmatic.config.validate import datamodule_kwargs

    dm = instantiate(datamodule_kwargs(compose_config(*overrides).dataset))
    dm.setup()
    return np.asarray(dm.splits["y_val"])


def val_label_shares(*overrides: str):
    """Each class's share of the validation split (see :func:`val_labels`).

    A network whose output is the same for every image predicts one class, so its accuracy
    is exactly one of these shares.
    """
    import numpy as np

    y = val_labels(*overrides)
    classes = int(compose_config(*overrides).dataset.num_classes)
    return np.bincount(y, minlength=classes) / len(y)


def evaluate_source(source: str, sandbox, tmp_dir, *overrides: str):
    """One network evaluated as the search evaluates a candidate (the session's sandbox)."""
    from llmatic.config import validate_config
    from llmatic.config.build import build_space

    cfg = compose_config(*SMOKE, *overrides)
    validate_config(cfg)
    space = build_space(cfg, Path(tmp_dir), sandbox)
    try:
        return space.submit(source, "Net", candidate_id=0).result()
    finally:
        space.close()


#: The ablations' tiny search: 2 generations, warm-up after 2 networks / 2 prompts.
FAST = (*SMOKE, "budget.warmup_networks=2", "budget.warmup_prompts=2", "budget.generations=2")


@pytest.fixture(scope="session")
def random_generation_run(tmp_path_factory: pytest.TempPathFactory, shared_sandbox):
    """``ablation=random_generation`` at seed 0: every child mutates the seed, so networks
    repeat (candidate 10 repeats 9: two 'Delete a layer' edits of the seed). Shared by the
    ablation tests and the duplicate tests."""
    cfg = compose_config(*FAST, "ablation=random_generation")
    run_dir, summary = once_per_test_run(tmp_path_factory, "random_generation", cfg,
                                         shared_sandbox)
    return run_dir, summary, cfg
