"""What a run shows: loggers, figures and the final retrain of the elites."""

from llmatic.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "figures": ("load_run", "plot_network_heatmap", "plot_prompt_heatmap", "save_figure"),
        "final": ("final_evaluation",),
        "loggers": ("CSVLogger", "TensorBoardLogger", "WandbLogger"),
    },
)
