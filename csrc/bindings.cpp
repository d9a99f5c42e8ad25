// The Python module spoofloss._C. Importing it runs the static TORCH_LIBRARY
// registrations in the other translation units; the one plain Python binding
// is the build information, which the package checks at import time. Plain
// pybind11, not <torch/extension.h>: this file needs no tensor types, and the
// torch header quadruples its compile time.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cosine_losses.h"
#include "cpu/vector_loops.h"
#ifdef SPOOFLOSS_CUDA_EMULATION
#include "cuda/emulation/api.h"
#endif

#ifndef SPOOFLOSS_TORCH_VERSION
#define SPOOFLOSS_TORCH_VERSION "unknown"
#endif
#ifndef SPOOFLOSS_CUDA_ARCHS
#define SPOOFLOSS_CUDA_ARCHS ""
#endif
#ifndef SPOOFLOSS_SANITIZERS
#define SPOOFLOSS_SANITIZERS ""
#endif

#ifdef SPOOFLOSS_CUDA_EMULATION
namespace {
// spoofloss._C.emulation: the emulated device's settings, counters and coverage.
void bind_emulation(pybind11::module_& parent) {
  namespace emu = spoofloss::emulation;
  auto m = parent.def_submodule("emulation", "the emulated CUDA device (SPOOFLOSS_CUDA_EMULATION builds)");
  m.def("set_seed", &emu::set_seed, "seed of the random thread and block order");
  m.def("seed", &emu::seed);
  m.def("set_multiprocessor_count", &emu::set_multiprocessor_count, "what the device reports as its SM count");
  m.def("multiprocessor_count", &emu::multiprocessor_count);
  m.def("set_max_grid_x", &emu::set_max_grid_x, "the largest grid.x the device accepts");
  m.def("max_grid_x", &emu::max_grid_x);
  m.def("reset_counters", &emu::reset_counters);
  m.def("counters", [] {
    const auto c = emu::counters();
    pybind11::dict out;
    out["launches"] = c.launches;
    out["kernels"] = c.kernels;
    out["scratch_allocations"] = c.scratch_allocations;
    out["scratch_bytes"] = c.scratch_bytes;
    return out;
  }, "launches and scratch allocations since the last reset_counters()");
  m.def("coverage", &emu::coverage, "launches per kernel instantiation since the library was loaded");
}
}  // namespace
#endif

namespace {

// The cosine-margin loss table (cosine_losses.h) as Python sees it: the codes
// spoofloss.ops passes to the ops come from here, never from a copy.
pybind11::list cosine_loss_table() {
  pybind11::list table;
  for (int64_t code = 0; code < spoofloss::kLossCount; ++code) {
    const auto& info = spoofloss::kLossInfo[code];
    pybind11::dict row;
    row["name"] = info.name;
    row["code"] = code;
    row["min_centers"] = info.min_centers;
    row["max_centers"] = info.max_centers;
    row["label_classes"] = info.classes == spoofloss::LabelClasses::kTwo ? "two" : "one_per_center";
    row["default_score"] = spoofloss::kScoreRuleNames[static_cast<int64_t>(info.default_score)];
    table.append(row);
  }
  return table;
}

pybind11::dict score_rules() {
  pybind11::dict rules;
  for (int64_t code = 0; code < spoofloss::kScoreRuleCount; ++code) rules[spoofloss::kScoreRuleNames[code]] = code;
  return rules;
}

}  // namespace

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
    info["cpu_vector_loops"] = spoofloss::cpu::vector_loops().isa;
#ifdef SPOOFLOSS_CUDA_EMULATION
    // CPU tensors run the CUDA kernels on the emulated device
    info["cuda_emulation"] = true;
#else
    info["cuda_emulation"] = false;
#endif
    info["sanitizers"] = SPOOFLOSS_SANITIZERS;
    pybind11::list losses;
    for (int64_t code = 0; code < spoofloss::kLossCount; ++code) losses.append(spoofloss::kLossInfo[code].name);
    info["cosine_losses"] = losses;
    info["max_centers"] = spoofloss::kMaxCenters;
    return info;
  });
  m.def("cosine_loss_table", &cosine_loss_table, "one row per cosine-margin loss of csrc/cosine_losses.h");
  m.def("score_rules", &score_rules, "score rule name -> code");
#ifdef SPOOFLOSS_CUDA_EMULATION
  bind_emulation(m);
#endif
}
