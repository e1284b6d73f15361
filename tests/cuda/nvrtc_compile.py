#!/usr/bin/env python3
"""Compiles a CUDA source to PTX with NVRTC, the runtime compiler that OpenMM's CUDA platform uses
for the plugin's kernels (CudaContext::createModule passes it "-arch=compute_<cc>", then the
optimisation flags). NVRTC rejects some code that nvcc accepts (a function without __device__,
even one that no kernel calls, and a host header), so tests/cuda/compile_kernels.sh runs both.

Usage: nvrtc_compile.py LIBNVRTC SOURCE [--keep-ptx=FILE] OPTION...   (exit 1 and NVRTC's log if it fails)
  --keep-ptx=FILE writes the PTX that NVRTC made to FILE; the other options go to NVRTC.
"""
import ctypes
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    library, source_path, options = sys.argv[1], sys.argv[2], sys.argv[3:]
    keep = [option for option in options if option.startswith("--keep-ptx=")]
    options = [option for option in options if option not in keep]
    nvrtc = ctypes.CDLL(library)
    nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
    with open(source_path, "rb") as f:
        source = f.read()
    program = ctypes.c_void_p()

    def check(result, what):
        if result != 0:
            sys.exit(f"nvrtc_compile: {what}: {nvrtc.nvrtcGetErrorString(result).decode()}")

    check(nvrtc.nvrtcCreateProgram(ctypes.byref(program), source, source_path.encode(), 0, None, None),
          "creating the program")
    encoded = [option.encode() for option in options]
    array = (ctypes.c_char_p * len(encoded))(*encoded)
    compiled = nvrtc.nvrtcCompileProgram(program, len(encoded), array)
    size = ctypes.c_size_t()
    check(nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size)), "reading the log's size")
    log = ctypes.create_string_buffer(size.value)
    check(nvrtc.nvrtcGetProgramLog(program, log), "reading the log")
    if compiled == 0 and keep:
        check(nvrtc.nvrtcGetPTXSize(program, ctypes.byref(size)), "reading the PTX's size")
        ptx = ctypes.create_string_buffer(size.value)
        check(nvrtc.nvrtcGetPTX(program, ptx), "reading the PTX")
        with open(keep[-1][len("--keep-ptx="):], "wb") as f:
            f.write(ptx.value)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
    if compiled != 0:
        print(log.value.decode(errors="replace"))
        sys.exit(f"nvrtc_compile: {source_path}: {nvrtc.nvrtcGetErrorString(compiled).decode()}")


if __name__ == "__main__":
    main()
