"""student-painn in PyTorch: the project's second implementation of the network (after
the C core), for training, export and benchmarks. Needs torch >= 1.13."""

from .model import StudentPaiNN
from .model_file import ModelFileError, read_model_file, write_model_file
from .neighbors import find_edges, minimum_image_shift

__all__ = ["StudentPaiNN", "ModelFileError", "read_model_file", "write_model_file", "find_edges", "minimum_image_shift"]
