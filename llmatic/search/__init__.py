"""The search loop over built parts: plan, generate, extract, evaluate, tell.

Modules in the order a generation runs: ``planner`` (ask: operator, parents, prompt,
temperature), ``engine`` (generate, extract, evaluate, one generation), ``space`` (what a
candidate is: networks here, NAS-Bench-201 cells in ``llmatic.nb201.space``), ``tell`` (the
archives, curiosity, temperature, the history record), ``state`` (what a checkpoint holds),
``metrics`` (per generation and for the summary, worker utilisation included), ``dispatch``
(candidates to the workers, the run clock), ``steady`` (``schedule=steady``: one candidate at
a time, generations as blocks) and ``loop`` (generations to the end, with progress). Nothing
here reads a config: ``llmatic.config`` builds the parts.
"""

from llmatic.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "dispatch": ("Dispatcher", "RunClock"),
        "engine": ("InFlight", "Search"),
        "metrics": ("exploration_metrics", "generation_metrics", "run_quality",
                    "run_utilisation", "summarize", "utilisation"),
        "planner": ("Plan", "Planner", "select_parent"),
        "loop": ("print_elites", "run"),
        "space": ("at_chance", "capped", "NetworkSpace", "SearchSpace"),
        "state": ("SearchState", "source_key"),
        "steady": ("SteadyScheduler",),
        "tell": ("NO_NETWORK", "Teller"),
    },
)
