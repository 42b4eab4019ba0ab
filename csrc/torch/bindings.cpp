// The `lmt` op library: schemas (shared by every device and by the TensorRT plugin) and the CPU kernels.
//
// Schemas take masks already resized to x's H x W (the Python wrapper resizes them as the spec does);
// `activation` is 0 none, 1 relu, 2 leaky relu (slope 0.01). The kernels live in csrc/cpu and know
// nothing of torch: this file checks arguments, picks the layout, widens small inputs to the accumulation
// dtype, allocates outputs and hands raw pointers over. No ATen CUDA headers here (DESIGN.md section 7);
// CUDA kernels register into the same library from csrc/torch_cuda with TORCH_LIBRARY_IMPL(lmt, CUDA, m).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "cpu_ops.h"
#include "lmt/cpu_winograd.h"
#include "lmt/norm_cpu.h"

namespace {

using at::Tensor;
using lmt::acc_t;
using lmt::Activation;
using lmt::Dims;
using lmt::Layout;

// ---- argument checks ---------------------------------------------------------------------------------

void check_x(const Tensor& x, const char* op) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (N, C, H, W), got shape ", x.sizes());
  TORCH_CHECK(x.size(1) >= 1 && x.size(2) >= 1 && x.size(3) >= 1, op, ": x must have C, H, W >= 1, got shape ",
              x.sizes());
  const auto t = x.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf, op,
              ": x must be float32, float64, bfloat16 or float16, got ", t);
}

void check_masks(const Tensor& masks, const Tensor& x, const char* op) {
  TORCH_CHECK(masks.dim() == 4 && masks.size(0) == x.size(0) && masks.size(1) >= 1 && masks.size(2) == x.size(2) &&
                  masks.size(3) == x.size(3),
              op, ": masks must have shape (N, K, H, W) with x's N, H, W (resize them first), got ", masks.sizes(),
              " for x of shape ", x.sizes());
  TORCH_CHECK(masks.is_floating_point() || masks.scalar_type() == at::kBool, op,
              ": masks must be floating point or bool, got ", masks.scalar_type());
}

void check_shape(const Tensor& t, at::IntArrayRef expected, const char* name, const char* op) {
  TORCH_CHECK(t.sizes() == expected, op, ": ", name, " must have shape ", expected, ", got ", t.sizes());
  TORCH_CHECK(t.is_floating_point(), op, ": ", name, " must be floating point, got ", t.scalar_type());
}

void check_common(const Tensor& x, double eps, int64_t activation, const std::optional<Tensor>& residual,
                  const char* op) {
  TORCH_CHECK(eps > 0, op, ": eps must be > 0, got ", eps);
  TORCH_CHECK(activation >= 0 && activation <= 2, op, ": activation must be 0 (none), 1 (relu) or 2 (lrelu), got ",
              activation);
  if (residual.has_value()) check_shape(*residual, x.sizes(), "residual", op);
}

// ---- layouts and dtypes ------------------------------------------------------------------------------

struct LaidOut {
  Tensor x;  // x itself, or a contiguous copy when it is neither NCHW- nor NHWC-contiguous
  Layout layout;
  at::MemoryFormat format;
};

// NCHW when x is contiguous (also when it is channels_last too, as for C == 1), NHWC when it is
// channels_last; anything else is copied to NCHW. Matches the spec's output memory format.
LaidOut lay_out(const Tensor& x) {
  if (x.is_contiguous()) return {x, Layout::kNCHW, at::MemoryFormat::Contiguous};
  if (x.is_contiguous(at::MemoryFormat::ChannelsLast)) return {x, Layout::kNHWC, at::MemoryFormat::ChannelsLast};
  return {x.contiguous(), Layout::kNCHW, at::MemoryFormat::Contiguous};
}

at::ScalarType accumulation_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

Dims dims_of(const Tensor& x) { return {x.size(0), x.size(1), x.size(2) * x.size(3)}; }

// Small inputs (masks, gamma, beta, weight, bias) go in the accumulation dtype, contiguous. Most already
// are: then no .to() (a dispatcher call, a few hundred ns each, on every op call).
Tensor widened(const Tensor& t, at::ScalarType acc) {
  if (t.scalar_type() == acc && t.is_contiguous()) return t;
  return t.to(acc).contiguous();
}

template <typename T>
const T* data_as(const Tensor& t) {
  return reinterpret_cast<const T*>(t.const_data_ptr());
}

template <typename T>
T* mutable_data_as(Tensor& t) {
  return reinterpret_cast<T*>(t.mutable_data_ptr());
}

// Calls f(T{}) with T the kernel storage type of `dtype`.
template <typename F>
void for_storage_type(at::ScalarType dtype, F&& f) {
  switch (dtype) {
    case at::kFloat:
      return f(float{});
    case at::kDouble:
      return f(double{});
    case at::kBFloat16:
      return f(lmt::bf16{});
    case at::kHalf:
      return f(lmt::fp16{});
    default:
      TORCH_CHECK(false, "lmt: unsupported dtype ", dtype);
  }
}

// Calls f(R{}, pointer) with the residual in x's layout: as T when it has x's dtype, otherwise widened
// to the accumulation dtype (exactly what the spec's residual.to(acc) does). nullptr when absent.
template <typename T, typename F>
void with_residual(const std::optional<Tensor>& residual, const Tensor& x, at::MemoryFormat format, F&& f) {
  using Acc = acc_t<T>;
  if (!residual.has_value()) return f(static_cast<const T*>(nullptr));
  if (residual->scalar_type() == x.scalar_type()) {
    const Tensor r = residual->contiguous(format);
    return f(data_as<T>(r));
  }
  const Tensor r = residual->to(accumulation_dtype(x.scalar_type())).contiguous(format);
  return f(data_as<Acc>(r));
}

Tensor empty_output(const LaidOut& in) { return at::empty(in.x.sizes(), in.x.options().memory_format(in.format)); }

// ---- ops ---------------------------------------------------------------------------------------------

std::tuple<Tensor, Tensor> masked_moments_cpu(const Tensor& x_in, const Tensor& masks_in, double eps) {
  check_x(x_in, "masked_moments");
  check_masks(masks_in, x_in, "masked_moments");
  TORCH_CHECK(eps > 0, "masked_moments: eps must be > 0, got ", eps);
  const LaidOut in = lay_out(x_in);
  const auto acc = accumulation_dtype(in.x.scalar_type());
  const Tensor masks = widened(masks_in, acc);
  const int64_t k = masks.size(1);
  Tensor mean = at::empty({in.x.size(0), k, in.x.size(1)}, in.x.options().dtype(acc));
  Tensor var = at::empty_like(mean);
  for_storage_type(in.x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    using Acc = acc_t<T>;
    lmt::cpu::masked_moments<T>({data_as<T>(in.x), in.layout, dims_of(in.x), data_as<Acc>(masks), k, eps,
                                 mutable_data_as<Acc>(mean), mutable_data_as<Acc>(var)});
  });
  return {mean, var};
}

Tensor region_adain_cpu(const Tensor& x_in, const Tensor& masks_in, const Tensor& gamma_in, const Tensor& beta_in,
                        bool region_stats, double eps, int64_t activation, const std::optional<Tensor>& residual) {
  check_x(x_in, "region_adain");
  check_masks(masks_in, x_in, "region_adain");
  const int64_t k = masks_in.size(1);
  check_shape(gamma_in, {x_in.size(0), k, x_in.size(1)}, "gamma", "region_adain");
  check_shape(beta_in, {x_in.size(0), k, x_in.size(1)}, "beta", "region_adain");
  check_common(x_in, eps, activation, residual, "region_adain");
  const LaidOut in = lay_out(x_in);
  const auto acc = accumulation_dtype(in.x.scalar_type());
  const Tensor masks = widened(masks_in, acc), gamma = widened(gamma_in, acc), beta = widened(beta_in, acc);
  Tensor y = empty_output(in);
  for_storage_type(in.x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    using Acc = acc_t<T>;
    with_residual<T>(residual, in.x, in.format, [&](auto residual_ptr) {
      using R = std::remove_const_t<std::remove_pointer_t<decltype(residual_ptr)>>;
      lmt::cpu::region_adain<T, R>({data_as<T>(in.x), in.layout, dims_of(in.x), data_as<Acc>(masks), k,
                                    data_as<Acc>(gamma), data_as<Acc>(beta), region_stats, eps,
                                    static_cast<Activation>(activation), residual_ptr, mutable_data_as<T>(y)});
    });
  });
  return y;
}

template <bool kLayerNorm>
Tensor spatial_norm_cpu(const Tensor& x_in, const std::optional<Tensor>& weight, const std::optional<Tensor>& bias,
                        double eps, int64_t activation, const std::optional<Tensor>& residual) {
  const char* op = kLayerNorm ? "layer_norm" : "instance_norm";
  check_x(x_in, op);
  check_common(x_in, eps, activation, residual, op);
  if (weight.has_value()) check_shape(*weight, {x_in.size(1)}, "weight", op);
  if (bias.has_value()) check_shape(*bias, {x_in.size(1)}, "bias", op);
  const LaidOut in = lay_out(x_in);
  const auto acc = accumulation_dtype(in.x.scalar_type());
  const Tensor w = weight.has_value() ? widened(*weight, acc) : Tensor();
  const Tensor b = bias.has_value() ? widened(*bias, acc) : Tensor();
  Tensor y = empty_output(in);
  for_storage_type(in.x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    using Acc = acc_t<T>;
    with_residual<T>(residual, in.x, in.format, [&](auto residual_ptr) {
      using R = std::remove_const_t<std::remove_pointer_t<decltype(residual_ptr)>>;
      const lmt::cpu::NormArgs<T, R> args{data_as<T>(in.x),
                                          in.layout,
                                          dims_of(in.x),
                                          w.defined() ? data_as<Acc>(w) : nullptr,
                                          b.defined() ? data_as<Acc>(b) : nullptr,
                                          eps,
                                          static_cast<Activation>(activation),
                                          residual_ptr,
                                          mutable_data_as<T>(y)};
      if constexpr (kLayerNorm) {
        lmt::cpu::layer_norm<T, R>(args);
      } else {
        lmt::cpu::instance_norm<T, R>(args);
      }
    });
  });
  return y;
}

// ---- Winograd F(4x4, 3x3) tile transforms (lmt_fast/runtime/winograd.py; inference only, no autograd) --

constexpr int64_t kWinogradPoints = 36;  // 6 x 6 transformed points per tile
constexpr int64_t kWinogradTile = 4;     // output tile side

void check_winograd_dtype(const Tensor& t, const char* name, const char* op) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
}

void check_tiles(int64_t tiles_h, int64_t tiles_w, const char* op) {
  TORCH_CHECK(tiles_h >= 1 && tiles_w >= 1, op, ": tiles_h and tiles_w must be >= 1, got ", tiles_h, " and ",
              tiles_w);
}

// Elements from one of the 36 (tiles, channels) planes of v (and m) to the next: tiles * channels rounded
// up to an odd number of cache lines. Planes a multiple of 4 KB apart (128 tiles of 256 channels, say)
// would put a tile's 36 points in the same few L1 sets and make loads falsely wait on stores to other
// planes; the transforms run ~1.6x faster without that. Must match lmt_fast.ops.library.winograd_planes.
int64_t winograd_point_stride(int64_t plane, int64_t element_size) {
  const int64_t line = 64 / element_size;
  const int64_t lines = (plane + line - 1) / line;
  return (lines + 1 - lines % 2) * line;
}

// Calls f(T{}) with T float or double (the dtype was checked).
template <typename F>
void for_winograd_type(at::ScalarType dtype, F&& f) {
  if (dtype == at::kDouble) return f(double{});
  return f(float{});
}

// v = B^T d B for every 6x6 tile of x reflect-padded by `pad`: (36, N * tiles_h * tiles_w, C), its planes
// winograd_point_stride apart.
Tensor winograd_input_transform_cpu(const Tensor& x, int64_t pad, int64_t tiles_h, int64_t tiles_w) {
  const char* op = "winograd_input_transform";
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (N, C, H, W), got shape ", x.sizes());
  TORCH_CHECK(x.size(0) >= 1 && x.size(1) >= 1 && x.size(2) >= 1 && x.size(3) >= 1, op,
              ": x must have N, C, H, W >= 1, got shape ", x.sizes());
  check_winograd_dtype(x, "x", op);
  // Read in place: any strides for N, H, W, but the channels of a pixel must be contiguous.
  TORCH_CHECK(x.stride(1) == 1 || x.size(1) == 1, op,
              ": x must be channels_last (channel stride 1; x.contiguous(memory_format=torch.channels_last)), "
              "got strides ",
              x.strides());
  TORCH_CHECK(pad >= 0 && pad < x.size(2) && pad < x.size(3), op,
              ": reflect padding needs 0 <= pad < H and pad < W, got pad ", pad, " for x of shape ", x.sizes());
  check_tiles(tiles_h, tiles_w, op);
  const int64_t n = x.size(0), c = x.size(1);
  const int64_t tiles = n * tiles_h * tiles_w;
  const int64_t point_stride = winograd_point_stride(tiles * c, x.element_size());
  Tensor v = at::empty_strided({kWinogradPoints, tiles, c}, {point_stride, c, 1}, x.options());
  for_winograd_type(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    lmt::cpu::winograd_input_transform<T>({data_as<T>(x), n, x.size(2), x.size(3), c, x.stride(0), x.stride(2),
                                           x.stride(3), pad, tiles_h, tiles_w, mutable_data_as<T>(v),
                                           point_stride});
  });
  return v;
}

// y = A^T m A + bias per tile, cropped to out_h x out_w: (N, K, out_h, out_w) in channels_last memory.
Tensor winograd_output_transform_cpu(const Tensor& m_in, const std::optional<Tensor>& bias_in, int64_t n,
                                     int64_t out_h, int64_t out_w, int64_t tiles_h, int64_t tiles_w) {
  const char* op = "winograd_output_transform";
  check_tiles(tiles_h, tiles_w, op);
  TORCH_CHECK(n >= 1 && out_h >= 1 && out_w >= 1, op, ": n, out_h and out_w must be >= 1, got ", n, ", ", out_h,
              " and ", out_w);
  TORCH_CHECK(out_h <= kWinogradTile * tiles_h && out_w <= kWinogradTile * tiles_w, op, ": ", tiles_h, " x ",
              tiles_w, " tiles of 4 x 4 cannot cover an output of ", out_h, " x ", out_w);
  TORCH_CHECK(m_in.dim() == 3 && m_in.size(0) == kWinogradPoints && m_in.size(1) == n * tiles_h * tiles_w &&
                  m_in.size(2) >= 1,
              op, ": m must have shape (36, n * tiles_h * tiles_w, K) = (36, ", n * tiles_h * tiles_w,
              ", K) with K >= 1, got ", m_in.sizes());
  check_winograd_dtype(m_in, "m", op);
  const int64_t k = m_in.size(2);
  if (bias_in.has_value()) {
    TORCH_CHECK(bias_in->dim() == 1 && bias_in->size(0) == k, op, ": bias must have shape (", k, "), got ",
                bias_in->sizes());
    TORCH_CHECK(bias_in->scalar_type() == m_in.scalar_type(), op, ": bias must have m's dtype ",
                m_in.scalar_type(), ", got ", bias_in->scalar_type());
  }
  // Each plane must be contiguous; the planes may lie any distance apart (winograd_point_stride).
  const bool planes_dense = (m_in.stride(2) == 1 || k == 1) && (m_in.stride(1) == k || m_in.size(1) == 1);
  const Tensor m = planes_dense ? m_in : m_in.contiguous();
  const Tensor bias = bias_in.has_value() ? bias_in->contiguous() : Tensor();
  Tensor y = at::empty({n, k, out_h, out_w}, m.options().memory_format(at::MemoryFormat::ChannelsLast));
  for_winograd_type(m.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    lmt::cpu::winograd_output_transform<T>({data_as<T>(m), m.stride(0), bias.defined() ? data_as<T>(bias) : nullptr,
                                            n, k, out_h, out_w, tiles_h, tiles_w, mutable_data_as<T>(y)});
  });
  return y;
}

}  // namespace

namespace lmt {
namespace torch_cpu {

std::tuple<Tensor, Tensor> masked_moments(const Tensor& x, const Tensor& masks, double eps) {
  return masked_moments_cpu(x, masks, eps);
}

Tensor region_adain(const Tensor& x, const Tensor& masks, const Tensor& gamma, const Tensor& beta, bool region_stats,
                    double eps, int64_t activation, const std::optional<Tensor>& residual) {
  return region_adain_cpu(x, masks, gamma, beta, region_stats, eps, activation, residual);
}

Tensor instance_norm(const Tensor& x, const std::optional<Tensor>& weight, const std::optional<Tensor>& bias,
                     double eps, int64_t activation, const std::optional<Tensor>& residual) {
  return spatial_norm_cpu<false>(x, weight, bias, eps, activation, residual);
}

Tensor layer_norm(const Tensor& x, const std::optional<Tensor>& weight, const std::optional<Tensor>& bias, double eps,
                  int64_t activation, const std::optional<Tensor>& residual) {
  return spatial_norm_cpu<true>(x, weight, bias, eps, activation, residual);
}

}  // namespace torch_cpu
}  // namespace lmt

TORCH_LIBRARY(lmt, m) {
  m.def("masked_moments(Tensor x, Tensor masks, float eps) -> (Tensor, Tensor)");
  m.def(
      "region_adain(Tensor x, Tensor masks, Tensor gamma, Tensor beta, bool region_stats, float eps, "
      "int activation, Tensor? residual) -> Tensor");
  m.def(
      "instance_norm(Tensor x, Tensor? weight, Tensor? bias, float eps, int activation, Tensor? residual) "
      "-> Tensor");
  m.def(
      "layer_norm(Tensor x, Tensor? weight, Tensor? bias, float eps, int activation, Tensor? residual) "
      "-> Tensor");
  m.def("winograd_input_transform(Tensor x, int pad, int tiles_h, int tiles_w) -> Tensor");
  m.def(
      "winograd_output_transform(Tensor m, Tensor? bias, int n, int out_h, int out_w, int tiles_h, int tiles_w) "
      "-> Tensor");
}

TORCH_LIBRARY_IMPL(lmt, CPU, m) {
  m.impl("masked_moments", &masked_moments_cpu);
  m.impl("region_adain", &region_adain_cpu);
  m.impl("instance_norm", &spatial_norm_cpu<false>);
  m.impl("layer_norm", &spatial_norm_cpu<true>);
  m.impl("winograd_input_transform", &winograd_input_transform_cpu);
  m.impl("winograd_output_transform", &winograd_output_transform_cpu);
}
