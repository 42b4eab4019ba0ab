// The C API of lmt/cuda_kernels.h: argument checks, the choice of pipeline and access width, and the
// workspace layout of the split path.
//
// Launch heuristic (LMT_PATH_AUTO):
//   * NCHW instance-type rows (masked_moments, region_adain, instance_norm) with H*W <= 16384 run the
//     one-pass kernel (x read once) ...
//   * ... unless there are fewer than 2 rows per SM and a row spans at least two split tiles
//     (H*W >= 8192): one CTA per row would leave SMs idle, while the split path puts
//     ceil(H*W / 4096) CTAs on each row (e.g. a 128x128 stem with N*C = 64 gets 256 CTAs) at the
//     cost of a second read of x, which mostly hits L2.
//   * Longer rows, layer norm (one row per sample) and NHWC inputs always take the split path.
// Access width: 16-byte vectors when the row length (NCHW: H*W, layer-norm rows: C*H*W, NHWC: C) is a
// multiple of the vector and every tensor base is 16-byte aligned; scalar accesses otherwise.
#include <atomic>
#include <climits>
#include <cstdint>

#include "kernels.cuh"

namespace lmt {
namespace gpu {
namespace {

constexpr size_t kWorkspaceAlign = 256;
constexpr int kMaxDevices = 64;

size_t align_up(size_t bytes) { return (bytes + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign; }

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

int wide_vector(lmt_dtype dtype) { return dtype == LMT_DTYPE_F32 ? 4 : 8; }

// Multiprocessor count of the current device, cached (the attribute query is cheap but not free).
int sm_count() {
  static std::atomic<int> cache[kMaxDevices];
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 1;
  if (device >= 0 && device < kMaxDevices) {
    const int known = cache[device].load(std::memory_order_relaxed);
    if (known > 0) return known;
  }
  int sms = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms < 1)
    sms = 1;
  if (device >= 0 && device < kMaxDevices) cache[device].store(sms, std::memory_order_relaxed);
  return sms;
}

// Widest access all tensors of a row-major pass allow, given the row length it walks in units of
// elements. Masks are read with the same width (they share x's H*W indexing).
int row_vector(const OpArgs& a, lmt_dtype dtype, int64_t row_length, bool uses_masks) {
  const int wide = wide_vector(dtype);
  const bool ok = row_length % wide == 0 && aligned16(a.x) && (a.y == nullptr || aligned16(a.y)) &&
                  (a.residual == nullptr || aligned16(a.residual)) &&
                  (!uses_masks || a.masks == nullptr || aligned16(a.masks));
  return ok ? wide : 1;
}

// NHWC passes vectorise along C; masks are read one pixel at a time.
int nhwc_vector(const OpArgs& a, lmt_dtype dtype) {
  const int wide = wide_vector(dtype);
  const bool ok = a.c % wide == 0 && aligned16(a.x) && (a.y == nullptr || aligned16(a.y)) &&
                  (a.residual == nullptr || aligned16(a.residual));
  return ok ? wide : 1;
}

bool nhwc_statistics(const OpArgs& a, lmt_layout layout) { return layout == LMT_LAYOUT_NHWC && !a.per_sample; }

struct SplitLayout {
  NhwcGeometry geometry;  // NHWC statistics only
  int64_t tiles;          // tiles per statistics row
  size_t partial_bytes;   // float4 partials
  size_t plane_bytes;     // one of the three parameter planes (0 for masked_moments)
  size_t total;
};

// `vec` only matters for NHWC statistics (it sets the tile); vec = 1 gives the most tiles, so the
// workspace query uses it as the upper bound.
SplitLayout split_layout(const OpArgs& a, lmt_layout layout, int vec, bool moments_only) {
  SplitLayout s{};
  if (nhwc_statistics(a, layout)) {
    s.geometry = nhwc_geometry(a.c, a.hw, vec);
    s.tiles = s.geometry.tiles;
  } else {
    s.tiles = ceil_div(a.stat_row_length(), kRowTile);
  }
  s.partial_bytes = align_up(sizeof(float4) * size_t(a.stat_rows()) * size_t(a.stat_sets()) * size_t(s.tiles));
  s.plane_bytes = moments_only ? 0 : align_up(sizeof(float) * size_t(a.n) * size_t(a.mix_sets()) * size_t(a.c));
  s.total = s.partial_bytes + 3 * s.plane_bytes;
  return s;
}

bool use_onepass(const OpArgs& a, lmt_layout layout, lmt_path path) {
  if (layout != LMT_LAYOUT_NCHW || a.per_sample || a.hw > kOnePassMaxRow) return false;
  if (path == LMT_PATH_ONEPASS) return true;
  if (path == LMT_PATH_SPLIT) return false;
  const bool few_rows = a.n * a.c < 2 * int64_t(sm_count());
  const bool splits = a.hw >= 2 * int64_t(kRowTile);
  return !(few_rows && splits);
}

// Grid sizes are unsigned 32-bit; a launch must fit.
bool fits_grid(int64_t blocks) { return blocks >= 0 && blocks <= INT_MAX; }

cudaError_t run(const OpArgs& a, lmt_dtype dtype, lmt_layout layout, void* workspace,
                size_t workspace_bytes, lmt_path path, cudaStream_t stream) {
  const bool moments_only = a.mean_out != nullptr;
  if (use_onepass(a, layout, path)) {
    if (!fits_grid(a.n * a.c)) return cudaErrorInvalidValue;
    return launch_onepass(a, dtype, row_vector(a, dtype, a.hw, true), stream);
  }

  const bool nhwc = nhwc_statistics(a, layout);
  const int stats_vec = nhwc ? nhwc_vector(a, dtype) : row_vector(a, dtype, a.stat_row_length(), a.masked_stats);
  const SplitLayout s = split_layout(a, layout, stats_vec, moments_only);
  if (workspace == nullptr || workspace_bytes < s.total || !aligned16(workspace)) return cudaErrorInvalidValue;
  const int64_t stat_blocks = nhwc ? a.n * s.geometry.tiles * s.geometry.chunks : a.stat_rows() * s.tiles;
  if (!fits_grid(stat_blocks) || !fits_grid(a.n * a.c * ceil_div(a.hw, kRowTile))) return cudaErrorInvalidValue;

  char* base = static_cast<char*>(workspace);
  float4* partials = reinterpret_cast<float4*>(base);
  Params params{};
  if (!moments_only) {
    params.mean = reinterpret_cast<float*>(base + s.partial_bytes);
    params.scale = reinterpret_cast<float*>(base + s.partial_bytes + s.plane_bytes);
    params.shift = reinterpret_cast<float*>(base + s.partial_bytes + 2 * s.plane_bytes);
  }

  cudaError_t err = nhwc ? launch_partial_nhwc(a, dtype, s.geometry, partials, stream)
                         : launch_partial_rows(a, dtype, stats_vec, partials, s.tiles, stream);
  if (err != cudaSuccess) return err;
  err = launch_combine(a, partials, s.tiles, params, stream);
  if (err != cudaSuccess || moments_only) return err;
  if (layout == LMT_LAYOUT_NHWC) {
    const NhwcGeometry g = nhwc_geometry(a.c, a.hw, nhwc_vector(a, dtype));
    if (!fits_grid(a.n * g.tiles * g.chunks)) return cudaErrorInvalidValue;
    return launch_apply_nhwc(a, dtype, g, params, stream);
  }
  return launch_apply_nchw(a, dtype, row_vector(a, dtype, a.hw, a.mix), params, stream);
}

// ---- argument checks -----------------------------------------------------------------------------

bool valid_dtype(lmt_dtype d) { return d == LMT_DTYPE_F32 || d == LMT_DTYPE_F16 || d == LMT_DTYPE_BF16; }
bool valid_layout(lmt_layout l) { return l == LMT_LAYOUT_NCHW || l == LMT_LAYOUT_NHWC; }
bool valid_path(lmt_path p) { return p == LMT_PATH_AUTO || p == LMT_PATH_ONEPASS || p == LMT_PATH_SPLIT; }
bool valid_activation(lmt_activation act) {
  return act == LMT_ACTIVATION_NONE || act == LMT_ACTIVATION_RELU || act == LMT_ACTIVATION_LEAKY_RELU;
}
bool valid_regions(int64_t k) { return k >= 1 && k <= LMT_CUDA_MAX_REGIONS; }

// Shape, dtype, layout and path; H*W is bounded so that in-tile indices fit in int.
bool valid_common(lmt_dtype dtype, lmt_layout layout, int64_t n, int64_t c, int64_t h, int64_t w,
                  lmt_path path) {
  return valid_dtype(dtype) && valid_layout(layout) && valid_path(path) && n >= 0 && c >= 1 && h >= 1 &&
         w >= 1 && h <= INT_MAX / w && c <= INT64_MAX / (h * w);
}

bool valid_epilogue(lmt_activation activation, const void* residual, lmt_dtype residual_dtype) {
  return valid_activation(activation) && (residual == nullptr || valid_dtype(residual_dtype));
}

OpArgs base_args(const void* x, void* y, int64_t n, int64_t c, int64_t h, int64_t w, float eps) {
  OpArgs a{};
  a.x = x;
  a.y = y;
  a.n = n;
  a.c = c;
  a.hw = h * w;
  a.k = 1;
  a.eps = eps;
  a.activation = LMT_ACTIVATION_NONE;
  a.residual_dtype = LMT_DTYPE_F32;
  return a;
}

void set_epilogue(OpArgs& a, lmt_activation activation, const void* residual, lmt_dtype residual_dtype) {
  a.activation = static_cast<int>(activation);
  a.residual = residual;
  a.residual_dtype = residual_dtype;
}

// OpArgs of each op with only the flags that size the workspace set.
OpArgs shape_args(lmt_op op, int64_t n, int64_t c, int64_t h, int64_t w, int64_t k) {
  OpArgs a = base_args(nullptr, nullptr, n, c, h, w, 1e-5f);
  const bool has_masks = op == LMT_OP_MASKED_MOMENTS || op == LMT_OP_REGION_ADAIN;
  a.k = has_masks ? static_cast<int>(k) : 1;
  a.masked_stats = has_masks;  // region_adain: the larger of its two modes
  a.mix = op == LMT_OP_REGION_ADAIN;
  a.per_sample = op == LMT_OP_LAYER_NORM;
  return a;
}

// instance_norm (per_sample = false) and layer_norm (per_sample = true) differ only in their statistics rows.
cudaError_t norm(bool per_sample, const void* x, void* y, lmt_dtype dtype, lmt_layout layout, int64_t n, int64_t c,
                 int64_t h, int64_t w, const float* weight, const float* bias, float eps, lmt_activation activation,
                 const void* residual, lmt_dtype residual_dtype, void* workspace, size_t workspace_bytes,
                 lmt_path path, cudaStream_t stream) {
  if (!valid_common(dtype, layout, n, c, h, w, path) || !valid_epilogue(activation, residual, residual_dtype))
    return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (x == nullptr || y == nullptr) return cudaErrorInvalidValue;
  OpArgs a = base_args(x, y, n, c, h, w, eps);
  a.per_sample = per_sample;
  a.weight = weight;
  a.bias = bias;
  set_epilogue(a, activation, residual, residual_dtype);
  return run(a, dtype, layout, workspace, workspace_bytes, path, stream);
}

}  // namespace
}  // namespace gpu
}  // namespace lmt

using lmt::gpu::OpArgs;

extern "C" {

size_t lmt_cuda_workspace_size(lmt_op op, lmt_dtype dtype, lmt_layout layout, int64_t n, int64_t c,
                               int64_t h, int64_t w, int64_t k) {
  using namespace lmt::gpu;
  const bool has_masks = op == LMT_OP_MASKED_MOMENTS || op == LMT_OP_REGION_ADAIN;
  if (!valid_common(dtype, layout, n, c, h, w, LMT_PATH_AUTO) || (has_masks && !valid_regions(k)) ||
      op < LMT_OP_MASKED_MOMENTS || op > LMT_OP_LAYER_NORM)
    return 0;
  if (n == 0) return 0;
  const OpArgs a = shape_args(op, n, c, h, w, k);
  return split_layout(a, layout, 1, op == LMT_OP_MASKED_MOMENTS).total;
}

size_t lmt_cuda_launch_workspace_size(lmt_op op, lmt_dtype dtype, lmt_layout layout, int64_t n, int64_t c,
                                      int64_t h, int64_t w, int64_t k, lmt_path path) {
  using namespace lmt::gpu;
  const size_t bytes = lmt_cuda_workspace_size(op, dtype, layout, n, c, h, w, k);
  if (bytes == 0 || !valid_path(path)) return bytes;
  return use_onepass(shape_args(op, n, c, h, w, k), layout, path) ? 0 : bytes;
}

cudaError_t lmt_cuda_masked_moments(const void* x, lmt_dtype dtype, lmt_layout layout, int64_t n,
                                    int64_t c, int64_t h, int64_t w, const float* masks, int64_t k,
                                    float eps, float* mean, float* var, void* workspace,
                                    size_t workspace_bytes, lmt_path path, cudaStream_t stream) {
  using namespace lmt::gpu;
  if (!valid_common(dtype, layout, n, c, h, w, path) || !valid_regions(k)) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (x == nullptr || masks == nullptr || mean == nullptr || var == nullptr) return cudaErrorInvalidValue;
  OpArgs a = base_args(x, nullptr, n, c, h, w, eps);
  a.masks = masks;
  a.k = static_cast<int>(k);
  a.masked_stats = true;
  a.mean_out = mean;
  a.var_out = var;
  return run(a, dtype, layout, workspace, workspace_bytes, path, stream);
}

cudaError_t lmt_cuda_region_adain(const void* x, void* y, lmt_dtype dtype, lmt_layout layout, int64_t n,
                                  int64_t c, int64_t h, int64_t w, const float* masks, int64_t k,
                                  const float* gamma, const float* beta, int region_stats, float eps,
                                  lmt_activation activation, const void* residual,
                                  lmt_dtype residual_dtype, void* workspace, size_t workspace_bytes,
                                  lmt_path path, cudaStream_t stream) {
  using namespace lmt::gpu;
  if (!valid_common(dtype, layout, n, c, h, w, path) || !valid_regions(k) ||
      !valid_epilogue(activation, residual, residual_dtype))
    return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (x == nullptr || y == nullptr || masks == nullptr || gamma == nullptr || beta == nullptr)
    return cudaErrorInvalidValue;
  OpArgs a = base_args(x, y, n, c, h, w, eps);
  a.masks = masks;
  a.k = static_cast<int>(k);
  a.masked_stats = region_stats != 0;
  a.mix = true;
  a.gamma = gamma;
  a.beta = beta;
  set_epilogue(a, activation, residual, residual_dtype);
  return run(a, dtype, layout, workspace, workspace_bytes, path, stream);
}

cudaError_t lmt_cuda_instance_norm(const void* x, void* y, lmt_dtype dtype, lmt_layout layout, int64_t n,
                                   int64_t c, int64_t h, int64_t w, const float* weight,
                                   const float* bias, float eps, lmt_activation activation,
                                   const void* residual, lmt_dtype residual_dtype, void* workspace,
                                   size_t workspace_bytes, lmt_path path, cudaStream_t stream) {
  return lmt::gpu::norm(false, x, y, dtype, layout, n, c, h, w, weight, bias, eps, activation, residual,
                        residual_dtype, workspace, workspace_bytes, path, stream);
}

cudaError_t lmt_cuda_layer_norm(const void* x, void* y, lmt_dtype dtype, lmt_layout layout, int64_t n,
                                int64_t c, int64_t h, int64_t w, const float* weight, const float* bias,
                                float eps, lmt_activation activation, const void* residual,
                                lmt_dtype residual_dtype, void* workspace, size_t workspace_bytes,
                                lmt_path path, cudaStream_t stream) {
  return lmt::gpu::norm(true, x, y, dtype, layout, n, c, h, w, weight, bias, eps, activation, residual,
                        residual_dtype, workspace, workspace_bytes, path, stream);
}

}  // extern "C"
