// The emulator's settings and diagnostics, exported for the Python side (tests/cuda_emulator.py).
#include <cstdint>

#include "cuda_emu.h"

#if defined(__x86_64__) && !defined(LMT_EMU_UCONTEXT)  // else ucontext (cuda_emu.h)
// lmt_emu_switch(save_sp, load_sp): push the System V callee-saved registers, store the stack pointer in
// *save_sp, continue on load_sp's stack (popping what its own switch pushed) and return there.
asm(R"(
  .text
  .globl lmt_emu_switch
  .type lmt_emu_switch, @function
lmt_emu_switch:
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
  .size lmt_emu_switch, .-lmt_emu_switch
)");
#endif

extern "C" {

// The device cudaGetDevice reports and its multiprocessor count (what the launch heuristic sees).
// api.cu caches the count per device, so a test that needs another count picks another device.
void lmt_emu_set_device(int device, int sm_count) {
  lmt_emu::State& s = lmt_emu::state();
  s.device = device;
  if (device >= 0 && device < lmt_emu::kMaxDevices) s.sm_count[device] = sm_count;
}

// 0: threads and blocks in index order, 1: reversed, 2: shuffled with `seed`.
void lmt_emu_set_order(int order, uint64_t seed) {
  lmt_emu::state().order = order;
  lmt_emu::state().seed = seed;
}

// Why the last failed launch failed ("" when none did); cleared by lmt_emu_reset.
const char* lmt_emu_message() { return lmt_emu::state().message.c_str(); }

int64_t lmt_emu_launches() { return lmt_emu::state().launches; }

void lmt_emu_reset() {
  lmt_emu::State& s = lmt_emu::state();
  s.last_error = cudaSuccess;
  s.message.clear();
  s.launches = 0;
}

}  // extern "C"
