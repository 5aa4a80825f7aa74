"""The search loop over built parts: plan, generate, extract, evaluate, tell.

Modules in the order a generation runs: ``planner`` (ask: operator, parents, prompt,
temperature), ``engine`` (generate, extract, evaluate, one generation), ``space`` (what a
candidate is: networks here, NAS-Bench-201 cells in ``llmatic.nb201.space``), ``tell`` (the
archives, curiosity, temperature, the history record), ``state`` (what a checkpoint holds),
``metrics`` (per generation and for the summary) and ``loop`` (generations to the end, with
progress). Nothing here reads a config: ``llmatic.config`` builds the parts.
"""

from llmatic.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "engine": ("InFlight", "Search"),
        "metrics": ("exploration_metrics", "generation_metrics", "run_quality", "summarize"),
        "planner": ("Plan", "Planner", "select_parent"),
        "loop": ("print_elites", "run"),
        "space": ("at_chance", "capped", "NetworkSpace", "SearchSpace"),
        "state": ("SearchState", "source_key"),
        "tell": ("NO_NETWORK", "Teller"),
    },
)
