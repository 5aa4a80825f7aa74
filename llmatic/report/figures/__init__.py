"""Figures of one or many runs (docs/method.md §5), drawn by ``llmatic-figures DIR... [--out OUT]``.

Read top to bottom: :mod:`~llmatic.report.figures.runs` loads run directories (a run, a
multirun, any mix) or W&B runs; :mod:`~llmatic.report.figures.series` turns each run's
``history.jsonl`` into per-generation series, groups runs by ablation (and by ``p_mutation``
where a sweep varies it within an ablation) and aggregates each group as the mean over seeds
with a 95% bootstrap interval (none below three seeds); :mod:`~llmatic.report.figures.plots`
draws the curves and both
archive heatmaps; :mod:`~llmatic.report.figures.lineage` draws the lineage tree of a run's
best network; :mod:`~llmatic.report.figures.make` writes them all, with
``figures_data.json``. The command line is :mod:`llmatic.cli.figures`.
"""

from llmatic.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "runs": (
            "WANDB_KEYS",
            "FiguresError",
            "Run",
            "config_value",
            "effective_p_mutation",
            "find_run_dirs",
            "load_run",
            "load_runs",
            "load_state",
            "load_wandb_runs",
            "newest_run",
            "read_metrics",
        ),
        "series": (
            "ABLATION_ORDER",
            "BOUNDS",
            "MIN_SEEDS",
            "SERIES",
            "aggregate",
            "best_accuracy_series",
            "best_loss_series",
            "cells_series",
            "figure_data",
            "group_runs",
            "mean_ci",
            "run_series",
            "running_best",
            "seed_keys",
            "valid_fraction_series",
            "write_data",
        ),
        "plots": (
            "name_with_note",
            "plot_filled_niches",
            "plot_metric",
            "plot_network_heatmap",
            "plot_prompt_heatmap",
            "short_instruction",
            "voronoi_cells",
        ),
        "lineage": ("best_lineage_figure", "lineage_figures", "plot_lineage"),
        "make": (
            "DATA_FILE",
            "FORMATS",
            "elites_table",
            "make_figures",
            "save_figure",
            "slug",
        ),
    },
)
