// The Python module spoofloss._C. Importing it runs the static TORCH_LIBRARY
// registrations in the other translation units; the one plain Python binding
// is the build information, which the package checks at import time. Plain
// pybind11, not <torch/extension.h>: this file needs no tensor types, and the
// torch header quadruples its compile time.
#include <pybind11/pybind11.h>

#include "cpu/row_loops.h"

#ifndef SPOOFLOSS_TORCH_VERSION
#define SPOOFLOSS_TORCH_VERSION "unknown"
#endif
#ifndef SPOOFLOSS_CUDA_ARCHS
#define SPOOFLOSS_CUDA_ARCHS ""
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "spoofloss compiled ops (registered under torch.ops.spoofloss)";
  m.def("build_info", [] {
    pybind11::dict info;
    info["torch_version"] = SPOOFLOSS_TORCH_VERSION;
#ifdef WITH_CUDA
    info["with_cuda"] = true;
    info["cuda_archs"] = SPOOFLOSS_CUDA_ARCHS;
#else
    info["with_cuda"] = false;
    info["cuda_archs"] = "";
#endif
    info["cpu_row_loops"] = spoofloss::cpu::row_loops().isa;
    return info;
  });
}
