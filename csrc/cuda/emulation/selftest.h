// Deliberately broken kernels (and one correct one), built into the emulated
// library only, so that tests/test_emulation.py can show that the emulator
// catches each kind of bug: the seam between selftest.cpp (the op) and
// selftest_kernels.cu (the kernels).
#pragma once

#include <cstdint>
#include <string>

namespace spoofloss {
namespace emulation {

// The case names, in the order selftest_kernels.cu handles them.
extern const char* const kSelftestCases[];
extern const int kSelftestCaseCount;

// Runs one case: in [n] is read, out [n] written (what each case writes is
// described beside its kernel), scratch [n] is never written by anything.
// Returns false for an unknown case.
bool launch_selftest(const std::string& name, const float* in, float* out, float* scratch, int64_t n);

}  // namespace emulation
}  // namespace spoofloss
