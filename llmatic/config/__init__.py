"""The only package that reads a DictConfig: checks, resume, building the parts, the run.

``validate`` checks a composed config before anything expensive; ``resume`` turns
``resume=RUN_DIR`` into the saved config; ``build`` instantiates every part in a fixed order
and reads the settings dataclasses of :mod:`llmatic.settings`; ``runner`` ties them together
in :func:`run_search`, which the Hydra app calls.
"""

from llmatic.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "build": (
            "build_evaluator", "build_generator", "build_search", "build_space", "job_recipe",
            "nb201_settings", "sandbox_limits", "search_settings",
        ),
        "resume": ("load_saved_config", "RESUMABLE_OVERRIDES", "resume_config"),
        "runner": ("CONFIG_DIR", "evaluate_file", "final_config", "run_search"),
        "validate": (
            "ConfigError", "datamodule_kwargs", "descriptor_bounds", "nb201_baselines",
            "preflight", "validate_config",
        ),
    },
)
