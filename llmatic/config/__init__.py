"""The only package that reads a DictConfig: checks, resume, building the parts."""

from llmatic.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "validate": (
            "CONFIG", "ConfigError", "datamodule_kwargs", "descriptor_bounds", "JOINABLE_DDP",
            "nb201_baselines", "NB201_SHAPES", "preflight", "validate_config",
        ),
    },
)
