"""Reads and writes the project's model file (docs/model-file.md) with numpy and json only:
safetensors = 8-byte little-endian header length, a JSON header, then the raw tensor bytes."""

import json
import struct

import numpy as np

FORMAT = "openmm-mlff"
FORMAT_VERSION = "1"
ARCHITECTURE = "student-painn"
DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8")}


class ModelFileError(Exception):
    """A model file that cannot be read, with a sentence saying why."""


def read_model_file(path):
    """Returns (tensors: name -> float numpy array, metadata: dict of strings)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ModelFileError(f"model file '{path}': {len(data)} bytes, too short for a safetensors header")
    (header_size,) = struct.unpack("<Q", data[:8])
    if header_size > len(data) - 8:
        raise ModelFileError(f"model file '{path}': header of {header_size} bytes runs past the end of the file")
    try:
        header = json.loads(data[8:8 + header_size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"model file '{path}': header is not JSON ({e})") from None
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict):
        raise ModelFileError(f"model file '{path}': header has no __metadata__ object")
    for key, expected in (("format", FORMAT), ("format_version", FORMAT_VERSION), ("architecture", ARCHITECTURE)):
        if metadata.get(key) != expected:
            raise ModelFileError(f"model file '{path}': metadata {key} is {metadata.get(key)!r}, expected {expected!r}")
    body = data[8 + header_size:]
    tensors = {}
    for name, entry in header.items():
        dtype = DTYPES.get(entry.get("dtype"))
        if dtype is None:
            raise ModelFileError(f"model file '{path}': tensor '{name}' has dtype {entry.get('dtype')!r}, expected F32 or F64")
        begin, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        if not (0 <= begin <= end <= len(body)) or end - begin != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
            raise ModelFileError(f"model file '{path}': tensor '{name}' has data_offsets {entry['data_offsets']} "
                                 f"that do not fit shape {list(shape)} and the file size")
        tensors[name] = np.frombuffer(body, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=begin).reshape(shape)
    return tensors, metadata


def write_model_file(path, tensors, cutoff, dtype=np.float32, extra_metadata=None):
    """Writes name -> array (in the given order) with the project's metadata; cutoff in Å."""
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "architecture": ARCHITECTURE,
                "cutoff": repr(float(cutoff)), "length_unit": "angstrom", "energy_unit": "eV"}
    metadata.update({k: str(v) for k, v in (extra_metadata or {}).items()})
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    code = "F32" if np.dtype(dtype) == np.float32 else "F64"
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array, dtype=DTYPES[code]).tobytes()
        header[name] = {"dtype": code, "shape": list(np.shape(array)), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keeps the tensor data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
