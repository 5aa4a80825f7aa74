"""From an LLM completion to a network's source, and the static policy (nothing runs)."""

from llmatic.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "network": ("DEFAULT_PREAMBLE", "extract_network", "Extraction"),
        "policy": ("check_source", "DEFAULT_ALLOWED_IMPORTS", "policy_error"),
    },
)
