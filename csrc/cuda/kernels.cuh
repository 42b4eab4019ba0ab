// Internal interface between the C API (api.cu) and the kernel files: the argument block every kernel
// receives, the tile geometry of each path, and the host-side launchers.
//
// Pipelines (chosen in api.cu):
//   one pass  onepass.cu: one CTA per NCHW row (n, c) holds the row in registers; statistics, then
//             the normalised output from the same registers. x read once, y written once.
//   split     split_stats.cu: partial moments per (row, tile) into the workspace;
//             combine.cu: one warp per (row, region) combines the tiles and writes per-(n, k, c)
//             parameters (mean, scale, shift) or the masked_moments outputs;
//             apply.cu: elementwise y = sum_k m_k ((x - mean_k) scale_k + shift_k) (+ epilogue).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "lmt/cuda_kernels.h"

namespace lmt {
namespace gpu {

// What the kernels compute; one block of plain values, passed to every kernel by value.
struct OpArgs {
  const void* x;
  void* y;  // null for masked_moments
  int64_t n, c, hw;
  // Masks (N, K, HW) float32; null when the op has none (instance / layer norm).
  const float* masks;
  int k;
  bool masked_stats;  // statistics weighted by each region's mask (K sets) instead of plain (one set)
  bool per_sample;    // layer norm: one statistics row per sample over C * HW
  bool mix;           // output sum_k m_k (...) over K regions (region_adain); else one affine
  const float* gamma;  // (N, K, C) region_adain
  const float* beta;
  const float* weight;  // (C,) or null: instance / layer norm
  const float* bias;
  float eps;
  int activation;  // lmt_activation
  const void* residual;
  lmt_dtype residual_dtype;
  float* mean_out;  // (N, K, C) masked_moments; when set, no output is written
  float* var_out;

  // Number of statistics sets per row: K for masked statistics, else 1.
  __host__ __device__ int stat_sets() const { return masked_stats ? k : 1; }
  // Number of (mean, scale, shift) parameter sets per (n, c) the output mixes.
  __host__ __device__ int mix_sets() const { return mix ? k : 1; }
  __host__ __device__ int64_t stat_rows() const { return per_sample ? n : n * c; }
  __host__ __device__ int64_t stat_row_length() const { return per_sample ? c * hw : hw; }
};

// Per-(n, k, c) output parameters written by the combine kernel: y contribution of region k is
// m_k * ((x - mean) * scale + shift). Three planes of N * K_mix * C floats.
struct Params {
  float* mean;
  float* scale;
  float* shift;
};

// ---- tile geometry -------------------------------------------------------------------------------

// One-pass kernel: the largest row it holds is LMT_CUDA_ONEPASS_MAX_ROW elements.
constexpr int kOnePassMaxRow = LMT_CUDA_ONEPASS_MAX_ROW;

// Split path over contiguous rows (NCHW rows, and layer norm's per-sample rows in either layout):
// a 256-thread CTA holds one tile of 4096 elements, 16 per thread.
constexpr int kRowThreads = 256;
constexpr int kRowItems = 16;
constexpr int kRowTile = kRowThreads * kRowItems;

// Split path over NHWC: a 256-thread CTA is a (channel lanes) x (pixel lanes) grid; each thread owns
// VEC consecutive channels of kNhwcPixelsPerThread pixels. Channel lanes are adjacent threads, so a
// warp reads whole runs of channels: coalesced along C.
constexpr int kNhwcThreads = 256;
constexpr int kNhwcPixelsPerThread = 8;

struct NhwcGeometry {
  int vec;               // channels per thread access
  int channel_lanes;     // threads across channels: a power of two <= 32
  int pixel_lanes;       // kNhwcThreads / channel_lanes
  int chunk_channels;    // channel_lanes * vec channels per CTA
  int64_t chunks;        // CTAs across C
  int64_t tile_pixels;   // pixel_lanes * kNhwcPixelsPerThread pixels per CTA
  int64_t tiles;         // CTAs across H * W
};

inline NhwcGeometry nhwc_geometry(int64_t c, int64_t hw, int vec) {
  NhwcGeometry g;
  g.vec = vec;
  const int64_t vectors = (c + vec - 1) / vec;
  int lanes = 1;
  while (lanes < 32 && lanes < vectors) lanes *= 2;
  g.channel_lanes = lanes;
  g.pixel_lanes = kNhwcThreads / lanes;
  g.chunk_channels = lanes * vec;
  g.chunks = (c + g.chunk_channels - 1) / g.chunk_channels;
  g.tile_pixels = int64_t(g.pixel_lanes) * kNhwcPixelsPerThread;
  g.tiles = (hw + g.tile_pixels - 1) / g.tile_pixels;
  return g;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- storage type and access width ----------------------------------------------------------------

// A kernel instantiation's storage type T and access width VEC (elements per memory access).
template <typename T, int VEC>
struct Access {
  using type = T;
  static constexpr int vec = VEC;
};

// Calls launch(Access<T, VEC>{}) for x's storage type T, with VEC the type's 16-byte vector when `vec`
// (what the caller checked alignment for) says so, else 1: each launcher instantiates its kernel for the
// six combinations through this one switch.
template <typename Launch>
cudaError_t dispatch_access(lmt_dtype dtype, int vec, Launch&& launch) {
  switch (dtype) {
    case LMT_DTYPE_F16:
      return vec == 8 ? launch(Access<__half, 8>{}) : launch(Access<__half, 1>{});
    case LMT_DTYPE_BF16:
      return vec == 8 ? launch(Access<__nv_bfloat16, 8>{}) : launch(Access<__nv_bfloat16, 1>{});
    default:
      return vec == 4 ? launch(Access<float, 4>{}) : launch(Access<float, 1>{});
  }
}

// ---- launchers (each returns the launch status) --------------------------------------------------
// `vec` is the access width the caller checked alignment for: 1, or 4 (float) / 8 (half, bfloat16).

// onepass.cu: NCHW rows of at most kOnePassMaxRow elements; masked_moments, region_adain, instance norm.
cudaError_t launch_onepass(const OpArgs& a, lmt_dtype dtype, int vec, cudaStream_t stream);

// split_stats.cu: partial moments float4[stat_rows][stat_sets][tiles].
cudaError_t launch_partial_rows(const OpArgs& a, lmt_dtype dtype, int vec, float4* partials,
                                int64_t tiles, cudaStream_t stream);
cudaError_t launch_partial_nhwc(const OpArgs& a, lmt_dtype dtype, const NhwcGeometry& g,
                                float4* partials, cudaStream_t stream);

// combine.cu: partials -> masked_moments outputs (a.mean_out) or output parameters.
cudaError_t launch_combine(const OpArgs& a, const float4* partials, int64_t tiles, Params params,
                           cudaStream_t stream);

// apply.cu: the elementwise output pass of the split path.
cudaError_t launch_apply_nchw(const OpArgs& a, lmt_dtype dtype, int vec, Params params,
                              cudaStream_t stream);
cudaError_t launch_apply_nhwc(const OpArgs& a, lmt_dtype dtype, const NhwcGeometry& g, Params params,
                              cudaStream_t stream);

}  // namespace gpu
}  // namespace lmt
