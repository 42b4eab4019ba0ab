// CUDA kernels for the `lmt` op library (schemas: csrc/torch/bindings.cpp), over the torch-free C API of
// lmt/cuda_kernels.h (csrc/cuda).
//
// This file checks arguments, picks the layout (x is read in place when it is NCHW- or channels_last-
// contiguous), widens the small inputs (masks, gamma, beta, weight, bias) to float32, allocates the
// output and the kernels' workspace through the caching allocator, and launches on the current stream.
// Only c10's CUDA headers are used (stream, device guard): c10::cuda::getCurrentCUDAStream is the
// function at::cuda::getCurrentCUDAStream re-exports, without ATen/cuda's cuBLAS/cuSPARSE includes.
//
// Environment: LMT_FAST_CUDA_FORCE_PATH=auto|onepass|split overrides the launch heuristic (read on every
// call; for tests and benchmarks). "onepass" applies where a one-pass kernel exists (NCHW rows of at most
// LMT_CUDA_ONEPASS_MAX_ROW elements, not layer norm); other calls run the split path.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <tuple>

#include "lmt/cuda_kernels.h"

namespace {

using at::Tensor;

constexpr const char* kForcePathEnv = "LMT_FAST_CUDA_FORCE_PATH";

lmt_path requested_path() {
  const char* value = std::getenv(kForcePathEnv);
  if (value == nullptr || *value == '\0' || std::strcmp(value, "auto") == 0) return LMT_PATH_AUTO;
  if (std::strcmp(value, "onepass") == 0) return LMT_PATH_ONEPASS;
  if (std::strcmp(value, "split") == 0) return LMT_PATH_SPLIT;
  TORCH_CHECK(false, kForcePathEnv, " must be 'auto', 'onepass' or 'split', got '", value, "'");
  return LMT_PATH_AUTO;  // not reached
}

// ---- argument checks ---------------------------------------------------------------------------------

lmt_dtype storage_dtype(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return LMT_DTYPE_F16;
    case at::kBFloat16:
      return LMT_DTYPE_BF16;
    default:
      return LMT_DTYPE_F32;
  }
}

bool is_storage_dtype(at::ScalarType t) { return t == at::kFloat || t == at::kHalf || t == at::kBFloat16; }

void check_x(const Tensor& x, const char* op) {
  TORCH_CHECK(x.is_cuda(), op, ": x must be a CUDA tensor for the CUDA kernels, got device ", x.device());
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (N, C, H, W), got shape ", x.sizes());
  TORCH_CHECK(x.size(1) >= 1 && x.size(2) >= 1 && x.size(3) >= 1, op, ": x must have C, H, W >= 1, got shape ",
              x.sizes());
  TORCH_CHECK(is_storage_dtype(x.scalar_type()), op,
              ": the CUDA kernels take x in float32, float16 or bfloat16, got ", x.scalar_type(),
              " (float64 runs on the reference backend)");
}

void check_device(const Tensor& t, const Tensor& x, const char* name, const char* op) {
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, " is on ", t.device(), " but x is on ", x.device(),
              "; move both to one device");
}

void check_masks(const Tensor& masks, const Tensor& x, const char* op) {
  check_device(masks, x, "masks", op);
  TORCH_CHECK(masks.dim() == 4 && masks.size(0) == x.size(0) && masks.size(1) >= 1 && masks.size(2) == x.size(2) &&
                  masks.size(3) == x.size(3),
              op, ": masks must have shape (N, K, H, W) with x's N, H, W (resize them first), got ", masks.sizes(),
              " for x of shape ", x.sizes());
  TORCH_CHECK(masks.size(1) <= LMT_CUDA_MAX_REGIONS, op, ": the CUDA kernels take at most ", LMT_CUDA_MAX_REGIONS,
              " regions, got K = ", masks.size(1));
  TORCH_CHECK(masks.is_floating_point() || masks.scalar_type() == at::kBool, op,
              ": masks must be floating point or bool, got ", masks.scalar_type());
}

void check_shape(const Tensor& t, const Tensor& x, at::IntArrayRef expected, const char* name, const char* op) {
  check_device(t, x, name, op);
  TORCH_CHECK(t.sizes() == expected, op, ": ", name, " must have shape ", expected, ", got ", t.sizes());
  TORCH_CHECK(t.is_floating_point(), op, ": ", name, " must be floating point, got ", t.scalar_type());
}

void check_common(const Tensor& x, double eps, int64_t activation, const std::optional<Tensor>& residual,
                  const char* op) {
  TORCH_CHECK(eps > 0, op, ": eps must be > 0, got ", eps);
  TORCH_CHECK(activation >= 0 && activation <= 2, op, ": activation must be 0 (none), 1 (relu) or 2 (lrelu), got ",
              activation);
  if (residual.has_value()) check_shape(*residual, x, x.sizes(), "residual", op);
}

void check_launch(cudaError_t status, const char* op) {
  TORCH_CHECK(status == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(status));
}

// ---- layouts and dtypes ------------------------------------------------------------------------------

struct LaidOut {
  Tensor x;  // x itself, or a contiguous copy when it is neither NCHW- nor NHWC-contiguous
  lmt_layout layout;
  at::MemoryFormat format;
};

// NCHW when x is contiguous (also when it is channels_last too, as for C == 1), NHWC when it is
// channels_last; anything else is copied to NCHW. Matches the spec's output memory format.
LaidOut lay_out(const Tensor& x) {
  if (x.is_contiguous()) return {x, LMT_LAYOUT_NCHW, at::MemoryFormat::Contiguous};
  if (x.is_contiguous(at::MemoryFormat::ChannelsLast)) return {x, LMT_LAYOUT_NHWC, at::MemoryFormat::ChannelsLast};
  return {x.contiguous(), LMT_LAYOUT_NCHW, at::MemoryFormat::Contiguous};
}

// Small inputs go to the kernels as contiguous float32 (no copy when they already are).
Tensor widened(const Tensor& t) { return t.to(at::kFloat).contiguous(); }

const float* float_data(const Tensor& t) { return t.defined() ? t.const_data_ptr<float>() : nullptr; }

// The residual in x's layout, in its own dtype when the kernels read it (float32 / float16 / bfloat16),
// else widened to float32 as the spec's residual.to(float32) does.
Tensor laid_out_residual(const std::optional<Tensor>& residual, at::MemoryFormat format) {
  if (!residual.has_value()) return Tensor();
  const Tensor r = is_storage_dtype(residual->scalar_type()) ? *residual : residual->to(at::kFloat);
  return r.contiguous(format);
}

Tensor empty_output(const LaidOut& in) { return at::empty(in.x.sizes(), in.x.options().memory_format(in.format)); }

// Scratch for the split path, from the caching allocator; empty (no allocation) for the one-pass path.
Tensor workspace(lmt_op op, const LaidOut& in, int64_t k, lmt_path path) {
  const size_t bytes = lmt_cuda_launch_workspace_size(op, storage_dtype(in.x.scalar_type()), in.layout, in.x.size(0),
                                                      in.x.size(1), in.x.size(2), in.x.size(3), k, path);
  return at::empty({static_cast<int64_t>(bytes)}, in.x.options().dtype(at::kByte));
}

lmt_activation activation_of(int64_t code) { return static_cast<lmt_activation>(code); }

// ---- ops ---------------------------------------------------------------------------------------------

std::tuple<Tensor, Tensor> masked_moments_cuda(const Tensor& x_in, const Tensor& masks_in, double eps) {
  const char* op = "masked_moments";
  check_x(x_in, op);
  check_masks(masks_in, x_in, op);
  TORCH_CHECK(eps > 0, op, ": eps must be > 0, got ", eps);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const LaidOut in = lay_out(x_in);
  const Tensor masks = widened(masks_in);
  const int64_t k = masks.size(1);
  Tensor mean = at::empty({in.x.size(0), k, in.x.size(1)}, in.x.options().dtype(at::kFloat));
  Tensor var = at::empty_like(mean);
  const lmt_path path = requested_path();
  Tensor scratch = workspace(LMT_OP_MASKED_MOMENTS, in, k, path);
  check_launch(lmt_cuda_masked_moments(in.x.const_data_ptr(), storage_dtype(in.x.scalar_type()), in.layout,
                                       in.x.size(0), in.x.size(1), in.x.size(2), in.x.size(3), float_data(masks), k,
                                       static_cast<float>(eps), mean.mutable_data_ptr<float>(),
                                       var.mutable_data_ptr<float>(), scratch.mutable_data_ptr(),
                                       static_cast<size_t>(scratch.numel()), path,
                                       c10::cuda::getCurrentCUDAStream().stream()),
               op);
  return {mean, var};
}

Tensor region_adain_cuda(const Tensor& x_in, const Tensor& masks_in, const Tensor& gamma_in, const Tensor& beta_in,
                         bool region_stats, double eps, int64_t activation, const std::optional<Tensor>& residual) {
  const char* op = "region_adain";
  check_x(x_in, op);
  check_masks(masks_in, x_in, op);
  const int64_t k = masks_in.size(1);
  check_shape(gamma_in, x_in, {x_in.size(0), k, x_in.size(1)}, "gamma", op);
  check_shape(beta_in, x_in, {x_in.size(0), k, x_in.size(1)}, "beta", op);
  check_common(x_in, eps, activation, residual, op);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const LaidOut in = lay_out(x_in);
  const Tensor masks = widened(masks_in), gamma = widened(gamma_in), beta = widened(beta_in);
  const Tensor res = laid_out_residual(residual, in.format);
  Tensor y = empty_output(in);
  const lmt_path path = requested_path();
  Tensor scratch = workspace(LMT_OP_REGION_ADAIN, in, k, path);
  check_launch(lmt_cuda_region_adain(in.x.const_data_ptr(), y.mutable_data_ptr(), storage_dtype(in.x.scalar_type()),
                                     in.layout, in.x.size(0), in.x.size(1), in.x.size(2), in.x.size(3),
                                     float_data(masks), k, float_data(gamma), float_data(beta), region_stats ? 1 : 0,
                                     static_cast<float>(eps), activation_of(activation),
                                     res.defined() ? res.const_data_ptr() : nullptr,
                                     res.defined() ? storage_dtype(res.scalar_type()) : LMT_DTYPE_F32,
                                     scratch.mutable_data_ptr(), static_cast<size_t>(scratch.numel()),
                                     path, c10::cuda::getCurrentCUDAStream().stream()),
               op);
  return y;
}

template <bool kLayerNorm>
Tensor spatial_norm_cuda(const Tensor& x_in, const std::optional<Tensor>& weight, const std::optional<Tensor>& bias,
                         double eps, int64_t activation, const std::optional<Tensor>& residual) {
  const char* op = kLayerNorm ? "layer_norm" : "instance_norm";
  check_x(x_in, op);
  check_common(x_in, eps, activation, residual, op);
  if (weight.has_value()) check_shape(*weight, x_in, {x_in.size(1)}, "weight", op);
  if (bias.has_value()) check_shape(*bias, x_in, {x_in.size(1)}, "bias", op);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const LaidOut in = lay_out(x_in);
  const Tensor w = weight.has_value() ? widened(*weight) : Tensor();
  const Tensor b = bias.has_value() ? widened(*bias) : Tensor();
  const Tensor res = laid_out_residual(residual, in.format);
  Tensor y = empty_output(in);
  const lmt_path path = requested_path();
  Tensor scratch = workspace(kLayerNorm ? LMT_OP_LAYER_NORM : LMT_OP_INSTANCE_NORM, in, 1, path);
  auto* launch = kLayerNorm ? &lmt_cuda_layer_norm : &lmt_cuda_instance_norm;  // same signature
  check_launch(launch(in.x.const_data_ptr(), y.mutable_data_ptr(), storage_dtype(in.x.scalar_type()), in.layout,
                      in.x.size(0), in.x.size(1), in.x.size(2), in.x.size(3), float_data(w), float_data(b),
                      static_cast<float>(eps), activation_of(activation),
                      res.defined() ? res.const_data_ptr() : nullptr,
                      res.defined() ? storage_dtype(res.scalar_type()) : LMT_DTYPE_F32, scratch.mutable_data_ptr(),
                      static_cast<size_t>(scratch.numel()), path,
                      c10::cuda::getCurrentCUDAStream().stream()),
               op);
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(lmt, CUDA, m) {
  m.impl("masked_moments", &masked_moments_cuda);
  m.impl("region_adain", &region_adain_cuda);
  m.impl("instance_norm", &spatial_norm_cuda<false>);
  m.impl("layer_norm", &spatial_norm_cuda<true>);
}
