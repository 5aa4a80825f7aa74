"""Running a search to its end: generations, checkpoints, progress, the summary.

:func:`run` takes a built :class:`~llmatic.search.engine.Search` and a state (fresh or loaded
from a checkpoint), runs the remaining generations with a live progress bar (best fitness,
QD score, cells of both archives), checkpoints after each one, then writes ``summary.json``
and prints the elites.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from llmatic.rundir import (
    HISTORY,
    SUMMARY,
    atomic_write_bytes,
    save_checkpoint,
    truncate_history,
    write_failed,
)
from llmatic.search.engine import Search
from llmatic.search.metrics import summarize
from llmatic.search.state import SearchState

log = logging.getLogger("llmatic")


def run(search: Search, state: SearchState | None, *, logger: Any, run_config: dict[str, Any],
        console: Any, show_progress: bool | None = None) -> dict[str, Any]:
    """Run (or continue, when ``state`` is given) ``search``; return its summary.

    A continued run cuts the history back to the checkpoint, so a generation interrupted
    half-way is redone identically.

    Args:
        search: The built search.
        state: The state of the last checkpoint, or None for a new run.
        logger: The metrics logger (``start``, ``log_generation``, ``finish``).
        run_config: The resolved config as plain data (what loggers record).
        console: A rich console for progress and tables.
        show_progress: Show the progress bar (default: when the console is a terminal).
    """
    run_dir = search.run_dir
    try:
        if state is None:
            search.submit_seed()  # evaluated while the archives are built
            state = search.new_state()
            logger.start(run_dir, run_config)
            started = time.perf_counter()
            search.evaluate_seed(state)
            state.wall_seconds += time.perf_counter() - started
            save_checkpoint(run_dir, state)
        else:
            truncate_history(run_dir / HISTORY, state.history_lines)
            logger.start(run_dir, run_config, resumed=True)
            if hasattr(logger, "truncate"):
                logger.truncate(state.generation)
            if state.generation >= search.settings.generations:
                console.print(f"[bold]{run_dir} already finished its {state.generation} "
                              "generations: nothing left to do[/] (raise budget.generations "
                              "to extend it). Its elites:", soft_wrap=True)
            else:
                log.info("resuming %s after generation %d", run_dir, state.generation)
        _loop(search, state, logger, console, show_progress)
        summary = summarize(search, state)
        extra = search.space.finish(search, state, console)
        if extra is not None:
            summary[search.space.name] = extra
        try:
            atomic_write_bytes(run_dir / SUMMARY, json.dumps(summary, indent=2).encode())
        except OSError as exc:
            raise write_failed(run_dir / SUMMARY, exc, run_dir) from exc
        if getattr(logger, "wants_heatmaps", False):
            summary["heatmaps"] = _render_heatmaps(run_dir)
        logger.finish(summary)
        print_elites(summary, console)
        return summary
    except KeyboardInterrupt:
        search.abort()  # kill the running candidates instead of waiting for the generation
        raise
    finally:
        search.close()


def _generation(search: Search, state: SearchState, generation: int, advance: Any,
                flight: Any) -> Any:
    """Run one generation; return the next one's in-flight work (pipelined runs only)."""
    if search.settings.schedule == "steady":  # a block of candidates (llmatic.search.steady)
        search.run_block(state, generation, progress=advance)
        return None
    if not search.settings.pipeline_generations:
        search.run_generation(state, generation, progress=advance)
        return None
    # Generation g+1 is planned from the archives after generation g-1 and starts while
    # generation g's last candidates still run: no slot waits for the slowest candidate.
    # Deterministic: plans never depend on timing.
    if flight is None:
        pending = getattr(state, "pending_plans", None)
        flight = search.start_generation(state, generation, advance, plans=pending)
    state.pending_plans = search.plan(state, generation + 1)
    following = None
    if generation < search.settings.generations:
        try:
            following = search.start_generation(state, generation + 1, advance,
                                                plans=state.pending_plans)
        except Exception:
            # Keep generation g's finished work: tell it and checkpoint (with g+1's plans
            # pending) before the error ends the run.
            search.finish_generation(state, flight)
            state.generation = generation
            save_checkpoint(search.run_dir, state)
            raise
    search.finish_generation(state, flight)
    return following


def _loop(search: Search, state: SearchState, logger: Any, console: Any,
          show_progress: bool | None) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    generations = search.settings.generations
    per_gen = search.settings.candidates_per_generation
    if show_progress is None:
        show_progress = console.is_terminal
    remaining = max(0, generations - state.generation) * per_gen
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
        console=console, disable=not show_progress, transient=False,
    ) as bar:
        task = bar.add_task("search", total=remaining, info="")

        class _Advance:
            @staticmethod
            def advance() -> None:
                bar.advance(task)

        flight = None
        for generation in range(state.generation + 1, generations + 1):
            started = time.perf_counter()
            bar.update(task, description=f"gen {generation}/{generations}")
            flight = _generation(search, state, generation, _Advance, flight)
            state.generation = generation
            state.wall_seconds += time.perf_counter() - started
            metrics = search.generation_metrics(state, generation)
            logger.log_generation(metrics, generation)
            save_checkpoint(search.run_dir, state)
            info = progress_info(state.best_fitness, metrics, state.temperature.current,
                                 percent=search.space.name == "nb201")
            bar.update(task, info=info)
            if not show_progress:
                log.info("generation %d/%d: valid %.0f%%, %s", generation, generations,
                         100 * metrics["valid_fraction"], info)


def _render_heatmaps(run_dir: Path) -> list[str]:
    """Draw the archive heatmaps and the best network's lineage into ``run_dir/figures``.

    For loggers that show images (W&B logs each PNG at the end of the run).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        from llmatic.report import (
            best_lineage_figure,
            load_run,
            plot_network_heatmap,
            plot_prompt_heatmap,
            save_figure,
        )

        run = load_run(run_dir)
        paths = []
        for name, plot in (("network_heatmap", plot_network_heatmap),
                           ("prompt_heatmap", plot_prompt_heatmap),
                           ("lineage", best_lineage_figure)):
            paths += [str(p) for p in save_figure(plot(run), run_dir / "figures", name)
                      if str(p).endswith(".png")]
        return paths
    except Exception as exc:  # noqa: BLE001 - a figure never fails a finished search
        log.warning("could not draw the archive heatmaps: %s", exc)
        return []


def progress_info(best: float | None, metrics: dict[str, Any], temperature: float, *,
                  percent: bool = False) -> str:
    """The progress line after a generation: every number named, none read as "x of y".

    ``QD`` is the network archive's QD score (the sum over its cells of fitness minus the
    archive's offset: it grows with both quality and coverage), ``net cells`` and
    ``prompt cells`` are the filled cells of the two archives, ``T`` the
    temperature, ``H`` the instruction-use entropy (1 = every instruction equally often) and
    ``temps`` the distinct mutation temperatures. ``percent``: the best accuracy in percent
    (NAS-Bench-201 runs, whose tables and Table 1 are in percent).
    """
    shown = _pct(best) if percent else _fmt(best)
    qd = metrics.get("qd_score")
    return (f"best {shown}  QD {_fmt2(qd)}  net cells {metrics['network_cells']}"
            f"  prompt cells {metrics['prompt_cells']}  T {temperature:.2f}"
            f"  H {_fmt(metrics['instruction_entropy'])}"
            f"  temps {metrics['distinct_temperatures']}")


def _pct(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{100 * value:.2f}%"


def _fmt2(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{round(value, 2) + 0.0:.2f}"


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{round(value, 4) + 0.0:.4f}"  # + 0.0: never "-0.0000"


def _si(value: float) -> str:
    """Compact number: 1234 -> 1.23k, 4.5e6 -> 4.50M."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


_SHORT = {"width_to_depth": "w/d", "log10_flops": "log FLOPs", "log10_params": "log params",
          "depth": "depth", "width": "width"}


def print_elites(summary: dict[str, Any], console: Any = None) -> None:
    """Print the best elites as a table on stdout."""
    from rich.console import Console
    from rich.table import Table

    names = list(summary["elites"][0]["descriptors"]) if summary["elites"] else []
    net = summary["network_archive"]
    # NAS-Bench-201 runs show accuracy in percent, as their results table and Table 1 do.
    percent = "nb201" in summary
    acc = _pct if percent else (lambda v: f"{v:.4f}")
    table = Table(
        title=f"Elites of the network archive: {net['cells_filled']} cells filled, "
        f"{summary['candidates']} candidates",
        caption=f"generator: {summary['generator']}",
    )
    for col in ("#", "id", "gen", "fitness", "val acc", "params", "FLOPs",
                *[_SHORT.get(n, n) for n in names]):
        table.add_column(col, justify="right", no_wrap=True)
    for rank, e in enumerate(summary["elites"], 1):
        table.add_row(str(rank), str(e["candidate_id"]), str(e["generation"]),
                      acc(e["fitness"]), acc(e["val_accuracy"]), _si(e["params"]),
                      _si(e["flops"]), *[f"{e['descriptors'][n]:.3g}" for n in names])
    out = Console()
    if not out.is_terminal:
        out = Console(width=120)
    out.print(table)
