/* CUDA kernels of the op family (spec: lmt_fast/ops/reference.py), behind a torch-free C API.
 *
 * Plain pointers, sizes and a cudaStream_t, so that the torch binding (csrc/torch_cuda) and a TensorRT
 * plugin share one implementation. Every entry point only enqueues work on `stream`; it never
 * synchronises and never allocates (scratch memory comes from the caller as `workspace`).
 *
 * Conventions shared by every entry point
 *   x, y, residual  (N, C, H, W), dense, in `layout`: LMT_LAYOUT_NCHW = contiguous NCHW,
 *                   LMT_LAYOUT_NHWC = contiguous channels_last. y and residual use x's layout and x's
 *                   sizes; y has x's dtype; residual (NULL = none) has its own dtype `residual_dtype`.
 *   masks           (N, K, H, W) contiguous float32, already resized to x's H x W.
 *   gamma, beta     (N, K, C) contiguous float32.
 *   weight, bias    (C,) float32, or NULL (weight 1, bias 0).
 *   mean, var       (N, K, C) contiguous float32 outputs of lmt_cuda_masked_moments.
 *   Statistics and arithmetic are float32 whatever the storage dtype; y is rounded once, at the end.
 *   The epilogue order is: normalise -> affine / region mix -> activation -> + residual.
 *   Pointers are device pointers; x, y and residual must not overlap.
 *
 * Workspace: pass at least lmt_cuda_workspace_size(...) bytes (256-byte aligned, contents ignored):
 * the split path's need, an upper bound that does not depend on the device (for a TensorRT plugin's
 * build time). lmt_cuda_launch_workspace_size(...) is what one call on the current device uses
 * (0 when it takes the one-pass path), for callers that allocate per call.
 *
 * Errors: cudaErrorInvalidValue for bad arguments (a NULL required pointer, a negative size, too small a
 * workspace, K above LMT_CUDA_MAX_REGIONS, an unknown enum), otherwise the launch status. N == 0 is a
 * valid no-op.
 */
#ifndef LMT_CUDA_KERNELS_H_
#define LMT_CUDA_KERNELS_H_

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Storage dtypes of x, y and residual. */
typedef enum lmt_dtype { LMT_DTYPE_F32 = 0, LMT_DTYPE_F16 = 1, LMT_DTYPE_BF16 = 2 } lmt_dtype;

/* Dense memory layouts of x (and of y and residual, which follow x). */
typedef enum lmt_layout { LMT_LAYOUT_NCHW = 0, LMT_LAYOUT_NHWC = 1 } lmt_layout;

/* Fused activation; the integer codes are those of the op schemas (`int activation`). */
typedef enum lmt_activation {
  LMT_ACTIVATION_NONE = 0,
  LMT_ACTIVATION_RELU = 1,
  LMT_ACTIVATION_LEAKY_RELU = 2 /* negative slope 0.01 */
} lmt_activation;

/* Which kernel pipeline runs.
 *   AUTO     the launch heuristic (see csrc/cuda/api.cu): one pass per NCHW row while the row fits on
 *            chip and there are enough rows to fill the GPU, the split path otherwise.
 *   ONEPASS  one CTA per (n, c) row holds the row on chip: x read once, y written once. Only NCHW
 *            instance-type rows up to LMT_CUDA_ONEPASS_MAX_ROW elements have it; other calls (NHWC,
 *            layer norm, longer rows) run the split path instead.
 *   SPLIT    partial statistics per tile -> combine -> elementwise apply (x read twice). */
typedef enum lmt_path { LMT_PATH_AUTO = 0, LMT_PATH_ONEPASS = 1, LMT_PATH_SPLIT = 2 } lmt_path;

/* The ops, for the workspace query. */
typedef enum lmt_op {
  LMT_OP_MASKED_MOMENTS = 0,
  LMT_OP_REGION_ADAIN = 1,
  LMT_OP_INSTANCE_NORM = 2,
  LMT_OP_LAYER_NORM = 3
} lmt_op;

#define LMT_CUDA_ONEPASS_MAX_ROW 16384 /* longest NCHW row (H*W) the one-pass kernel holds on chip */
#define LMT_CUDA_MAX_REGIONS 1024      /* largest K accepted */

/* Bytes of workspace any path of `op` needs for these sizes (0 when none). */
size_t lmt_cuda_workspace_size(lmt_op op, lmt_dtype dtype, lmt_layout layout, int64_t n, int64_t c,
                               int64_t h, int64_t w, int64_t k);

/* Bytes of workspace a call of `op` with these sizes and `path` uses on the current device: 0 when it
 * runs the one-pass kernel, lmt_cuda_workspace_size(...) otherwise. */
size_t lmt_cuda_launch_workspace_size(lmt_op op, lmt_dtype dtype, lmt_layout layout, int64_t n, int64_t c,
                                      int64_t h, int64_t w, int64_t k, lmt_path path);

/* mean_k = sum m_k x / (W_k + eps), var_k = sum m_k (x - mean_k)^2 / (W_k + eps), W_k = sum m_k;
 * an all-zero mask gives mean = var = 0 exactly. */
cudaError_t lmt_cuda_masked_moments(const void* x, lmt_dtype dtype, lmt_layout layout, int64_t n,
                                    int64_t c, int64_t h, int64_t w, const float* masks, int64_t k,
                                    float eps, float* mean, float* var, void* workspace,
                                    size_t workspace_bytes, lmt_path path, cudaStream_t stream);

/* y = sum_k m_k * (gamma_k * (x - mu_k) / sqrt(var_k + eps) + beta_k), then activation, + residual.
 * region_stats = 0: mu, var are the plain per-(n, c) spatial moments (HAdaIN);
 * region_stats = 1: the masked moments of lmt_cuda_masked_moments. */
cudaError_t lmt_cuda_region_adain(const void* x, void* y, lmt_dtype dtype, lmt_layout layout, int64_t n,
                                  int64_t c, int64_t h, int64_t w, const float* masks, int64_t k,
                                  const float* gamma, const float* beta, int region_stats, float eps,
                                  lmt_activation activation, const void* residual,
                                  lmt_dtype residual_dtype, void* workspace, size_t workspace_bytes,
                                  lmt_path path, cudaStream_t stream);

/* y = (x - mean_hw) / sqrt(var_hw + eps) * weight_c + bias_c per (n, c), then activation, + residual. */
cudaError_t lmt_cuda_instance_norm(const void* x, void* y, lmt_dtype dtype, lmt_layout layout, int64_t n,
                                   int64_t c, int64_t h, int64_t w, const float* weight,
                                   const float* bias, float eps, lmt_activation activation,
                                   const void* residual, lmt_dtype residual_dtype, void* workspace,
                                   size_t workspace_bytes, lmt_path path, cudaStream_t stream);

/* GroupNorm(1): statistics per sample over (C, H, W), per-channel affine; then activation, + residual.
 * Always the split path (a sample is rarely small enough, and N rarely large enough, for one pass). */
cudaError_t lmt_cuda_layer_norm(const void* x, void* y, lmt_dtype dtype, lmt_layout layout, int64_t n,
                                int64_t c, int64_t h, int64_t w, const float* weight, const float* bias,
                                float eps, lmt_activation activation, const void* residual,
                                lmt_dtype residual_dtype, void* workspace, size_t workspace_bytes,
                                lmt_path path, cudaStream_t stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* LMT_CUDA_KERNELS_H_ */
