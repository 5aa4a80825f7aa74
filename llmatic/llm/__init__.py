"""Code generators: language models and the rule-based (non-LLM) mutator."""

from llmatic.llm.base import CodeGenerator

__all__ = ["CodeGenerator"]
