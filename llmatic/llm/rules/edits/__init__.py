"""The edits the rule mutator makes to a parsed network, one module per family.

Read in this order: ``context`` (the randomness and caps of one request), ``insert`` (where
a layer may go and how it goes in), ``add``, ``delete``, ``resize``, ``head`` (the
classifier), ``fixes`` (what every edit also repairs, as an LLM would), and ``registry``
(which edits each instruction runs, and :func:`~llmatic.llm.rules.edits.registry._mutate`).
An edit takes a :class:`~llmatic.llm.rules.network._Net` and an
:class:`~llmatic.llm.rules.edits.context._Ctx`, changes the network in place, and returns a
short description, or None when it finds nothing to change.
"""

#: The mutator imports the edit modules themselves (their names are private to the rules).
__all__: list[str] = []
