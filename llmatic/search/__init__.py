"""The search loop: plan, generate, extract, evaluate, tell; state and checkpoints."""

from llmatic.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "engine": (
            "capped", "HISTORY", "load_checkpoint", "Plan", "read_history", "run_search",
            "save_checkpoint", "Search", "source_key",
        ),
    },
)
