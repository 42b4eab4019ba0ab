// CPU kernels of the op family (spec: lmt_fast/ops/reference.py). Torch-free: plain pointers and sizes,
// so the torch binding (csrc/torch) and a TensorRT plugin can share them.
//
// Conventions shared by every kernel
//   x, y, residual   (N, C, H, W) in `layout`: kNCHW = contiguous NCHW, kNHWC = contiguous channels_last.
//                    y and residual use x's layout. residual (nullptr = none) is stored as T, or as the
//                    accumulation type when its dtype differs from x's (the caller widens it: exact).
//   masks            (N, K, H*W) contiguous, accumulation type, already at x's H x W.
//   gamma, beta      (N, K, C) contiguous, accumulation type.
//   weight, bias     (C,) accumulation type, or nullptr (weight 1, bias 0).
//   mean, var        (N, K, C) contiguous, accumulation type (float; double for double x).
// Statistics accumulate in acc_t<T>; the output is rounded to T once, at the end.
#pragma once

#include <cstdint>

#include "lmt/scalar_types.h"

namespace lmt {

enum class Layout : int { kNCHW = 0, kNHWC = 1 };

// The integer codes are part of the op schemas (`int activation`).
enum class Activation : int { kNone = 0, kRelu = 1, kLeakyRelu = 2 };
constexpr double kLeakyReluSlope = 0.01;

struct Dims {
  int64_t n, c, hw;  // the H x W plane is one axis: no op looks at rows of the image separately
};

namespace cpu {

template <typename T>
struct MaskedMomentsArgs {
  const T* x;
  Layout layout;
  Dims dims;
  const acc_t<T>* masks;
  int64_t k;
  double eps;
  acc_t<T>* mean;
  acc_t<T>* var;
};

// mean_k = sum m_k x / (W_k + eps), var_k = sum m_k (x - mean_k)^2 / (W_k + eps), W_k = sum m_k.
template <typename T>
void masked_moments(const MaskedMomentsArgs<T>& args);

template <typename T, typename R = T>
struct RegionAdainArgs {
  const T* x;
  Layout layout;
  Dims dims;
  const acc_t<T>* masks;
  int64_t k;
  const acc_t<T>* gamma;
  const acc_t<T>* beta;
  bool region_stats;  // false: plain per-(n, c) moments (HAdaIN); true: masked moments per region
  double eps;
  Activation activation;
  const R* residual;
  T* y;
};

// y = act(sum_k m_k * (gamma_k * (x - mu_k) / sqrt(var_k + eps) + beta_k)) + residual
template <typename T, typename R>
void region_adain(const RegionAdainArgs<T, R>& args);

template <typename T, typename R = T>
struct NormArgs {
  const T* x;
  Layout layout;
  Dims dims;
  const acc_t<T>* weight;
  const acc_t<T>* bias;
  double eps;
  Activation activation;
  const R* residual;
  T* y;
};

// Statistics per (n, c) over H x W.
template <typename T, typename R>
void instance_norm(const NormArgs<T, R>& args);

// Statistics per n over C x H x W (GroupNorm with one group), affine per channel.
template <typename T, typename R>
void layer_norm(const NormArgs<T, R>& args);

}  // namespace cpu
}  // namespace lmt
