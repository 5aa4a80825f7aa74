"""User-facing errors: each message names the config key or path to fix.

Kept free of heavy imports so the command line can report them in well under a second.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value is wrong; the message names the key and how to fix it."""


class DatasetError(ValueError):
    """A dataset cannot be loaded; the message names the config key to fix."""


class RunDirectoryError(RuntimeError):
    """The run directory cannot be written (full disk, permissions).

    The message says which file failed and that the last checkpoint is intact, so the run
    can be continued with ``resume`` once the problem is fixed.
    """
