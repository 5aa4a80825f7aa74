"""What the next candidates are: prompt texts and the seed network."""

from llmatic.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "prompts": ("check_templates", "PromptBuilder"),
        "seed": ("seed_network",),
    },
)
