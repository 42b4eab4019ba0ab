// One-pass kernel: one CTA per NCHW row (n, c) holds the whole row in registers.
//
// x is read from memory once and y written once. Statistics are two passes over the registers (the
// weighted mean first, then weighted squares about it): the spec's centred formula, at no extra memory
// traffic. Masks are re-read for each pass; they are shared by all C rows of a sample, so those reads
// mostly hit L2.
//
// Row capacity = THREADS * ITEMS elements; the launcher picks the smallest configuration that holds the
// row (up to kOnePassMaxRow = 16384 elements: 512 threads x 32 floats, within the 128 registers a
// thread may use at 512 threads per CTA).
#include "common.cuh"
#include "kernels.cuh"

namespace lmt {
namespace gpu {
namespace {

template <typename T, int THREADS, int ITEMS, int VEC>
__global__ void __launch_bounds__(THREADS) onepass_rows_kernel(const OpArgs a) {
  static_assert(ITEMS % VEC == 0, "whole vectors per thread");
  constexpr int kVectors = ITEMS / VEC;
  __shared__ float scratch[2 * kWarpSize];
  extern __shared__ float region[];  // [3][mix_sets]: mean, scale, shift of each region's affine

  const int64_t row = blockIdx.x;
  const int64_t n = row / a.c;
  const int64_t ch = row - n * a.c;
  const int len = static_cast<int>(a.hw);
  float v[kVectors][VEC];
  load_tile<T, THREADS>(static_cast<const T*>(a.x) + row * a.hw, len, v);

  const int sets = a.mix_sets();
  float* r_mean = region;
  float* r_scale = region + sets;
  float* r_shift = region + 2 * sets;
  float mean = 0.f, scale = 1.f, shift = 0.f;  // the single affine when the output does not mix regions

  if (!a.masked_stats) {
    float w, s;
    tile_sums<THREADS>(v, nullptr, len, w, s);
    s = block_sum<THREADS>(s, scratch);
    mean = s / static_cast<float>(len);
    const float q = block_sum<THREADS>(tile_squares<THREADS>(v, nullptr, len, mean), scratch);
    const float rstd = rsqrtf(q / static_cast<float>(len) + a.eps);
    if (a.mix) {  // region_adain, global statistics: one mean, a scale and shift per region
      for (int k = threadIdx.x; k < a.k; k += THREADS) {
        const int64_t idx = (n * a.k + k) * a.c + ch;
        r_mean[k] = mean;
        r_scale[k] = a.gamma[idx] * rstd;
        r_shift[k] = a.beta[idx];
      }
    } else {  // instance norm
      scale = (a.weight != nullptr ? a.weight[ch] : 1.f) * rstd;
      shift = a.bias != nullptr ? a.bias[ch] : 0.f;
    }
  } else {
    for (int k = 0; k < a.k; ++k) {
      const float* m = a.masks + (n * a.k + k) * a.hw;
      float w, s;
      tile_sums<THREADS>(v, m, len, w, s);
      block_sum2<THREADS>(w, s, scratch);
      const float mean_k = s / (w + a.eps);
      const float q = block_sum<THREADS>(tile_squares<THREADS>(v, m, len, mean_k), scratch);
      const float var_k = q / (w + a.eps);
      if (threadIdx.x == 0) {
        const int64_t idx = (n * a.k + k) * a.c + ch;
        if (a.mean_out != nullptr) {
          a.mean_out[idx] = mean_k;
          a.var_out[idx] = var_k;
        } else {
          r_mean[k] = mean_k;
          r_scale[k] = a.gamma[idx] * rsqrtf(var_k + a.eps);
          r_shift[k] = a.beta[idx];
        }
      }
    }
    if (a.mean_out != nullptr) return;  // masked_moments: statistics only
  }
  if (a.mix) __syncthreads();  // region parameters visible to every thread

  // Region loop outside, element loop (unrolled) inside: a run-time loop nested in an unrolled one
  // would be compiled once per element and multiplies compile time.
  float acc[kVectors][VEC];
  if (a.mix) {
#pragma unroll
    for (int j = 0; j < kVectors; ++j)
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[j][e] = 0.f;
    for (int k = 0; k < a.k; ++k) {
      const float* m = a.masks + (n * a.k + k) * a.hw;
      add_region<THREADS>(acc, v, m, len, r_mean[k], r_scale[k], r_shift[k]);
    }
  } else {
#pragma unroll
    for (int j = 0; j < kVectors; ++j)
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[j][e] = (v[j][e] - mean) * scale + shift;
  }
  finish_tile<T, THREADS>(acc, a.activation, a.residual, a.residual_dtype, a.y, row * a.hw, len);
}

template <typename T, int THREADS, int ITEMS, int VEC>
cudaError_t launch_config(const OpArgs& a, cudaStream_t stream) {
  const size_t smem = 3 * sizeof(float) * static_cast<size_t>(a.mix_sets());
  const unsigned rows = static_cast<unsigned>(a.n * a.c);
  onepass_rows_kernel<T, THREADS, ITEMS, VEC><<<rows, THREADS, smem, stream>>>(a);
  return cudaGetLastError();
}

// Smallest CTA that holds the row: fewer idle threads on short rows, more bytes in flight per
// thread on long ones. ITEMS stays a multiple of the widest vector (8).
template <typename T, int VEC>
cudaError_t launch_for_row(const OpArgs& a, cudaStream_t stream) {
  if (a.hw <= 128 * 8) return launch_config<T, 128, 8, VEC>(a, stream);
  if (a.hw <= 256 * 16) return launch_config<T, 256, 16, VEC>(a, stream);
  if (a.hw <= 512 * 16) return launch_config<T, 512, 16, VEC>(a, stream);
  static_assert(512 * 32 == kOnePassMaxRow, "the last configuration holds the longest row");
  return launch_config<T, 512, 32, VEC>(a, stream);
}

}  // namespace

cudaError_t launch_onepass(const OpArgs& a, lmt_dtype dtype, int vec, cudaStream_t stream) {
  return dispatch_access(dtype, vec, [&](auto access) {
    using A = decltype(access);
    return launch_for_row<typename A::type, A::vec>(a, stream);
  });
}

}  // namespace gpu
}  // namespace lmt
