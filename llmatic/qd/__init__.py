"""Quality diversity: descriptors, the network and prompt archives (pyribs), temperature."""

from llmatic.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "archives": ("ElitistPopulation", "NetworkArchive", "PromptArchive"),
        "descriptors": ("DescriptorSpace", "module_tree", "parameter_sizes", "raw_attribute"),
    },
)
