// Split path, stage 1: partial moments of tiles of each statistics row, written to the workspace as
// float4 {w, s, c, q} (see Moments in common.cuh) at [(row * sets + set) * tiles + tile].
//
// Used when there are too few rows to fill the GPU with one CTA each, when a row is longer than the
// one-pass kernel holds, for layer norm (one row per sample), and for every NHWC input.
// Each CTA holds its tile in registers and computes the tile's moments in two passes over them (centre
// first, then squares about it), so the partials are as accurate as the one-pass statistics; the
// combine kernel merges them exactly.
#include "common.cuh"
#include "kernels.cuh"

namespace lmt {
namespace gpu {
namespace {

// Contiguous rows: NCHW rows (n, c) of H*W elements, or layer norm's rows of C*H*W elements per sample
// (contiguous in both layouts; the order inside a row does not matter to its moments).
template <typename T, int VEC>
__global__ void __launch_bounds__(kRowThreads) partial_rows_kernel(const OpArgs a, float4* partials,
                                                                   int64_t tiles) {
  constexpr int kVectors = kRowItems / VEC;
  __shared__ float scratch[2 * kWarpSize];

  const int64_t row = blockIdx.x / tiles;
  const int64_t tile = blockIdx.x - row * tiles;
  const int64_t length = a.stat_row_length();
  const int64_t start = tile * kRowTile;
  const int count = static_cast<int>(length - start < kRowTile ? length - start : kRowTile);
  float v[kVectors][VEC];
  load_tile<T, kRowThreads>(static_cast<const T*>(a.x) + row * length + start, count, v);

  const int sets = a.stat_sets();
  for (int k = 0; k < sets; ++k) {
    // Region k's weights over this tile; plain statistics weigh every element 1.
    const float* m = a.masked_stats ? a.masks + ((row / a.c) * a.k + k) * a.hw + start : nullptr;
    float w, s;
    tile_sums<kRowThreads>(v, m, count, w, s);
    block_sum2<kRowThreads>(w, s, scratch);
    Moments mo = make_moments(w, s);
    mo.q = block_sum<kRowThreads>(tile_squares<kRowThreads>(v, m, count, mo.c), scratch);
    if (threadIdx.x == 0) partials[(row * sets + k) * tiles + tile] = to_float4(mo);
  }
}

// NHWC: a CTA covers a tile of pixels x a chunk of channels. Each thread first reduces its own
// kNhwcPixelsPerThread pixels per channel (in registers), then the CTA merges its pixel lanes per
// channel through shared memory, one partial per (n, c, set, tile).
template <typename T, int VEC>
__global__ void __launch_bounds__(kNhwcThreads) partial_nhwc_kernel(const OpArgs a, const NhwcGeometry g,
                                                                    float4* partials) {
  constexpr int kPixels = kNhwcPixelsPerThread;
  __shared__ float4 lanes_moments[kNhwcThreads * VEC];  // [pixel lane][chunk channel]

  const int lane_c = threadIdx.x % g.channel_lanes;
  const int lane_p = threadIdx.x / g.channel_lanes;
  int64_t block = blockIdx.x;
  const int64_t chunk = block % g.chunks;
  block /= g.chunks;
  const int64_t tile = block % g.tiles;
  const int64_t n = block / g.tiles;
  const int64_t c0 = chunk * g.chunk_channels + lane_c * VEC;
  const bool channels_ok = c0 < a.c;  // VEC divides C on the vector path: all VEC or none
  const int64_t p0 = tile * g.tile_pixels + lane_p;
  const T* x = static_cast<const T*>(a.x) + n * a.hw * a.c;

  float v[kPixels][VEC];
  bool inside[kPixels];
#pragma unroll
  for (int j = 0; j < kPixels; ++j) {
    const int64_t p = p0 + int64_t(j) * g.pixel_lanes;
    inside[j] = channels_ok && p < a.hw;
    if (inside[j]) {
      load_floats<T, VEC>(x + p * a.c + c0, v[j]);
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) v[j][e] = 0.f;
    }
  }

  const int sets = a.stat_sets();
  for (int k = 0; k < sets; ++k) {
    const float* m = a.masked_stats ? a.masks + (n * a.k + k) * a.hw : nullptr;
    float weight[kPixels];
    float w = 0.f;
#pragma unroll
    for (int j = 0; j < kPixels; ++j) {
      weight[j] = inside[j] ? (m != nullptr ? m[p0 + int64_t(j) * g.pixel_lanes] : 1.f) : 0.f;
      w += weight[j];
    }
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      float s = 0.f;
#pragma unroll
      for (int j = 0; j < kPixels; ++j) s += weight[j] * v[j][e];
      Moments mo = make_moments(w, s);
      float q = 0.f;
#pragma unroll
      for (int j = 0; j < kPixels; ++j) {
        const float d = v[j][e] - mo.c;
        q += weight[j] * d * d;
      }
      mo.q = q;
      lanes_moments[lane_p * g.chunk_channels + lane_c * VEC + e] = to_float4(mo);
    }
    __syncthreads();
    if (static_cast<int>(threadIdx.x) < g.chunk_channels) {
      const int64_t ch = chunk * g.chunk_channels + threadIdx.x;
      if (ch < a.c) {
        Moments total{0.f, 0.f, 0.f, 0.f};
        for (int lane = 0; lane < g.pixel_lanes; ++lane)
          total = combine(total, from_float4(lanes_moments[lane * g.chunk_channels + threadIdx.x]));
        partials[((n * a.c + ch) * sets + k) * g.tiles + tile] = to_float4(total);
      }
    }
    __syncthreads();  // lanes_moments is rewritten for the next set
  }
}

}  // namespace

cudaError_t launch_partial_rows(const OpArgs& a, lmt_dtype dtype, int vec, float4* partials,
                                int64_t tiles, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(a.stat_rows() * tiles);
  return dispatch_access(dtype, vec, [&](auto access) {
    using A = decltype(access);
    partial_rows_kernel<typename A::type, A::vec><<<blocks, kRowThreads, 0, stream>>>(a, partials, tiles);
    return cudaGetLastError();
  });
}

cudaError_t launch_partial_nhwc(const OpArgs& a, lmt_dtype dtype, const NhwcGeometry& g,
                                float4* partials, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(a.n * g.tiles * g.chunks);
  return dispatch_access(dtype, g.vec, [&](auto access) {
    using A = decltype(access);
    partial_nhwc_kernel<typename A::type, A::vec><<<blocks, kNhwcThreads, 0, stream>>>(a, g, partials);
    return cudaGetLastError();
  });
}

}  // namespace gpu
}  // namespace lmt
