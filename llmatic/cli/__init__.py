"""Console scripts other than the Hydra app: each a thin argparse over one function.

``evaluate`` (``llmatic-evaluate``), ``final`` (``llmatic-final``), ``export``
(``llmatic-export``), ``figures`` (``llmatic-figures``), ``nb201`` (``llmatic-nb201``). Entry
points only: nothing to import.
"""

__all__: list[str] = []
