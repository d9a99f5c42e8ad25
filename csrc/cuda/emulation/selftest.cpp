// torch.ops.spoofloss_emulation.selftest(case, n): runs one of the kernels of
// selftest_kernels.cu on the emulated device (emulated builds only) and
// returns its output [n]; the emulator's report of a bug arrives as a
// RuntimeError. Its own namespace, so that the op surface of csrc/ops.cpp
// stays what every build has.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <string>

#include "../host_runtime.h"
#include "../launch.h"
#include "selftest.h"

namespace spoofloss {
namespace emulation {
namespace {

at::Tensor selftest(c10::string_view name, int64_t n) {
  TORCH_CHECK_VALUE(n >= 1, "n must be at least 1, got ", n);
  const auto options = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor in = at::randn({n}, options);
  at::Tensor out = at::zeros({std::max<int64_t>(n, cuda::kThreads)}, options);
  at::Tensor scratch = cuda::empty_scratch({n}, options);
  const bool known = launch_selftest(
      std::string(name), in.const_data_ptr<float>(), out.mutable_data_ptr<float>(), scratch.mutable_data_ptr<float>(),
      n);
  if (!known) {
    std::string names;
    for (int i = 0; i < kSelftestCaseCount; ++i) names += std::string(i ? ", " : "") + kSelftestCases[i];
    TORCH_CHECK_VALUE(false, "unknown selftest case '", name, "'; the cases are: ", names);
  }
  return out.narrow(0, 0, n);
}

}  // namespace

TORCH_LIBRARY(spoofloss_emulation, m) {
  m.def("selftest(str name, int n) -> Tensor");
  m.impl("selftest", c10::DispatchKey::CompositeExplicitAutograd, TORCH_FN(selftest));
}

}  // namespace emulation
}  // namespace spoofloss
