// Kernels with deliberate bugs, to show that the CUDA emulator (csrc/emu) catches each kind
// (tests/test_cuda_emulated.py::test_emulator_*). Never built for a GPU.
#include "common.cuh"

namespace {

// Thread 0 sums what the others wrote to shared memory, but without a barrier between write and read.
__global__ void racy_sum_kernel(const float* x, float* out) {
  __shared__ float partial[64];
  partial[threadIdx.x] = x[threadIdx.x];
  if (threadIdx.x == 0) {
    float s = 0.f;
    for (int i = 0; i < 64; ++i) s += partial[i];
    *out = s;
  }
}

// The same sum done right, with the barrier.
__global__ void synced_sum_kernel(const float* x, float* out) {
  __shared__ float partial[64];
  partial[threadIdx.x] = x[threadIdx.x];
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.f;
    for (int i = 0; i < 64; ++i) s += partial[i];
    *out = s;
  }
}

// Lane 63 waits at the block barrier while the rest of its warp waits for it in a shuffle.
__global__ void divergent_barrier_kernel(float* out) {
  float v = static_cast<float>(threadIdx.x);
  if (threadIdx.x == 63 || threadIdx.x < 32) {
    __syncthreads();
  } else {
    v = __shfl_xor_sync(lmt::gpu::kFullMask, v, 1);
  }
  out[threadIdx.x] = v;
}

// A 16-byte vector load from an address 4 bytes past a 16-byte boundary.
__global__ void misaligned_load_kernel(const float* x, float* out) {
  float v[4];
  lmt::gpu::load_floats<float, 4>(x + 1, v);
  out[threadIdx.x] = v[0];
}

// Every thread writes one float of dynamic shared memory, but the launch asks for 16 bytes only.
__global__ void shared_overflow_kernel(float* out) {
  extern __shared__ float region[];
  region[threadIdx.x] = 1.f;
  out[threadIdx.x] = region[threadIdx.x];
}

}  // namespace

extern "C" {

cudaError_t selftest_racy_sum(const float* x, float* out) {
  racy_sum_kernel<<<1, 64>>>(x, out);
  return cudaGetLastError();
}

cudaError_t selftest_synced_sum(const float* x, float* out) {
  synced_sum_kernel<<<1, 64>>>(x, out);
  return cudaGetLastError();
}

cudaError_t selftest_divergent_barrier(float* out) {
  divergent_barrier_kernel<<<1, 64>>>(out);
  return cudaGetLastError();
}

cudaError_t selftest_misaligned_load(const float* x, float* out) {
  misaligned_load_kernel<<<1, 32>>>(x, out);
  return cudaGetLastError();
}

cudaError_t selftest_shared_overflow(float* out) {
  shared_overflow_kernel<<<1, 32, 16>>>(out);
  return cudaGetLastError();
}

}  // extern "C"
