"""What a run shows: loggers, figures and the final retrain of the elites."""

from llmatic.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "figures": (
            "FiguresError",
            "group_runs",
            "load_run",
            "load_runs",
            "load_wandb_runs",
            "make_figures",
            "plot_network_heatmap",
            "plot_prompt_heatmap",
            "save_figure",
        ),
        "final": ("final_evaluation",),
        "loggers": ("CSVLogger", "TensorBoardLogger", "WandbLogger"),
    },
)
