"""student-painn in PyTorch: the project's second implementation of the network (after
the C core), for training, export and benchmarks. Needs torch >= 1.13.

The model file's reader and writer need numpy alone, so they are imported at once; the parts that
need torch are imported when first used, so that numpy-only scripts (the benchmark's structures,
benchmarks/write_structures.py) run where torch is not installed."""

from .model_file import ModelFileError, read_model_file, write_model_file

__all__ = ["StudentPaiNN", "ModelFileError", "read_model_file", "write_model_file", "find_edges", "minimum_image_shift"]

_NEED_TORCH = {"StudentPaiNN": "model", "find_edges": "neighbors", "minimum_image_shift": "neighbors"}


def __getattr__(name):
    if name in _NEED_TORCH:
        import importlib
        return getattr(importlib.import_module(f".{_NEED_TORCH[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
