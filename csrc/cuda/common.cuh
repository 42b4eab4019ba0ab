// Device helpers shared by the CUDA kernels (internal; the public API is lmt/cuda_kernels.h).
//
// Storage types are float, __half and __nv_bfloat16; everything is computed in float32. Values move
// between memory and registers VEC at a time as one aligned access (16 bytes for VEC = 4 float or
// 8 half), or one at a time on the scalar path (VEC = 1) for rows whose length or base address
// does not allow vector access.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "lmt/cuda_kernels.h"

namespace lmt {
namespace gpu {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLeakyReluSlope = 0.01f;

// ---- storage <-> float -------------------------------------------------------------------------

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);  // round to nearest even, as torch's .to(float16)
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// N consecutive elements as one naturally aligned access (at most 16 bytes per instruction; a
// 32-byte pack, e.g. 8 floats, becomes two 16-byte accesses).
template <typename T, int N>
struct alignas(sizeof(T) * N > 16 ? 16 : sizeof(T) * N) Pack {
  T v[N];
};

template <typename T, int N>
__device__ __forceinline__ void load_floats(const T* p, float (&out)[N]) {
  const Pack<T, N> pack = *reinterpret_cast<const Pack<T, N>*>(p);
#pragma unroll
  for (int e = 0; e < N; ++e) out[e] = to_float(pack.v[e]);
}

template <typename T, int N>
__device__ __forceinline__ void store_floats(T* p, const float (&in)[N]) {
  Pack<T, N> pack;
#pragma unroll
  for (int e = 0; e < N; ++e) pack.v[e] = from_float<T>(in[e]);
  *reinterpret_cast<Pack<T, N>*>(p) = pack;
}

// The residual's dtype is a run-time value (it may differ from x's); the branch is uniform.
template <int N>
__device__ __forceinline__ void load_floats_as(const void* base, lmt_dtype dtype, int64_t offset,
                                               float (&out)[N]) {
  switch (dtype) {
    case LMT_DTYPE_F16:
      load_floats<__half, N>(static_cast<const __half*>(base) + offset, out);
      break;
    case LMT_DTYPE_BF16:
      load_floats<__nv_bfloat16, N>(static_cast<const __nv_bfloat16*>(base) + offset, out);
      break;
    default:
      load_floats<float, N>(static_cast<const float*>(base) + offset, out);
      break;
  }
}

// ---- epilogue ----------------------------------------------------------------------------------

// Written as comparisons so that NaN passes through, as torch's relu / leaky_relu do.
__device__ __forceinline__ float activate(float v, int activation) {
  if (activation == LMT_ACTIVATION_RELU) return v < 0.f ? 0.f : v;
  if (activation == LMT_ACTIVATION_LEAKY_RELU) return v < 0.f ? v * kLeakyReluSlope : v;
  return v;
}

// activation, + residual, one rounding to T, one store of N elements at `offset`.
template <typename T, int N>
__device__ __forceinline__ void finish_and_store(float (&acc)[N], int activation, const void* residual,
                                                 lmt_dtype residual_dtype, void* y, int64_t offset) {
#pragma unroll
  for (int e = 0; e < N; ++e) acc[e] = activate(acc[e], activation);
  if (residual != nullptr) {
    float r[N];
    load_floats_as<N>(residual, residual_dtype, offset, r);
#pragma unroll
    for (int e = 0; e < N; ++e) acc[e] += r[e];
  }
  store_floats<T, N>(static_cast<T*>(y) + offset, acc);
}

// Element (j * THREADS + threadIdx.x) * VEC of a tile: consecutive threads own consecutive vectors.
template <int THREADS, int VEC>
__device__ __forceinline__ int tile_index(int j) {
  return (j * THREADS + static_cast<int>(threadIdx.x)) * VEC;
}

template <typename R, int THREADS, int NV, int VEC>
__device__ __forceinline__ void add_residual(float (&acc)[NV][VEC], const R* residual, int count) {
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    if (tile_index<THREADS, VEC>(j) >= count) continue;
    float r[VEC];
    load_floats<R, VEC>(residual + tile_index<THREADS, VEC>(j), r);
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[j][e] += r[e];
  }
}

// The epilogue of a tile held in registers as acc[j][e] (element tile_index(j) + e of the `count`
// elements from `base`): activation, + residual, one rounding to T, vector stores. The uniform
// branches sit outside the unrolled loops, so each loop body is compiled once per case rather than
// once per element.
template <typename T, int THREADS, int NV, int VEC>
__device__ __forceinline__ void finish_tile(float (&acc)[NV][VEC], int activation, const void* residual,
                                            lmt_dtype residual_dtype, void* y, int64_t base, int count) {
  if (activation != LMT_ACTIVATION_NONE) {
#pragma unroll
    for (int j = 0; j < NV; ++j)
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[j][e] = activate(acc[j][e], activation);
  }
  if (residual != nullptr) {
    switch (residual_dtype) {
      case LMT_DTYPE_F16:
        add_residual<__half, THREADS>(acc, static_cast<const __half*>(residual) + base, count);
        break;
      case LMT_DTYPE_BF16:
        add_residual<__nv_bfloat16, THREADS>(acc, static_cast<const __nv_bfloat16*>(residual) + base, count);
        break;
      default:
        add_residual<float, THREADS>(acc, static_cast<const float*>(residual) + base, count);
        break;
    }
  }
  T* out = static_cast<T*>(y) + base;
#pragma unroll
  for (int j = 0; j < NV; ++j)
    if (tile_index<THREADS, VEC>(j) < count) store_floats<T, VEC>(out + tile_index<THREADS, VEC>(j), acc[j]);
}

// ---- a tile held in registers ------------------------------------------------------------------------
// v[j][e] is element tile_index(j) + e of a tile of `count` elements; a thread's share of a tile's sums
// is computed from its own registers, then summed over the block by the caller.

// Loads the tile from `base`; elements past `count` read as 0 (they add nothing to plain sums).
template <typename T, int THREADS, int NV, int VEC>
__device__ __forceinline__ void load_tile(const T* base, int count, float (&v)[NV][VEC]) {
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    if (tile_index<THREADS, VEC>(j) < count) {
      load_floats<T, VEC>(base + tile_index<THREADS, VEC>(j), v[j]);
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) v[j][e] = 0.f;
    }
  }
}

// The weights of vector j: the mask's values when MASKED, else 1 (plain statistics; the multiplies by 1
// fold away).
template <bool MASKED, int THREADS, int VEC>
__device__ __forceinline__ void tile_weights(const float* m, int j, float (&mv)[VEC]) {
  if constexpr (MASKED) {
    load_floats<float, VEC>(m + tile_index<THREADS, VEC>(j), mv);
  } else {
#pragma unroll
    for (int e = 0; e < VEC; ++e) mv[e] = 1.f;
  }
}

// Calls add(weight, x) for every element of the tile this thread holds, weights as tile_weights gives them.
template <bool MASKED, int THREADS, int NV, int VEC, typename Add>
__device__ __forceinline__ void for_each_weighted_as(const float (&v)[NV][VEC], const float* m, int count, Add&& add) {
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    if (tile_index<THREADS, VEC>(j) >= count) continue;
    float mv[VEC];
    tile_weights<MASKED, THREADS>(m, j, mv);
#pragma unroll
    for (int e = 0; e < VEC; ++e) add(mv[e], v[j][e]);
  }
}

// The same with masks or without (m == null: weights 1); the branch on m sits outside the unrolled loops,
// so each case compiles to its own loop body.
template <int THREADS, int NV, int VEC, typename Add>
__device__ __forceinline__ void for_each_weighted(const float (&v)[NV][VEC], const float* m, int count, Add&& add) {
  if (m == nullptr) {
    for_each_weighted_as<false, THREADS>(v, m, count, add);
  } else {
    for_each_weighted_as<true, THREADS>(v, m, count, add);
  }
}

// This thread's element count w and sum s, or with masks (m != null) sum m and sum m x, m read at the
// tile's indices.
template <int THREADS, int NV, int VEC>
__device__ __forceinline__ void tile_sums(const float (&v)[NV][VEC], const float* m, int count, float& w,
                                          float& s) {
  w = 0.f;
  s = 0.f;
  for_each_weighted<THREADS>(v, m, count, [&](float weight, float x) {
    w += weight;
    s += weight * x;
  });
}

// This thread's sum of (x - centre)^2, weighted by m where m != null.
template <int THREADS, int NV, int VEC>
__device__ __forceinline__ float tile_squares(const float (&v)[NV][VEC], const float* m, int count,
                                              float centre) {
  float q = 0.f;
  for_each_weighted<THREADS>(v, m, count, [&](float weight, float x) {
    const float d = x - centre;
    q += weight * d * d;
  });
  return q;
}

// One region's share of region_adain's output: acc += m ((x - mean) scale + shift).
template <int THREADS, int NV, int VEC>
__device__ __forceinline__ void add_region(float (&acc)[NV][VEC], const float (&v)[NV][VEC], const float* m,
                                           int count, float mean, float scale, float shift) {
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    if (tile_index<THREADS, VEC>(j) >= count) continue;
    float mv[VEC];
    load_floats<float, VEC>(m + tile_index<THREADS, VEC>(j), mv);
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[j][e] += mv[e] * ((v[j][e] - mean) * scale + shift);
  }
}

// ---- reductions --------------------------------------------------------------------------------

// Butterfly sum: every lane ends with the same, bitwise identical total.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// Sums over the block of two values at once; every thread gets both totals. `scratch` holds
// 2 * 32 floats. Deterministic: a fixed reduction tree, and every warp reduces the per-warp partials
// itself (identically), which saves the broadcast barrier.
template <int THREADS>
__device__ __forceinline__ void block_sum2(float& a, float& b, float* scratch) {
  static_assert(THREADS % kWarpSize == 0 && THREADS <= 1024, "whole warps, at most 32");
  constexpr int kWarps = THREADS / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  a = warp_sum(a);
  b = warp_sum(b);
  __syncthreads();  // the previous call's readers are done with scratch
  if (lane == 0) {
    scratch[warp] = a;
    scratch[kWarpSize + warp] = b;
  }
  __syncthreads();
  a = warp_sum(lane < kWarps ? scratch[lane] : 0.f);
  b = warp_sum(lane < kWarps ? scratch[kWarpSize + lane] : 0.f);
}

template <int THREADS>
__device__ __forceinline__ float block_sum(float a, float* scratch) {
  float unused = 0.f;
  block_sum2<THREADS>(a, unused, scratch);
  return a;
}

// ---- weighted moments of a set of pixels --------------------------------------------------------
//
// A set is summarised by (w, s, c, q): w = sum m, s = sum m x, a centre c (s / w when w != 0, else 0)
// and q = sum m (x - c)^2. Keeping q about the set's own centre avoids the cancellation of
// E[x^2] - E[x]^2; sets combine exactly (in real arithmetic, for any weights) by moving each q to the
// common centre. Stored as float4 {w, s, c, q} in the split path's workspace.

struct Moments {
  float w, s, c, q;
};

__device__ __forceinline__ Moments make_moments(float w, float s) {
  return Moments{w, s, w != 0.f ? s / w : 0.f, 0.f};
}

// sum m (x - centre)^2 of the set, from its moments about its own centre.
__device__ __forceinline__ float q_about(const Moments& m, float centre) {
  const float d = m.c - centre;
  return m.q + d * (2.f * (m.s - m.c * m.w) + d * m.w);
}

// The union of two disjoint sets. Symmetric (combine(a, b) == combine(b, a) bitwise), so butterfly
// shuffles leave every lane with the same result.
__device__ __forceinline__ Moments combine(const Moments& a, const Moments& b) {
  Moments r = make_moments(a.w + b.w, a.s + b.s);
  r.q = q_about(a, r.c) + q_about(b, r.c);
  return r;
}

__device__ __forceinline__ Moments shfl_xor(const Moments& m, int offset) {
  return Moments{__shfl_xor_sync(kFullMask, m.w, offset), __shfl_xor_sync(kFullMask, m.s, offset),
                 __shfl_xor_sync(kFullMask, m.c, offset), __shfl_xor_sync(kFullMask, m.q, offset)};
}

__device__ __forceinline__ float4 to_float4(const Moments& m) { return make_float4(m.w, m.s, m.c, m.q); }
__device__ __forceinline__ Moments from_float4(const float4& v) { return Moments{v.x, v.y, v.z, v.w}; }

// Final (mean, var) in the spec's form. Masked (region) statistics have eps in both denominators:
// mean = s / (w + eps), var = sum m (x - mean)^2 / (w + eps), so an empty region gives exactly 0, 0.
// Plain statistics are the mean and biased variance over the count w.
__device__ __forceinline__ void finalize(const Moments& m, bool masked, float eps, float& mean, float& var) {
  if (masked) {
    mean = m.s / (m.w + eps);
    var = q_about(m, mean) / (m.w + eps);
  } else {
    mean = m.c;
    var = m.q / m.w;
  }
}

}  // namespace gpu
}  // namespace lmt
