// Split path, stage 3: the elementwise output pass.
//   y = sum_k m_k ((x - mean_k) * scale_k + shift_k)   (region_adain: K mixed regions)
//   y = (x - mean) * scale + shift                      (instance / layer norm)
// then activation and + residual, with the per-(n, k, c) parameters the combine kernel wrote.
// The tiles are those of the statistics kernels, so a CTA's parameters are few and cache-resident.
#include "common.cuh"
#include "kernels.cuh"

namespace lmt {
namespace gpu {
namespace {

// NCHW: a CTA covers kRowTile elements of one row (n, c) and keeps the row's K parameter sets in
// shared memory.
template <typename T, int VEC>
__global__ void __launch_bounds__(kRowThreads) apply_nchw_kernel(const OpArgs a, const Params p,
                                                                 int64_t tiles) {
  constexpr int kVectors = kRowItems / VEC;
  extern __shared__ float region[];  // [3][sets]

  const int64_t row = blockIdx.x / tiles;
  const int64_t tile = blockIdx.x - row * tiles;
  const int64_t n = row / a.c, ch = row - n * a.c;
  const int sets = a.mix_sets();
  for (int k = threadIdx.x; k < sets; k += kRowThreads) {
    const int64_t idx = (n * sets + k) * a.c + ch;
    region[k] = p.mean[idx];
    region[sets + k] = p.scale[idx];
    region[2 * sets + k] = p.shift[idx];
  }
  __syncthreads();

  const int64_t start = tile * kRowTile;
  const int count = static_cast<int>(a.hw - start < kRowTile ? a.hw - start : kRowTile);
  const int64_t base = row * a.hw + start;
  float v[kVectors][VEC];  // all loads issued before the first use
  load_tile<T, kRowThreads>(static_cast<const T*>(a.x) + base, count, v);

  // Region loop outside, element loop (unrolled) inside: a run-time loop nested in an unrolled one
  // would be compiled once per element and multiplies compile time.
  float acc[kVectors][VEC];
  if (a.mix) {
#pragma unroll
    for (int j = 0; j < kVectors; ++j)
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[j][e] = 0.f;
    for (int k = 0; k < sets; ++k) {
      const float* m = a.masks + (n * a.k + k) * a.hw + start;
      add_region<kRowThreads>(acc, v, m, count, region[k], region[sets + k], region[2 * sets + k]);
    }
  } else {
    const float mu = region[0], sc = region[sets], sh = region[2 * sets];
#pragma unroll
    for (int j = 0; j < kVectors; ++j)
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[j][e] = (v[j][e] - mu) * sc + sh;
  }
  finish_tile<T, kRowThreads>(acc, a.activation, a.residual, a.residual_dtype, a.y, base, count);
}

// NHWC: the CTA grid of the NHWC statistics kernel; a thread owns VEC consecutive channels of
// kNhwcPixelsPerThread pixels and reads their parameters as vectors (L1-resident: one chunk of C).
template <typename T, int VEC>
__global__ void __launch_bounds__(kNhwcThreads) apply_nhwc_kernel(const OpArgs a, const NhwcGeometry g,
                                                                  const Params p) {
  const int lane_c = threadIdx.x % g.channel_lanes;
  const int lane_p = threadIdx.x / g.channel_lanes;
  int64_t block = blockIdx.x;
  const int64_t chunk = block % g.chunks;
  block /= g.chunks;
  const int64_t tile = block % g.tiles;
  const int64_t n = block / g.tiles;
  const int64_t c0 = chunk * g.chunk_channels + lane_c * VEC;
  if (c0 >= a.c) return;  // no barriers below
  const int sets = a.mix_sets();
  const T* x = static_cast<const T*>(a.x);

  float mu[VEC], sc[VEC], sh[VEC];  // the single affine of the norms
  if (!a.mix) {
    load_floats<float, VEC>(p.mean + n * a.c + c0, mu);
    load_floats<float, VEC>(p.scale + n * a.c + c0, sc);
    load_floats<float, VEC>(p.shift + n * a.c + c0, sh);
  }
#pragma unroll 1  // rolled: the region loop inside must not be copied per pixel
  for (int j = 0; j < kNhwcPixelsPerThread; ++j) {
    const int64_t pixel = tile * g.tile_pixels + lane_p + int64_t(j) * g.pixel_lanes;
    if (pixel >= a.hw) break;
    const int64_t offset = (n * a.hw + pixel) * a.c + c0;
    float v[VEC], acc[VEC];
    load_floats<T, VEC>(x + offset, v);
    if (a.mix) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[e] = 0.f;
      for (int k = 0; k < sets; ++k) {
        const float m = a.masks[(n * a.k + k) * a.hw + pixel];
        const int64_t idx = (n * sets + k) * a.c + c0;
        float rmu[VEC], rsc[VEC], rsh[VEC];
        load_floats<float, VEC>(p.mean + idx, rmu);
        load_floats<float, VEC>(p.scale + idx, rsc);
        load_floats<float, VEC>(p.shift + idx, rsh);
#pragma unroll
        for (int e = 0; e < VEC; ++e) acc[e] += m * ((v[e] - rmu[e]) * rsc[e] + rsh[e]);
      }
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[e] = (v[e] - mu[e]) * sc[e] + sh[e];
    }
    finish_and_store<T, VEC>(acc, a.activation, a.residual, a.residual_dtype, a.y, offset);
  }
}

}  // namespace

cudaError_t launch_apply_nchw(const OpArgs& a, lmt_dtype dtype, int vec, Params params,
                              cudaStream_t stream) {
  const int64_t tiles = ceil_div(a.hw, kRowTile);
  const unsigned blocks = static_cast<unsigned>(a.n * a.c * tiles);
  const size_t smem = 3 * sizeof(float) * static_cast<size_t>(a.mix_sets());
  return dispatch_access(dtype, vec, [&](auto access) {
    using A = decltype(access);
    apply_nchw_kernel<typename A::type, A::vec><<<blocks, kRowThreads, smem, stream>>>(a, params, tiles);
    return cudaGetLastError();
  });
}

cudaError_t launch_apply_nhwc(const OpArgs& a, lmt_dtype dtype, const NhwcGeometry& g, Params params,
                              cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(a.n * g.tiles * g.chunks);
  return dispatch_access(dtype, g.vec, [&](auto access) {
    using A = decltype(access);
    apply_nhwc_kernel<typename A::type, A::vec><<<blocks, kNhwcThreads, 0, stream>>>(a, g, params);
    return cudaGetLastError();
  });
}

}  // namespace gpu
}  // namespace lmt
