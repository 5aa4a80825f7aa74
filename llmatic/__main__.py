"""The Hydra app: ``llmatic [overrides]`` or ``python -m llmatic [overrides]``.

Before Hydra starts, :func:`main` checks the command line: an override that does not compose
(a typo in a key or a group option), ``hydra/launcher=slurm`` where Slurm's ``srun`` is missing
and ``resume=`` of a directory that holds no run are one named line on stderr (exit 2), and
nothing is written. A resume logs into the run it continues (no new ``outputs/DATE/TIME``).
A command that fails before its search evaluated anything removes the run directory Hydra
made for it (only ``.hydra/``, the log, the saved config and the children's copy of the
data were in it).

No cold start on the critical path: the sandbox server the config will use starts as soon as
the command line's config is composed (before Hydra's app, the config's checks, the data and
the seed), so it imports torch and Lightning while the search process does the rest; the
time to the first result counts from the process's start (from the app's call for a sweep's
later jobs).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from llmatic.config import (
    CONFIG_DIR,
    ConfigError,
    preflight,
    resume_config,
    run_search,
    validate_config,
)
from llmatic.rundir import CONFIG, DATA

log = logging.getLogger("llmatic")

#: What a run directory holds before its search has evaluated anything: Hydra's files, the
#: saved config and the children's copy of the dataset (written before the LLM loads).
_STARTUP_FILES = {".hydra", CONFIG, DATA}
#: When this process started (perf_counter), for the first job's time to the first result.
_PROCESS_START: list[float] = []


def _name_wandb_run(cfg: DictConfig, hydra_cfg) -> None:  # noqa: ANN001
    """Group the runs of one sweep in W&B and name each run by what varies."""
    from hydra.types import RunMode

    if not str(cfg.logger.get("_target_", "")).endswith("WandbLogger"):
        return
    if cfg.logger.get("group") is None and hydra_cfg.mode == RunMode.MULTIRUN:
        sweep = Path(hydra_cfg.sweep.dir).name
        cfg.logger.group = f"{cfg.get('experiment_name') or 'sweep'}-{sweep}"
    if cfg.logger.get("name") is None:
        name = f"{cfg.ablation.name}-p{cfg.operators.p_mutation}-seed{cfg.seed}"
        if cfg.get("space", "network") == "nb201":  # a sweep covers three datasets
            name = f"nb201-{cfg.nb201.dataset}-{name}"
        cfg.logger.name = name


def remove_if_unused(run_dir: Path) -> bool:
    """Remove ``run_dir`` if nothing but start-up files is in it (a failed command's folder).

    Start-up files are Hydra's ``.hydra/``, its log, the saved ``config.yaml`` and ``data/``
    (the dataset's arrays for the children): the search had not evaluated anything. An empty
    ``outputs/DATE`` (and ``outputs``) above it goes too.
    """
    try:
        entries = list(run_dir.iterdir())
    except OSError:
        return False
    if any(e.name not in _STARTUP_FILES and not (e.is_file() and e.suffix == ".log")
           for e in entries):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    parent = run_dir.parent
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", parent.name):  # Hydra's outputs/DATE/TIME
        for folder in (parent, parent.parent):
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break
    return True


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="search")
def _app(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from llmatic.config.build import prestart_sandbox
    from llmatic.errors import DatasetError, RunDirectoryError

    started = _PROCESS_START.pop() if _PROCESS_START else time.perf_counter()
    resuming = bool(cfg.resume)
    run_dir = Path(cfg.resume or HydraConfig.get().runtime.output_dir)
    try:
        if resuming:
            cfg = resume_config(cfg, list(HydraConfig.get().overrides.task))
            run_dir = Path(cfg.resume)
        else:
            run_dir = Path(HydraConfig.get().runtime.output_dir)
        prestart_sandbox(cfg)  # (a sweep's job, a resume) imports while the rest runs
        validate_config(cfg)  # before the heavy imports below
        preflight(cfg)
        _name_wandb_run(cfg, HydraConfig.get())
        summary = run_search(cfg, run_dir, resume=resuming, started_at=started)
    except KeyboardInterrupt:
        print(f"\nllmatic: interrupted; continue with: llmatic resume={run_dir}", file=sys.stderr)
        sys.exit(130)
    except BaseException as exc:
        if not resuming and remove_if_unused(Path(HydraConfig.get().runtime.output_dir)):
            log.debug("removed the unused run directory of a failed command")
        if isinstance(exc, (ConfigError, DatasetError)):
            print(f"llmatic: error: {exc}", file=sys.stderr)
            sys.exit(2)
        if isinstance(exc, RunDirectoryError):
            print(f"llmatic: error: {exc}", file=sys.stderr)
            sys.exit(3)
        raise
    print(f"run directory: {run_dir}")
    # Returned for Hydra sweepers (e.g. Optuna) that optimise a scalar.
    return summary["network_archive"]["best_fitness"]


# --------------------------------------------------------------------------------------
# The command line, checked before Hydra makes a run directory
# --------------------------------------------------------------------------------------
def _flat_keys(node, prefix: str = "") -> list[str]:  # noqa: ANN001
    from omegaconf import OmegaConf

    keys = []
    if OmegaConf.is_dict(node):
        for key in node.keys():
            path = f"{prefix}{key}"
            keys.append(path)
            try:
                keys += _flat_keys(node._get_node(key), f"{path}.")
            except Exception:  # noqa: BLE001 - an unresolvable node has no children to offer
                pass
    return keys


def _nearest_key(key: str) -> str | None:
    """The config key closest to a mistyped one (None when nothing is close)."""
    import difflib

    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            base = compose(config_name="search")
    except Exception:  # noqa: BLE001 - a suggestion is a courtesy
        return None
    match = difflib.get_close_matches(key, _flat_keys(base), n=1, cutoff=0.75)
    return match[0] if match else None


def _one_line(exc: Exception, overrides: list[str]) -> str:
    """A Hydra composition error as one line that names the override and the fix."""
    text = str(exc)
    missing = re.search(r"Could not override '([^']+)'", text)
    if missing:
        key = missing.group(1)
        given = next((o for o in overrides if o.split("=", 1)[0].lstrip("~") == key), key)
        near = _nearest_key(key)
        hint = f"did you mean {near}? " if near else ""
        return f"{given}: no such key ({hint}a new key needs a leading +: +{given.lstrip('~')})"
    group = re.search(r"Could not find '([^']+)/([^']+)'", text)
    options = re.search(r"Available options in '[^']+':\n((?:\t.*\n?)+)", text)
    if group:
        found = ", ".join(o.strip() for o in options.group(1).splitlines()) if options else ""
        return (f"{group.group(1)}={group.group(2)}: no such option"
                + (f"; choose one of: {found}" if found else ""))
    first = text.split("\n\n")[0].split("Config search path")[0]
    return " ".join(first.split())


def check_command_line(argv: list[str]) -> str | None:
    """What is wrong with ``argv`` before anything runs (None: go ahead).

    Checks that the overrides compose (single runs), that a Slurm launcher can find
    ``srun`` and that ``resume=DIR`` names a run directory.
    """
    return _check_and_compose(argv)[0]


def _check_and_compose(argv: list[str]) -> tuple[str | None, DictConfig | None]:
    """:func:`check_command_line`'s answer, and the config a single run's overrides compose."""
    overrides = [a for a in argv if not a.startswith("-")]
    if any(o in ("hydra/launcher=slurm", "hydra/launcher=submitit_slurm") for o in overrides) \
            and shutil.which("srun") is None:
        return ("hydra/launcher=slurm: Slurm's srun is not on PATH; run the sweep on a Slurm "
                "login node, or drop the launcher (hydra/launcher=parallel runs the jobs here)"
                ), None
    resume = _resume_value(argv)
    if resume is not None:
        run_dir = Path(resume).expanduser()
        if not (run_dir / "config.yaml").exists() and not (run_dir / ".hydra" / "config.yaml") \
                .exists():
            what = ("no such directory" if not run_dir.exists()
                    else "not an llmatic run directory (no config.yaml)")
            return (f"resume={resume}: {what}; give the directory a run printed "
                    "(outputs/DATE/TIME)"), None
    if len(overrides) != len(argv):  # flags (-m, --cfg, -cn ...): Hydra checks them itself
        return None, None
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="search", overrides=overrides)
    except Exception as exc:  # noqa: BLE001 - every composition error is the user's to fix
        return _one_line(exc, overrides), None
    return None, cfg


def _resume_value(argv: list[str]) -> str | None:
    for arg in argv:
        if arg.startswith("resume=") and arg.split("=", 1)[1] not in ("", "null", "None"):
            return arg.split("=", 1)[1].strip("'\"")
    return None


def _log_into_resumed_run(argv: list[str]) -> list[str]:
    """``resume=DIR`` (one run): Hydra logs into DIR and makes no new output directory."""
    if any(a in ("-m", "--multirun") or a.startswith(("hydra.run.dir=", "-")) for a in argv):
        return argv
    resume = next((a.split("=", 1)[1] for a in argv if a.startswith("resume=")), None)
    if resume is None or _resume_value(argv) is None:
        return argv
    # output_subdir=null: the resumed run's own .hydra/ (its original config) stays as it was.
    return [*argv, f"hydra.run.dir={resume}", "hydra.output_subdir=null"]


def _process_start() -> float:
    """When this process started, on the ``time.perf_counter`` clock (now if unknown)."""
    now = time.perf_counter()
    try:
        with open("/proc/self/stat") as fh:  # field 22: start time, clock ticks after boot
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return now - max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return now


def main() -> None:
    """Console-script entry point."""
    _PROCESS_START[:] = [_process_start()]
    argv = sys.argv[1:]
    problem, cfg = _check_and_compose(argv)
    if problem is not None:
        print(f"llmatic: error: {problem}", file=sys.stderr)
        sys.exit(2)
    if cfg is not None and _resume_value(argv) is None:
        from llmatic.config.build import prestart_sandbox

        prestart_sandbox(cfg)  # imports torch and Lightning while Hydra starts the app
    sys.argv[1:] = _log_into_resumed_run(argv)
    _app()


if __name__ == "__main__":
    main()
