// Test-only ops of the emulated build, in a namespace of their own so that the
// op surface of csrc/ops.cpp stays what every build has:
//   torch.ops.spoofloss_emulation.selftest(case, n): runs one of the kernels of
//     selftest_kernels.cu and returns its output [n]; the emulator's report of
//     a bug arrives as a RuntimeError.
//   torch.ops.spoofloss_emulation.reduce_loss(values, mean): the ops' own
//     reduction kernel (sum_kernel, launch_reduce_loss) on a float vector, so
//     that its accuracy can be checked at a million values without running a
//     million utterances through the emulated per-utterance kernels.
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

at::Tensor reduce_loss(const at::Tensor& values, bool mean) {
  TORCH_CHECK_VALUE(
      values.dim() == 1 && values.numel() > 0 && (values.scalar_type() == at::kFloat || values.scalar_type() == at::kDouble),
      "values must be a non-empty float32 or float64 vector, got ", values.scalar_type(), " of shape ", values.sizes());
  const at::Tensor contiguous = values.contiguous();
  at::Tensor out = at::empty({}, values.options());
  if (values.scalar_type() == at::kFloat) {
    cuda::launch_reduce_loss<float>(
        contiguous.const_data_ptr<float>(), values.numel(), mean, out.mutable_data_ptr<float>(), cuda::current_stream());
  } else {
    cuda::launch_reduce_loss<double>(
        contiguous.const_data_ptr<double>(), values.numel(), mean, out.mutable_data_ptr<double>(),
        cuda::current_stream());
  }
  return out;
}

}  // namespace

TORCH_LIBRARY(spoofloss_emulation, m) {
  m.def("selftest(str name, int n) -> Tensor");
  m.impl("selftest", c10::DispatchKey::CompositeExplicitAutograd, TORCH_FN(selftest));
  m.def("reduce_loss(Tensor values, bool mean) -> Tensor");
  m.impl("reduce_loss", c10::DispatchKey::CPU, TORCH_FN(reduce_loss));
}

}  // namespace emulation
}  // namespace spoofloss
