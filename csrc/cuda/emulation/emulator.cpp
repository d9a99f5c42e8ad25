// The emulated CUDA device: fibers, the seeded scheduler, barriers, warp
// shuffles, shared memory, launch checks and counters (see device.h).
//
// One launch runs on the calling thread, block after block in a random order.
// A block's threads are fibers with stacks of their own; the scheduler resumes
// a random ready fiber, which runs until it finishes or waits (at a barrier or
// a shuffle). When no fiber is ready, either every live thread waits at the
// same barrier (they are all released) or the kernel is wrong (reported).
#include "device.h"

#include <c10/util/Exception.h>

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define SPOOFLOSS_EMULATION_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SPOOFLOSS_EMULATION_ASAN 1
#endif
#endif
#ifdef SPOOFLOSS_EMULATION_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

// The context switch: a few instructions of assembly on x86-64, ucontext
// elsewhere (or with SPOOFLOSS_EMULATION_UCONTEXT, to test that path on x86-64).
#if defined(__x86_64__) && !defined(SPOOFLOSS_EMULATION_UCONTEXT)
#define SPOOFLOSS_EMULATION_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

namespace spoofloss {
namespace emulation {
namespace {

// ----------------------------------------------------------------- limits
// What every GPU since Volta enforces at launch.
constexpr uint64_t kMaxGridX = (uint64_t(1) << 31) - 1;
constexpr uint64_t kMaxGridYZ = 65535;
constexpr unsigned kMaxBlockThreads = 1024;
constexpr unsigned kMaxBlockXY = 1024;
constexpr unsigned kMaxBlockZ = 64;
constexpr size_t kMaxSharedBytes = 48 * 1024;  // without cudaFuncSetAttribute's opt-in
constexpr int kWarpSize = 32;

#ifdef SPOOFLOSS_EMULATION_ASAN
constexpr size_t kStackBytes = 1 << 20;  // instrumented frames are several times larger
#else
constexpr size_t kStackBytes = 256 << 10;
#endif
const size_t kPageBytes = static_cast<size_t>(sysconf(_SC_PAGESIZE));

// --------------------------------------------------------------- settings
uint64_t env_u64(const char* name, uint64_t fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::strtoull(value, nullptr, 10) : fallback;
}

std::atomic<uint64_t> g_seed{env_u64("SPOOFLOSS_EMULATION_SEED", 0)};
std::atomic<int> g_multiprocessors{static_cast<int>(env_u64("SPOOFLOSS_EMULATED_MULTIPROCESSORS", 132))};
std::atomic<uint64_t> g_launch_serial{0};
std::atomic<int64_t> g_max_grid_x{static_cast<int64_t>(kMaxGridX)};

std::mutex g_stats_mutex;
Counters g_counters;
std::map<std::string, int64_t> g_coverage;

// ------------------------------------------------------------------ random
// splitmix64: small, fast, and good enough to shuffle.
struct Random {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t n) {
    return next() % n;
  }
};

// ---------------------------------------------------------- context switch
#ifdef SPOOFLOSS_EMULATION_ASM_SWITCH
// Saves the callee-saved registers on the current stack, stores the stack
// pointer in *save, and resumes the context whose stack pointer is `load`
// (saved by an earlier switch, or prepared by prepare_context). A plain
// function call, so the compiler treats it as one. The SSE and x87 control
// words are not switched (ldmxcsr alone doubled the cost of a switch): every
// fiber runs with the thread's floating-point environment, which no kernel
// changes.
extern "C" void spoofloss_emulation_switch(void** save, void* load);
asm(R"(
    .text
    .p2align 4
    .globl spoofloss_emulation_switch
    .hidden spoofloss_emulation_switch
    .type spoofloss_emulation_switch, @function
spoofloss_emulation_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size spoofloss_emulation_switch, .-spoofloss_emulation_switch
)");

struct Context {
  void* sp = nullptr;
};

void switch_context(Context* save, Context* load) {
  spoofloss_emulation_switch(&save->sp, load->sp);
}

// A fresh stack [stack_low, stack_top) whose first switch `ret`s into entry()
// with the alignment of a function just called.
void prepare_context(Context* context, char* /*stack_low*/, char* stack_top, void (*entry)()) {
  auto* sp = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(stack_top) & ~uintptr_t(15));
  *--sp = 0;  // entry()'s return address (it never returns): after `ret`, rsp + 8 is 16-byte aligned, as after a call
  *--sp = reinterpret_cast<uint64_t>(entry);
  for (int i = 0; i < 6; ++i) *--sp = 0;  // rbp, rbx, r12-r15
  context->sp = sp;
}
#else
// Elsewhere, ucontext: slower (a signal-mask system call per switch), same semantics.
struct Context {
  ucontext_t uc;
};

void switch_context(Context* save, Context* load) {
  swapcontext(&save->uc, &load->uc);
}

void prepare_context(Context* context, char* stack_low, char* stack_top, void (*entry)()) {
  getcontext(&context->uc);
  context->uc.uc_stack.ss_sp = stack_low;
  context->uc.uc_stack.ss_size = static_cast<size_t>(stack_top - stack_low);
  context->uc.uc_link = nullptr;
  makecontext(&context->uc, entry, 0);
}
#endif

// ------------------------------------------------------------------ fibers
enum class State { kReady, kRunning, kAtBarrier, kAtShuffle, kFinished, kFaulted };

struct Fiber {
  Context context;
  char* stack = nullptr;  // lowest address of the mapping; its first page is a guard
  ThreadIndices indices{};
  int linear = 0;  // thread index within the block
  State state = State::kReady;
  const char* wait_file = nullptr;
  int wait_line = 0;
  void* asan_fake_stack = nullptr;
};

// One pending __shfl_down_sync per warp and generation parity: a lane cannot
// reach generation g + 2 before every lane has read generation g (it would
// need all of them at g + 1 first), so two slots suffice.
struct ShuffleSlot {
  unsigned mask = 0;
  unsigned arrived = 0;
  int reads = 0;
  uint64_t generation = 0;
  const char* file = nullptr;
  int line = 0;
  uint64_t values[kWarpSize] = {};
};

struct Warp {
  uint64_t lane_generation[kWarpSize] = {};
  ShuffleSlot slots[2];
};

struct SharedAllocation {
  const char* file;
  int line;
  void* memory;
  size_t bytes;
};

// Stacks are mapped once per OS thread and reused by every launch.
struct StackPool {
  std::vector<char*> stacks;
  ~StackPool() {
    for (char* s : stacks) munmap(s, kStackBytes);
  }
  char* get(size_t index) {
    while (stacks.size() <= index) {
      void* mapping = mmap(
          nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
      TORCH_CHECK(mapping != MAP_FAILED, "spoofloss CUDA emulator: could not map a fiber stack");
      // Guard page: an overflowing kernel stack faults instead of corrupting.
      mprotect(mapping, kPageBytes, PROT_NONE);
      stacks.push_back(static_cast<char*>(mapping));
    }
    return stacks[index];
  }
};

struct BlockRun {
  const LaunchConfig* config = nullptr;
  const std::string* kernel = nullptr;
  void (*body)(void*) = nullptr;
  void* args = nullptr;
  uint3 block_idx{};
  std::vector<Fiber> fibers;
  std::vector<int> ready;
  std::vector<Warp> warps;
  std::vector<SharedAllocation> shared;
  size_t shared_bytes = 0;  // static + dynamic
  unsigned char* dynamic = nullptr;
  Context scheduler;
  const void* scheduler_stack_bottom = nullptr;
  size_t scheduler_stack_size = 0;
  void* scheduler_fake_stack = nullptr;
  Random random{0};
  std::string error;  // set when the block faulted
};

thread_local StackPool t_stacks;
thread_local BlockRun* t_block = nullptr;
thread_local Fiber* t_fiber = nullptr;
thread_local std::string t_pending_error;

// --------------------------------------------------- AddressSanitizer hooks
// A stack switch must be announced to ASan, or it reports the other stack's
// frames as overflows (compiler-rt's fiber API).
void asan_before_switch(void** fake_stack_save, const void* bottom, size_t size) {
#ifdef SPOOFLOSS_EMULATION_ASAN
  __sanitizer_start_switch_fiber(fake_stack_save, bottom, size);
#else
  (void)fake_stack_save, (void)bottom, (void)size;
#endif
}

void asan_after_switch(void* fake_stack_save, const void** old_bottom, size_t* old_size) {
#ifdef SPOOFLOSS_EMULATION_ASAN
  __sanitizer_finish_switch_fiber(fake_stack_save, old_bottom, old_size);
#else
  (void)fake_stack_save, (void)old_bottom, (void)old_size;
#endif
}

// A finished fiber leaves the poisoned redzones of the frames that never
// returned (fiber_entry, the final yield) at the top of its stack, where the
// next fiber's context is written: that much is unpoisoned on every reuse
// (the whole stack would cost more than the kernels).
void asan_forget_stack_top(char* top) {
#ifdef SPOOFLOSS_EMULATION_ASAN
  constexpr size_t kTopBytes = 8 << 10;
  ASAN_UNPOISON_MEMORY_REGION(top - kTopBytes, kTopBytes);
#else
  (void)top;
#endif
}

// A faulted block's fibers stopped anywhere: their whole stacks are unpoisoned.
void asan_forget_stacks(size_t count) {
#ifdef SPOOFLOSS_EMULATION_ASAN
  for (size_t i = 0; i < count; ++i) {
    ASAN_UNPOISON_MEMORY_REGION(t_stacks.get(i) + kPageBytes, kStackBytes - kPageBytes);
  }
#else
  (void)count;
#endif
}

// ------------------------------------------------------------- reporting
// Two __FILE__ literals of one file need not share an address.
bool same_site(const char* file_a, int line_a, const char* file_b, int line_b) {
  return line_a == line_b && (file_a == file_b || (file_a && file_b && std::strcmp(file_a, file_b) == 0));
}

std::string describe(const uint3& v) {
  std::ostringstream out;
  out << "(" << v.x << ", " << v.y << ", " << v.z << ")";
  return out.str();
}

std::string describe(const dim3& v) {
  return describe(uint3{v.x, v.y, v.z});
}

std::string where(const char* file, int line) {
  if (file == nullptr) return "?";
  const char* slash = std::strrchr(file, '/');
  return std::string(slash ? slash + 1 : file) + ":" + std::to_string(line);
}

std::string kernel_header(const BlockRun& run) {
  return "spoofloss CUDA emulator: kernel " + *run.kernel + " (grid " + describe(run.config->grid) + ", block " +
      describe(run.config->block) + "), block " + describe(run.block_idx);
}

std::string state_of(const Fiber& f) {
  switch (f.state) {
    case State::kFinished:
      return "has exited";
    case State::kAtBarrier:
      return "waits at __syncthreads() " + where(f.wait_file, f.wait_line);
    case State::kAtShuffle:
      return "waits at a shuffle " + where(f.wait_file, f.wait_line);
    default:
      return "is running";
  }
}

// "spoofloss::cuda::{anonymous}::pool_chunks_kernel<c10::Half, float, 8>" from
// Launch<Kernel>::name()'s "... [with auto Kernel = <that>]" (GCC) or
// "[Kernel = &<that>]" (Clang).
std::string kernel_name(const char* pretty) {
  std::string s(pretty);
  const auto at = s.find("Kernel = ");
  if (at == std::string::npos) return s;
  s = s.substr(at + 9);
  if (!s.empty() && s.back() == ']') s.pop_back();
  if (!s.empty() && s.front() == '&') s.erase(0, 1);
  for (const char* prefix : {"spoofloss::cuda::", "spoofloss::", "{anonymous}::", "(anonymous namespace)::"}) {
    for (auto p = s.find(prefix); p != std::string::npos; p = s.find(prefix)) s.erase(p, std::strlen(prefix));
  }
  return s;
}

// ------------------------------------------------------------- fiber life
Fiber& current_fiber(const char* what) {
  // Reached only from kernel code: a call outside a launch is a bug in the emulator's use.
  TORCH_CHECK(t_fiber != nullptr, "spoofloss CUDA emulator: ", what, " called outside a kernel");
  return *t_fiber;
}

// Back to the scheduler; returns when the scheduler resumes this fiber.
// `final`: the fiber will never be resumed (finished or faulted).
void yield_to_scheduler(bool final) {
  Fiber& f = *t_fiber;
  BlockRun& run = *t_block;
  asan_before_switch(final ? nullptr : &f.asan_fake_stack, run.scheduler_stack_bottom, run.scheduler_stack_size);
  switch_context(&f.context, &run.scheduler);
  asan_after_switch(f.asan_fake_stack, nullptr, nullptr);
}

[[noreturn]] void fault(const std::string& message) {
  Fiber& f = *t_fiber;
  BlockRun& run = *t_block;
  if (run.error.empty()) {
    run.error = kernel_header(run) + ", thread " + describe(f.indices.thread_idx) + ": " + message;
  }
  f.state = State::kFaulted;
  yield_to_scheduler(/*final=*/true);
  __builtin_unreachable();
}

void fiber_entry() {
  BlockRun& run = *t_block;
  // The first switch into this stack came from the scheduler: learn its stack.
  asan_after_switch(nullptr, &run.scheduler_stack_bottom, &run.scheduler_stack_size);
  // An exception must not unwind off the fiber's stack: it becomes the
  // kernel's fault (after the handler is left, so no exception stays active).
  std::string thrown;
  try {
    run.body(run.args);
  } catch (const std::exception& e) {
    thrown = e.what();
  } catch (...) {
    thrown = "an unknown exception";
  }
  if (!thrown.empty()) fault("exception thrown in kernel code: " + thrown);
  t_fiber->state = State::kFinished;
  yield_to_scheduler(/*final=*/true);
  __builtin_unreachable();
}

void resume(BlockRun& run, Fiber& f) {
  t_fiber = &f;
  f.state = State::kRunning;
  asan_before_switch(&run.scheduler_fake_stack, f.stack + kPageBytes, kStackBytes - kPageBytes);
  switch_context(&run.scheduler, &f.context);
  asan_after_switch(run.scheduler_fake_stack, nullptr, nullptr);
  t_fiber = nullptr;
}

void make_ready(BlockRun& run, Fiber& f) {
  f.state = State::kReady;
  run.ready.push_back(f.linear);
}

// ------------------------------------------------------------ one block
void free_shared(BlockRun& run) {
  for (auto& allocation : run.shared) ::operator delete(allocation.memory, std::align_val_t(16));
  run.shared.clear();
  if (run.dynamic != nullptr) ::operator delete(run.dynamic, std::align_val_t(16));
  run.dynamic = nullptr;
}

// When nobody is ready: release a barrier every live thread waits at, or say
// why the block cannot go on. Returns false when the block is done or failed.
bool resolve_stall(BlockRun& run) {
  const Fiber* exited = nullptr;
  const Fiber* at_barrier = nullptr;
  const Fiber* at_shuffle = nullptr;
  for (const Fiber& f : run.fibers) {
    if (f.state == State::kFinished && exited == nullptr) exited = &f;
    if (f.state == State::kAtBarrier && at_barrier == nullptr) at_barrier = &f;
    if (f.state == State::kAtShuffle && at_shuffle == nullptr) at_shuffle = &f;
  }
  if (at_barrier == nullptr && at_shuffle == nullptr) return false;  // every thread exited
  const std::string head = kernel_header(run) + ": ";
  if (at_shuffle != nullptr) {
    // A shuffle completes when every lane of its mask has arrived; find who is missing.
    const int warp = at_shuffle->linear / kWarpSize;
    const Warp& w = run.warps[warp];
    std::string missing;
    for (const ShuffleSlot& slot : w.slots) {
      if (slot.arrived == 0) continue;
      for (int lane = 0; lane < kWarpSize; ++lane) {
        if ((slot.mask >> lane & 1u) && !(slot.arrived >> lane & 1u)) {
          const int t = warp * kWarpSize + lane;
          if (!missing.empty()) missing += "; ";
          missing += "lane " + std::to_string(lane) + " " +
              (t < static_cast<int>(run.fibers.size()) ? state_of(run.fibers[t]) : "does not exist");
        }
      }
      char mask[16];
      std::snprintf(mask, sizeof mask, "0x%08x", slot.mask);
      run.error = head + "__shfl_down_sync(" + mask + ", ...) at " + where(slot.file, slot.line) + " in warp " +
          std::to_string(warp) + " can never complete: " + missing;
      return false;
    }
    run.error = head + "a thread waits at a shuffle that has no pending exchange (emulator bug)";
    return false;
  }
  if (exited != nullptr) {
    run.error = head + "__syncthreads() " + where(at_barrier->wait_file, at_barrier->wait_line) +
        " is not reached by every thread of the block: thread " + describe(exited->indices.thread_idx) +
        " has exited (a barrier inside a condition that differs between threads)";
    return false;
  }
  for (const Fiber& f : run.fibers) {
    if (!same_site(f.wait_file, f.wait_line, at_barrier->wait_file, at_barrier->wait_line)) {
      run.error = head + "threads wait at different barriers: thread " + describe(at_barrier->indices.thread_idx) +
          " at __syncthreads() " + where(at_barrier->wait_file, at_barrier->wait_line) + ", thread " +
          describe(f.indices.thread_idx) + " at __syncthreads() " + where(f.wait_file, f.wait_line);
      return false;
    }
  }
  for (Fiber& f : run.fibers) make_ready(run, f);
  return true;
}

void run_block(BlockRun& run, const uint3& block_idx) {
  const dim3 block = run.config->block;
  const int threads = static_cast<int>(block.x * block.y * block.z);
  run.block_idx = block_idx;
  run.error.clear();
  run.ready.clear();
  run.fibers.assign(threads, Fiber{});
  run.warps.assign((threads + kWarpSize - 1) / kWarpSize, Warp{});
  free_shared(run);
  run.shared_bytes = run.config->dynamic_shared_bytes;
  run.dynamic = static_cast<unsigned char*>(
      ::operator new(std::max<size_t>(1, run.config->dynamic_shared_bytes), std::align_val_t(16)));
  std::memset(run.dynamic, 0xff, run.config->dynamic_shared_bytes);
  for (int t = 0; t < threads; ++t) {
    Fiber& f = run.fibers[t];
    f.linear = t;
    f.indices.thread_idx = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
    f.indices.block_idx = block_idx;
    f.indices.block_dim = block;
    f.indices.grid_dim = run.config->grid;
    f.stack = t_stacks.get(t);
    // Stacks lie 256 KiB apart, so their tops would all fall in the same cache
    // sets; starting each 17 lines further down (mod 64 KiB: a different line
    // for each of up to 1024 threads) halves the time of a context switch.
    char* top = f.stack + kStackBytes - (static_cast<size_t>(t) * 17 % 1024) * 64;
    asan_forget_stack_top(top);
    prepare_context(&f.context, f.stack + kPageBytes, top, &fiber_entry);
    run.ready.push_back(t);
  }
  while (true) {
    while (!run.ready.empty()) {
      const size_t pick = run.random.below(run.ready.size());
      const int t = run.ready[pick];
      run.ready[pick] = run.ready.back();
      run.ready.pop_back();
      resume(run, run.fibers[t]);
      if (!run.error.empty()) return;
    }
    if (!resolve_stall(run)) return;
  }
}

std::string check_config(const LaunchConfig& c) {
  std::ostringstream why;
  const uint64_t threads = uint64_t(c.block.x) * c.block.y * c.block.z;
  if (c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0) {
    why << "grid " << describe(c.grid) << " is empty";
  } else if (c.grid.x > static_cast<uint64_t>(g_max_grid_x.load())) {
    why << "grid.x = " << c.grid.x << " exceeds the device's " << g_max_grid_x.load();
  } else if (c.grid.y > kMaxGridYZ || c.grid.z > kMaxGridYZ) {
    why << "grid " << describe(c.grid) << ": y and z may not exceed 65535";
  } else if (threads == 0) {
    why << "block " << describe(c.block) << " is empty";
  } else if (threads > kMaxBlockThreads || c.block.x > kMaxBlockXY || c.block.y > kMaxBlockXY || c.block.z > kMaxBlockZ) {
    why << "block " << describe(c.block) << " exceeds 1024 threads (x, y <= 1024, z <= 64)";
  } else if (c.dynamic_shared_bytes > kMaxSharedBytes) {
    why << c.dynamic_shared_bytes << " bytes of dynamic shared memory exceed 48 KiB";
  }
  return why.str();
}

// The order blocks run in: a random permutation of [0, n), a full shuffle
// when it fits comfortably in memory, else a random affine map (coprime
// multiplier), which still visits every block once.
class BlockOrder {
 public:
  BlockOrder(uint64_t n, Random& random) : n_(n) {
    if (n <= (uint64_t(1) << 22)) {
      order_.resize(n);
      for (uint64_t i = 0; i < n; ++i) order_[i] = static_cast<uint32_t>(i);
      for (uint64_t i = n; i > 1; --i) std::swap(order_[i - 1], order_[random.below(i)]);
    } else {
      do {
        multiplier_ = random.below(n - 1) + 1;
      } while (std::gcd(multiplier_, n) != 1);
      offset_ = random.below(n);
    }
  }
  uint64_t operator[](uint64_t i) const {
    if (!order_.empty()) return order_[i];
    return static_cast<uint64_t>((static_cast<unsigned __int128>(multiplier_) * i + offset_) % n_);
  }

 private:
  uint64_t n_;
  std::vector<uint32_t> order_;
  uint64_t multiplier_ = 1, offset_ = 0;
};

}  // namespace

// ---------------------------------------------------------------- device.h
const ThreadIndices& current_thread() {
  return current_fiber("threadIdx / blockIdx").indices;
}

void syncthreads(const char* file, int line) {
  Fiber& f = current_fiber("__syncthreads()");
  f.state = State::kAtBarrier;
  f.wait_file = file;
  f.wait_line = line;
  yield_to_scheduler(/*final=*/false);
}

uint64_t shuffle_down_bits(const char* file, int line, unsigned mask, uint64_t bits, unsigned delta, int width) {
  Fiber& f = current_fiber("__shfl_down_sync");
  BlockRun& run = *t_block;
  const int lane = f.linear % kWarpSize;
  const int warp = f.linear / kWarpSize;
  // (reports only: built where a fault needs them, not on every shuffle)
  const auto at = [&] { return " at " + where(file, line); };
  if (width <= 0 || width > kWarpSize || (width & (width - 1)) != 0) {
    fault("__shfl_down_sync with width " + std::to_string(width) + " (a power of 2 up to 32)" + at());
  }
  if (!(mask >> lane & 1u)) fault("__shfl_down_sync called by a lane outside its own mask" + at());
  const int lanes_in_warp = std::min<int>(kWarpSize, static_cast<int>(run.fibers.size()) - warp * kWarpSize);
  if (lanes_in_warp < kWarpSize && (mask >> lanes_in_warp) != 0) {
    fault("__shfl_down_sync's mask names lanes past the end of the block" + at());
  }
  Warp& w = run.warps[warp];
  const uint64_t generation = w.lane_generation[lane]++;
  ShuffleSlot& slot = w.slots[generation & 1];
  if (slot.arrived == 0) {
    slot.mask = mask;
    slot.generation = generation;
    slot.file = file;
    slot.line = line;
    slot.reads = 0;
  } else if (slot.mask != mask || slot.generation != generation || !same_site(slot.file, slot.line, file, line)) {
    fault("the lanes of warp " + std::to_string(warp) + " disagree on a shuffle: this lane's " + where(file, line) +
          " meets " + where(slot.file, slot.line) + " (different masks or call sites)");
  }
  slot.values[lane] = bits;
  slot.arrived |= 1u << lane;
  if (slot.arrived != mask) {
    f.state = State::kAtShuffle;
    f.wait_file = file;
    f.wait_line = line;
    yield_to_scheduler(/*final=*/false);
  } else {
    for (int other = 0; other < kWarpSize; ++other) {
      if (other != lane && (mask >> other & 1u)) make_ready(run, run.fibers[warp * kWarpSize + other]);
    }
  }
  // CUDA: the value of lane + delta when that lane lies in the same width
  // segment, else the caller's own value.
  const int source = lane + static_cast<int>(delta);
  uint64_t result = bits;
  if (delta < static_cast<unsigned>(width) && source < (lane / width + 1) * width) {
    if (!(mask >> source & 1u)) fault("__shfl_down_sync reads lane " + std::to_string(source) + ", outside the mask" + at());
    result = slot.values[source];
  }
  if (++slot.reads == __builtin_popcount(mask)) slot.arrived = 0;  // every lane has read: free the slot
  return result;
}

void* block_shared(const char* file, int line, size_t bytes, size_t alignment) {
  current_fiber("__shared__");
  BlockRun& run = *t_block;
  for (const auto& allocation : run.shared) {
    if (same_site(allocation.file, allocation.line, file, line)) return allocation.memory;
  }
  if (alignment > 16) fault("__shared__ array aligned to " + std::to_string(alignment) + " bytes (at most 16 supported)");
  run.shared_bytes += bytes;
  if (run.shared_bytes > kMaxSharedBytes) {
    fault("shared memory of the block reaches " + std::to_string(run.shared_bytes) + " bytes at " + where(file, line) +
          ", over the 48 KiB a block may use");
  }
  void* memory = ::operator new(std::max<size_t>(1, bytes), std::align_val_t(16));
  std::memset(memory, 0xff, bytes);
  run.shared.push_back({file, line, memory, bytes});
  return memory;
}

void* dynamic_shared() {
  current_fiber("extern __shared__");
  return t_block->dynamic;
}

void check_aligned(const void* address, size_t alignment, const char* what, const char* file, int line) {
  if (reinterpret_cast<uintptr_t>(address) % alignment == 0) return;
  std::ostringstream out;
  out << "misaligned " << alignment << "-byte " << what << " of address " << address << " at " << where(file, line);
  if (t_fiber == nullptr) TORCH_CHECK(false, "spoofloss CUDA emulator: ", out.str());
  fault(out.str());
}

void run_kernel(const LaunchConfig& config, const char* pretty_name, void (*body)(void*), void* args) {
  TORCH_CHECK(t_block == nullptr, "spoofloss CUDA emulator: a kernel launched from inside a kernel");
  // One name per instantiation, computed on its first launch.
  static std::mutex names_mutex;
  static std::map<const char*, std::string> names;
  const std::string* kernel;
  {
    std::lock_guard<std::mutex> lock(names_mutex);
    auto it = names.find(pretty_name);
    if (it == names.end()) it = names.emplace(pretty_name, kernel_name(pretty_name)).first;
    kernel = &it->second;
  }
  if (!t_pending_error.empty()) return;  // like CUDA, a failed launch sticks until it is checked
  const std::string invalid = check_config(config);
  if (!invalid.empty()) {
    t_pending_error = "spoofloss CUDA emulator: invalid launch of kernel " + *kernel + ": " + invalid;
    return;
  }
  {
    std::lock_guard<std::mutex> lock(g_stats_mutex);
    ++g_counters.launches;
    g_counters.kernels.push_back(*kernel);
    ++g_coverage[*kernel];
  }
  const uint64_t serial = g_launch_serial.fetch_add(1);
  Random order_random{g_seed.load() * 0x2545f4914f6cdd1dull + serial};
  const uint64_t blocks = uint64_t(config.grid.x) * config.grid.y * config.grid.z;
  const BlockOrder order(blocks, order_random);

  BlockRun run;
  run.config = &config;
  run.kernel = kernel;
  run.body = body;
  run.args = args;
  t_block = &run;
  for (uint64_t i = 0; i < blocks && run.error.empty(); ++i) {
    const uint64_t b = order[i];
    const uint3 block_idx{
        static_cast<unsigned>(b % config.grid.x), static_cast<unsigned>(b / config.grid.x % config.grid.y),
        static_cast<unsigned>(b / (uint64_t(config.grid.x) * config.grid.y))};
    run.random = Random{order_random.next() ^ b};
    run_block(run, block_idx);
  }
  t_block = nullptr;
  free_shared(run);
  if (!run.error.empty()) {
    t_pending_error = run.error;
    asan_forget_stacks(run.fibers.size());
  }
}

// ------------------------------------------------------------------- api.h
void set_seed(uint64_t seed) {
  g_seed.store(seed);
}

uint64_t seed() {
  return g_seed.load();
}

void set_multiprocessor_count(int count) {
  TORCH_CHECK_VALUE(count >= 1, "multiprocessor count must be at least 1, got ", count);
  g_multiprocessors.store(count);
}

int multiprocessor_count() {
  return g_multiprocessors.load();
}

void set_max_grid_x(int64_t blocks) {
  TORCH_CHECK_VALUE(
      blocks >= 1 && static_cast<uint64_t>(blocks) <= kMaxGridX, "max grid x must lie in [1, 2^31 - 1], got ", blocks);
  g_max_grid_x.store(blocks);
}

int64_t max_grid_x() {
  return g_max_grid_x.load();
}

void reset_counters() {
  std::lock_guard<std::mutex> lock(g_stats_mutex);
  g_counters = Counters{};
}

Counters counters() {
  std::lock_guard<std::mutex> lock(g_stats_mutex);
  return g_counters;
}

void count_scratch(int64_t bytes) {
  std::lock_guard<std::mutex> lock(g_stats_mutex);
  ++g_counters.scratch_allocations;
  g_counters.scratch_bytes += bytes;
}

std::map<std::string, int64_t> coverage() {
  std::lock_guard<std::mutex> lock(g_stats_mutex);
  return g_coverage;
}

void check_last_launch() {
  if (t_pending_error.empty()) return;
  std::string error;
  std::swap(error, t_pending_error);
  TORCH_CHECK(false, error);
}

}  // namespace emulation
}  // namespace spoofloss
