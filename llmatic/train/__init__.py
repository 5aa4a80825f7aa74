"""What runs inside the sandboxed child: the worker, the LightningModule, the data."""

from llmatic.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "data": (
            "batch_loader", "BatchArrayDataset", "CIFAR10DataModule", "DigitsDataModule",
            "load_child_arrays",
        ),
        "device_data": ("augment_one", "crop_flip", "DeviceBatches", "ReferenceBatches"),
        "module": ("NetModule",),
        "worker": (
            "LOGITS_FILE", "logits_file", "MEASURE_KEYS", "MEASURES_FILE", "RESULT_FILE",
            "result_file", "run_job", "too_large_error",
        ),
    },
)
