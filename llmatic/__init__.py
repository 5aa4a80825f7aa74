"""llmatic: neural architecture search with LLM-written PyTorch code and QD archives.

The packages, in the order a candidate travels: ``config`` (from the command line to built
parts), ``search`` (the loop), ``plan`` (prompts, the seed network), ``llm`` (code
generators), ``extract`` (completion -> source, the static policy), ``sandbox`` (the
boundary around generated code), ``train`` (what runs inside it), ``qd`` (descriptors,
archives, temperature), ``report`` (loggers, figures, the final retrain), ``nb201``
(NAS-Bench-201 cells), ``cli`` (console scripts). See the README's "Architecture".
"""

__version__ = "0.2.0"
__all__ = ["__version__"]
