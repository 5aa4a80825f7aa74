"""The boundary around generated code: fork server, kernel isolation, evaluators, scoring."""

from llmatic.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "evaluators": ("PoolEvaluator",),
        "isolation": ("isolation_report", "IsolationError", "LAYERS", "probe"),
        "server": (
            "JOINABLE_DDP", "outcome_to_result", "plan_ranks", "Sandbox", "score_logits",
            "server_environment",
        ),
    },
)
