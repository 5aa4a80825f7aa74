"""What a run shows: loggers, figures, the final retrain of the elites, lineages."""

from llmatic.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "figures": (
            "best_lineage_figure",
            "FiguresError",
            "group_runs",
            "load_run",
            "load_runs",
            "lineage_figures",
            "load_wandb_runs",
            "make_figures",
            "plot_lineage",
            "plot_network_heatmap",
            "plot_prompt_heatmap",
            "save_figure",
        ),
        "final": ("final_evaluation",),
        "lineage": ("ancestry", "best_candidate", "LineageError", "lineage_markdown",
                    "step_diffs"),
        "loggers": ("CSVLogger", "TensorBoardLogger", "WandbLogger"),
    },
)
