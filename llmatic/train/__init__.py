"""What runs inside the sandboxed child: the worker, the LightningModule, the data.

Read in the order a job travels: :mod:`~llmatic.train.protocol` (the files a child leaves for
its parent), :mod:`~llmatic.train.worker` (the stages of one job), then what the stages use:
:mod:`~llmatic.train.guard` (replaced functions, guarded imports),
:mod:`~llmatic.train.measure` (descriptors, in a fork that trains nothing),
:mod:`~llmatic.train.failures` (failure -> status), :mod:`~llmatic.train.artifacts` (the
trained weights and ONNX graph of a final retrain), :mod:`~llmatic.train.module` (the
LightningModule), :mod:`~llmatic.train.data` and :mod:`~llmatic.train.device_data`.
"""

from llmatic.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "data": (
            "batch_loader", "BatchArrayDataset", "CIFAR10DataModule", "DigitsDataModule",
            "load_child_arrays", "MNIST5kDataModule", "stratified_holdout",
        ),
        "device_data": ("augment_one", "crop_flip", "DeviceBatches", "ReferenceBatches"),
        "artifacts": ("write_artifacts",),
        "failures": ("CandidateFailure",),
        "guard": ("guarded_builtins", "NATIVE_LAZY", "TamperGuard"),
        "measure": ("count_flops", "used_parameters"),
        "module": ("NetModule",),
        "protocol": (
            "LOGITS_FILE", "logits_file", "MEASURE_KEYS", "MEASURES_FILE", "ONNX_FILE",
            "RESULT_FILE", "result_file", "too_large_error", "WEIGHTS_FILE",
        ),
        "worker": ("run_job",),
    },
)
