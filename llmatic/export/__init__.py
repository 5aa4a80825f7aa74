"""Take the network out: an export folder per found network (``llmatic-export``).

Read in order: :mod:`~llmatic.export.select` (which network, and every check before anything
is written), :mod:`~llmatic.export.modelfile` (the standalone ``model.py``),
:mod:`~llmatic.export.card` (``card.md``), :mod:`~llmatic.export.write` (the folder, all at
once). The weights come from ``llmatic-final`` (:mod:`llmatic.report.final`), the lineage
from :mod:`llmatic.report.lineage`.
"""

from llmatic.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "card": ("nb201_card", "network_card"),
        "modelfile": ("ModelFileError", "render_model_file"),
        "select": ("check_source", "Choice", "choose", "ExportError"),
        "write": ("EXPORT_DIR", "EXPORT_JSON", "export"),
    },
)
