// A CPU emulation of the small part of CUDA that csrc/cuda uses, so that the kernels run (slowly, but
// exactly as written) on a machine without a GPU and can be tested against the reference there.
//
// Not a general CUDA implementation: only what our kernels need.
//   * Blocks run one after another; the threads of a block are cooperative fibers that switch
//     only at barriers (__syncthreads, and the two exchanges of every warp shuffle). The order in which
//     threads and blocks run is a setting (forward, reverse, seeded shuffle), so a missing barrier shows
//     up as a result that depends on the order.
//   * __shared__ arrays are function statics (one block runs at a time); dynamic shared memory is a
//     buffer of the launch's size, filled with NaN before each block and followed by canaries that must
//     survive it.
//   * Barrier misuse is an error of the launch, not a hang: a deadlock (threads waiting at different
//     barriers), a shuffle in a warp with exited lanes, a partial mask. Vector accesses are checked for
//     their alignment (the builder routes the kernels' reinterpret_casts through checked_cast).
//   * float16 / bfloat16 are storage types with round-to-nearest-even conversions, as on the GPU.
// The kernel sources are compiled unchanged apart from two mechanical rewrites done by the builder
// (tests/cuda_emulator.py): `k<<<cfg>>>(args)` becomes a call to lmt_emu::launch, and
// `extern __shared__ T name[]` becomes a pointer to the launch's dynamic shared memory.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

// ---- language keywords -----------------------------------------------------------------------------

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static  // one block runs at a time, so a function static is the block's memory

// ---- vector and index types ------------------------------------------------------------------------

struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

struct alignas(16) float4 {
  float x, y, z, w;
};

inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

inline float rsqrtf(float v) { return 1.f / std::sqrt(v); }

// ---- float16 and bfloat16 storage --------------------------------------------------------------------

struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};

inline float __half2float(__half h) {
  _Float16 v;
  std::memcpy(&v, &h.bits, 2);
  return static_cast<float>(v);
}

inline __half __float2half_rn(float f) {
  const _Float16 v = static_cast<_Float16>(f);  // IEEE round to nearest even
  __half h;
  std::memcpy(&h.bits, &v, 2);
  return h;
}

inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t bits = uint32_t(b.bits) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if (std::isnan(f)) return __nv_bfloat16{static_cast<uint16_t>((bits >> 16) | 0x40)};  // quiet NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest even
  return __nv_bfloat16{static_cast<uint16_t>(bits >> 16)};
}

// ---- runtime API -----------------------------------------------------------------------------------

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorMisalignedAddress = 716,
  cudaErrorLaunchFailure = 719,
};
typedef cudaError_t cudaError;

enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };

struct CUstream_st;
typedef CUstream_st* cudaStream_t;
struct CUevent_st;
typedef CUevent_st* cudaEvent_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

namespace lmt_emu {

constexpr int kWarp = 32;
constexpr int kMaxDevices = 64;
constexpr size_t kMaxDynamicShared = 48 * 1024;  // without the opt-in attribute
constexpr size_t kFiberStack = 256 * 1024;
constexpr size_t kSharedGuardWords = 64;  // canary words after the dynamic shared memory
constexpr uint32_t kCanary = 0x7fc0deadu;  // a NaN with a payload no arithmetic produces

enum Order { kForward = 0, kReverse = 1, kShuffled = 2 };

// ---- fiber contexts ---------------------------------------------------------------------------------
// On x86-64 a switch is six register pushes and a stack swap (lmt_emu_switch, emu_control.cpp): about
// a hundred times cheaper than swapcontext, which makes a system call for the signal mask each time.
// Under AddressSanitizer the switch tells ASan about each stack change (its fiber annotations). Elsewhere,
// or where LMT_EMU_UCONTEXT is defined, ucontext.

#if defined(__SANITIZE_ADDRESS__)
#define LMT_EMU_ASAN 1
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if defined(__x86_64__) && !defined(LMT_EMU_UCONTEXT)
extern "C" void lmt_emu_switch(void** save_sp, void* load_sp);

struct Context {
  void* sp = nullptr;
  const void* stack_bottom = nullptr;  // for ASan: the stack this context runs on
  size_t stack_size = 0;
  void* fake_stack = nullptr;
};

// `finished`: `from` will never run again (ASan may free its bookkeeping).
inline void switch_context(Context& from, Context& to, bool finished = false) {
#ifdef LMT_EMU_ASAN
  __sanitizer_start_switch_fiber(finished ? nullptr : &from.fake_stack, to.stack_bottom, to.stack_size);
#else
  (void)finished;
#endif
  lmt_emu_switch(&from.sp, to.sp);
#ifdef LMT_EMU_ASAN
  __sanitizer_finish_switch_fiber(from.fake_stack, nullptr, nullptr);
#endif
}

// Called first thing on a fiber's stack: records the stack the scheduler runs on (ASan needs it to
// switch back).
inline void entered_fiber(Context& scheduler) {
#ifdef LMT_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &scheduler.stack_bottom, &scheduler.stack_size);
#else
  (void)scheduler;
#endif
}

// A fresh stack that "returns" into `entry` (which must never return): six zeroed callee-saved
// registers, then entry's address for lmt_emu_switch's ret, then a null return address, so that entry
// starts with the stack aligned as after a call.
inline void make_context(Context& c, char* stack, size_t size, void (*entry)()) {
#ifdef LMT_EMU_ASAN
  ASAN_UNPOISON_MEMORY_REGION(stack, size);  // frames of the fibers that ran here before never returned
#endif
  uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;
  *--sp = reinterpret_cast<void*>(entry);
  for (int r = 0; r < 6; ++r) *--sp = nullptr;
  c.sp = sp;
  c.stack_bottom = stack;
  c.stack_size = size;
  c.fake_stack = nullptr;
}
#else
struct Context {
  ucontext_t uc;
};

inline void switch_context(Context& from, Context& to, bool = false) { swapcontext(&from.uc, &to.uc); }

inline void entered_fiber(Context&) {}

inline void make_context(Context& c, char* stack, size_t size, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = size;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
#endif

// Process-wide settings and the record of the last failure (set through emu_control.cpp).
struct State {
  int device = 0;
  int sm_count[kMaxDevices] = {};
  int order = kForward;
  uint64_t seed = 0;
  cudaError_t last_error = cudaSuccess;
  std::string message;  // why the last launch failed
  int64_t launches = 0;
};

inline State& state() {
  static State s;
  return s;
}

inline void fail(cudaError_t error, const std::string& why) {
  State& s = state();
  if (s.last_error == cudaSuccess) {
    s.last_error = error;
    s.message = why;
  }
}

// The permutation of 0..count-1 that the current order setting runs.
inline std::vector<int> run_order(int count, uint64_t salt) {
  std::vector<int> order(count);
  std::iota(order.begin(), order.end(), 0);
  if (state().order == kReverse) std::reverse(order.begin(), order.end());
  if (state().order == kShuffled) {
    std::mt19937_64 rng(state().seed * 0x9e3779b97f4a7c15ull + salt);
    std::shuffle(order.begin(), order.end(), rng);
  }
  return order;
}

// One block in flight: its fibers and barrier state.
struct Block {
  enum Wait { kNone, kBlockBarrier, kWarpBarrier };
  struct Fiber {
    Context context;
    bool done = false;
    Wait wait = kNone;
    uint64_t wait_generation = 0;
  };

  int threads = 0;
  std::function<void()> body;
  std::vector<Fiber> fibers;
  std::unique_ptr<char[]> stacks;
  Context scheduler;
  int current = -1;
  bool failed = false;
  bool progress = false;

  int live = 0;
  int block_arrived = 0;
  uint64_t block_generation = 0;
  std::vector<int> warp_live, warp_arrived;
  std::vector<uint64_t> warp_generation;
  std::vector<uint64_t> exchange;  // [warp][lane] shuffle slots

  std::vector<float> dynamic_shared;  // the launch's bytes, then kSharedGuardWords canaries
  size_t dynamic_words = 0;
};

inline thread_local Block* running = nullptr;

inline int warp_of(int thread) { return thread / kWarp; }

// Hand control back to the scheduler until it resumes this fiber.
inline void yield_to_scheduler() {
  Block& b = *running;
  switch_context(b.fibers[b.current].context, b.scheduler);
}

inline void abort_block(const std::string& why) {
  Block& b = *running;
  fail(cudaErrorLaunchFailure, why);
  b.failed = true;
  for (;;) yield_to_scheduler();  // never resumed: the scheduler abandons a failed block
}

inline void release_block_barrier(Block& b) {
  b.block_arrived = 0;
  ++b.block_generation;
  b.progress = true;
}

inline void release_warp_barrier(Block& b, int warp) {
  b.warp_arrived[warp] = 0;
  ++b.warp_generation[warp];
  b.progress = true;
}

inline void sync_block() {
  Block& b = *running;
  Block::Fiber& me = b.fibers[b.current];
  me.wait = Block::kBlockBarrier;
  me.wait_generation = b.block_generation;
  b.progress = true;
  if (++b.block_arrived == b.live) release_block_barrier(b);
  while (b.block_generation == me.wait_generation) yield_to_scheduler();
  me.wait = Block::kNone;
}

inline void sync_warp() {
  Block& b = *running;
  const int warp = warp_of(b.current);
  if (b.warp_live[warp] != kWarp)  // a full-mask shuffle needs all 32 lanes
    abort_block("warp shuffle in warp " + std::to_string(warp) + " with " + std::to_string(b.warp_live[warp]) +
                " live lanes (some exited, or the block is not whole warps)");
  Block::Fiber& me = b.fibers[b.current];
  me.wait = Block::kWarpBarrier;
  me.wait_generation = b.warp_generation[warp];
  b.progress = true;
  if (++b.warp_arrived[warp] == kWarp) release_warp_barrier(b, warp);
  while (b.warp_generation[warp] == me.wait_generation) yield_to_scheduler();
  me.wait = Block::kNone;
}

// Every fiber starts here and ends by switching to the scheduler for good.
[[noreturn]] inline void fiber_entry() {
  Block& b = *running;
  entered_fiber(b.scheduler);
  b.body();
  const int me = b.current;
  b.fibers[me].done = true;
  --b.live;
  --b.warp_live[warp_of(me)];
  b.progress = true;
  // Exited threads no longer hold a block barrier back (as on the GPU since Volta).
  if (b.block_arrived > 0 && b.block_arrived == b.live) release_block_barrier(b);
  for (;;) switch_context(b.fibers[me].context, b.scheduler, /*finished=*/true);  // never resumed
}

inline bool runnable(const Block& b, const Block::Fiber& f, int thread) {
  if (f.done) return false;
  if (f.wait == Block::kBlockBarrier) return b.block_generation != f.wait_generation;
  if (f.wait == Block::kWarpBarrier) return b.warp_generation[warp_of(thread)] != f.wait_generation;
  return true;
}

// Runs one block to completion; false (with the reason recorded) on a barrier error.
inline bool run_block(Block& b, uint64_t block_salt) {
  const int warps = (b.threads + kWarp - 1) / kWarp;
  b.fibers.assign(b.threads, Block::Fiber{});
  b.live = b.threads;
  b.block_arrived = 0;
  b.warp_live.assign(warps, 0);
  for (int t = 0; t < b.threads; ++t) ++b.warp_live[warp_of(t)];
  b.warp_arrived.assign(warps, 0);
  b.warp_generation.assign(warps, 0);
  b.exchange.assign(size_t(warps) * kWarp, 0);
  std::fill(b.dynamic_shared.begin(), b.dynamic_shared.begin() + b.dynamic_words,
            std::numeric_limits<float>::quiet_NaN());
  for (size_t i = b.dynamic_words; i < b.dynamic_shared.size(); ++i) std::memcpy(&b.dynamic_shared[i], &kCanary, 4);
  for (int t = 0; t < b.threads; ++t) {
    make_context(b.fibers[t].context, b.stacks.get() + size_t(t) * kFiberStack, kFiberStack, fiber_entry);
  }
  const std::vector<int> order = run_order(b.threads, block_salt);
  while (b.live > 0) {
    b.progress = false;
    for (int t : order) {
      if (!runnable(b, b.fibers[t], t)) continue;
      b.current = t;
      threadIdx = uint3{unsigned(t), 0, 0};
      switch_context(b.scheduler, b.fibers[t].context);
      if (b.failed) return false;
    }
    if (!b.progress && b.live > 0) {
      fail(cudaErrorLaunchFailure, "deadlock: the live threads of block " + std::to_string(blockIdx.x) +
                                       " wait at barriers that can never complete (divergent __syncthreads?)");
      return false;
    }
  }
  for (size_t i = b.dynamic_words; i < b.dynamic_shared.size(); ++i) {
    uint32_t word;
    std::memcpy(&word, &b.dynamic_shared[i], 4);
    if (word != kCanary) {
      fail(cudaErrorLaunchFailure, "block " + std::to_string(blockIdx.x) + " wrote past the end of its " +
                                       std::to_string(b.dynamic_words * 4) + " bytes of dynamic shared memory");
      return false;
    }
  }
  return true;
}

template <typename T>
T shuffle_xor(unsigned mask, T value, int lane_mask) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shuffle of a register-sized value");
  Block& b = *running;
  if (mask != 0xffffffffu) abort_block("shuffle with a partial mask (not used by our kernels)");
  const int thread = b.current;
  const int lane = thread % kWarp;
  const size_t warp_base = size_t(warp_of(thread)) * kWarp;
  uint64_t slot = 0;
  std::memcpy(&slot, &value, sizeof(T));
  b.exchange[warp_base + lane] = slot;
  sync_warp();  // every lane has written
  slot = b.exchange[warp_base + ((lane ^ lane_mask) & (kWarp - 1))];
  sync_warp();  // every lane has read before anyone writes again
  T result;
  std::memcpy(&result, &slot, sizeof(T));
  return result;
}

template <typename T>
T* dynamic_shared() {
  static_assert(alignof(T) <= alignof(float), "dynamic shared memory is float-aligned here");
  return reinterpret_cast<T*>(running->dynamic_shared.data());
}

// A reinterpret_cast that checks the alignment the GPU would demand of a vector access.
template <typename P, typename Q>
P checked_cast(Q* pointer) {
  using Target = std::remove_pointer_t<P>;
  if (reinterpret_cast<uintptr_t>(pointer) % alignof(Target) != 0) {
    fail(cudaErrorMisalignedAddress, "misaligned vector access: " + std::to_string(sizeof(Target)) +
                                         " bytes at an address not aligned to " + std::to_string(alignof(Target)));
    if (running != nullptr) abort_block("misaligned address");
  }
  return reinterpret_cast<P>(pointer);
}

// `kernel<<<grid, block, shared, stream>>>(args...)` becomes launch(grid, block, shared, stream).run(kernel, args...).
struct Launch {
  dim3 grid, block;
  size_t shared;

  explicit Launch(dim3 g, dim3 b, size_t s = 0, cudaStream_t = nullptr) : grid(g), block(b), shared(s) {}

  template <typename Kernel, typename... Args>
  void run(Kernel kernel, const Args&... args) const {
    State& s = state();
    ++s.launches;
    if (s.last_error != cudaSuccess) return;  // a sticky error, as after a failed kernel
    const int64_t threads = int64_t(block.x) * block.y * block.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > 1024 || block.y != 1 ||
        block.z != 1 || grid.y != 1 || grid.z != 1 || grid.x > 2147483647u) {
      fail(cudaErrorInvalidConfiguration, "launch configuration grid " + std::to_string(grid.x) + "x" +
                                              std::to_string(grid.y) + "x" + std::to_string(grid.z) + ", block " +
                                              std::to_string(block.x) + "x" + std::to_string(block.y) + "x" +
                                              std::to_string(block.z) + " (this emulator runs 1-D grids and blocks)");
      return;
    }
    if (shared > kMaxDynamicShared) {
      fail(cudaErrorInvalidValue, "dynamic shared memory of " + std::to_string(shared) + " bytes");
      return;
    }
    Block b;
    b.threads = static_cast<int>(threads);
    b.stacks.reset(new char[size_t(b.threads) * kFiberStack]);
    b.dynamic_words = (shared + sizeof(float) - 1) / sizeof(float);
    b.dynamic_shared.resize(b.dynamic_words + kSharedGuardWords);
    b.body = [&] { kernel(args...); };
    gridDim = grid;
    blockDim = block;
    Block* outer = running;
    running = &b;
    for (int block_index : run_order(static_cast<int>(grid.x), s.launches)) {
      blockIdx = uint3{unsigned(block_index), 0, 0};
      if (!run_block(b, s.launches * 1315423911ull + block_index)) break;
    }
    running = outer;
  }
};

}  // namespace lmt_emu

inline void __syncthreads() { lmt_emu::sync_block(); }

inline float __shfl_xor_sync(unsigned mask, float value, int lane_mask) {
  return lmt_emu::shuffle_xor(mask, value, lane_mask);
}
inline int __shfl_xor_sync(unsigned mask, int value, int lane_mask) {
  return lmt_emu::shuffle_xor(mask, value, lane_mask);
}

inline cudaError_t cudaGetLastError() {
  lmt_emu::State& s = lmt_emu::state();
  const cudaError_t e = s.last_error;
  s.last_error = cudaSuccess;  // the emulator has no sticky context errors: every failure is reported once
  return e;
}
inline cudaError_t cudaPeekAtLastError() { return lmt_emu::state().last_error; }

inline cudaError_t cudaGetDevice(int* device) {
  *device = lmt_emu::state().device;
  return cudaSuccess;
}

inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  lmt_emu::State& s = lmt_emu::state();
  if (device < 0 || device >= lmt_emu::kMaxDevices) return cudaErrorInvalidDevice;
  if (attr != cudaDevAttrMultiProcessorCount) return cudaErrorInvalidValue;
  *value = s.sm_count[device] > 0 ? s.sm_count[device] : 132;  // an H100 SXM unless set
  return cudaSuccess;
}

inline cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}

// "Device" memory is host memory, 256-byte aligned as cudaMalloc's, and filled with 0xff bytes (NaN in
// every float format) so that an element a kernel fails to write shows.
inline cudaError_t cudaMalloc(void** pointer, size_t bytes) {
  const size_t rounded = (bytes + 255) / 256 * 256;
  *pointer = rounded == 0 ? nullptr : std::aligned_alloc(256, rounded);
  if (rounded != 0 && *pointer == nullptr) return cudaErrorMemoryAllocation;
  if (*pointer != nullptr) std::memset(*pointer, 0xff, rounded);
  return cudaSuccess;
}

template <typename T>
cudaError_t cudaMalloc(T** pointer, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(pointer), bytes);
}

inline cudaError_t cudaFree(void* pointer) {
  std::free(pointer);
  return cudaSuccess;
}

inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (bytes != 0) std::memmove(dst, src, bytes);
  return cudaSuccess;
}

// Launches run to completion when they are made, so synchronising only reports a pending error.
inline cudaError_t cudaDeviceSynchronize() { return cudaGetLastError(); }

inline const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorMisalignedAddress:
      return "misaligned address";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure";
    default:
      return "unknown error";
  }
}
