"""Quality diversity: descriptors, the network and prompt archives (pyribs), temperature.

``descriptors`` measures a network's niche (width-to-depth ratio, FLOPs ...) and normalises
it to the configured bounds; ``archives`` holds the network archive (CVT or grid), the prompt
archive (instruction x temperature, fitness = curiosity) and the elitist list of the
``prompt_archive_only`` ablation; ``temperature`` holds the sampling-temperature schedules.
Archives never train or call an LLM: the search tells them results.
"""

from llmatic.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "archives": ("cvt_centroids", "ElitistPopulation", "NetworkArchive", "PromptArchive"),
        "descriptors": (
            "DescriptorSpace", "module_tree", "parameter_count", "parameter_sizes",
            "raw_attribute",
        ),
        "temperature": (
            "AdaptiveTemperature", "ConstantTemperature", "LinearDecayTemperature",
            "TemperatureSchedule",
        ),
    },
)
