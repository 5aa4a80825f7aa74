"""The exception every stage of the rule mutator raises when it cannot edit a parent.

It is private: :class:`~llmatic.llm.rules.mutator.RuleBasedMutator` turns it into a completion
whose ``error`` carries the message, so the search never sees it raised.
"""

from __future__ import annotations


class _NoEdit(Exception):
    """The requested edit cannot be made on this parent; the message says why."""
