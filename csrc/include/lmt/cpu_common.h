// Building blocks shared by the CPU kernels in csrc/cpu (internal; not part of the public API).
//
// Strategy. Every kernel reads the slice of x whose statistics it needs (an NCHW row; in channels_last a
// run of whole pixels, see cpu_nhwc.h) once from memory, accumulating shifted sums, then sweeps it again
// while it is still in cache to write y with the whole epilogue fused. Loops run over short tiles held
// in L1, so:
//   * the inner loops are contiguous and branch-free, and auto-vectorise (`omp simd`);
//   * half-precision inputs are widened tile by tile into a small float buffer (float/double are read
//     in place), and outputs narrowed tile by tile;
//   * reductions keep many independent lanes per slice (NHWC: two-level tile sums), which keeps float32
//     rounding error small without a second pass.
// Shifted sums: d = x - s, with s the mean of a few samples spread over the same slice, so that sum d^2
// does not cancel against (sum d)^2 when the features have a large mean (the tests use mean -2.3,
// std 0.5, and mean 40, std 0.01).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "lmt/norm_cpu.h"
#include "lmt/scalar_types.h"

// Hot helpers are forced inline so that they are compiled for the ISA of the kernel they end up in.
#if defined(__GNUC__)
#define LMT_INLINE inline __attribute__((always_inline))
#else
#define LMT_INLINE inline
#endif

// The per-slice kernels are built three times, for baseline x86-64 (SSE2), x86-64-v3 (AVX2 + FMA) and
// x86-64-v4 (AVX-512), and the loader picks one per machine (GNU ifunc): the library still runs on any
// x86-64, and a slice that sits in cache is not stuck at 4 floats per instruction. A build may define
// LMT_VECTOR_CLONES itself, e.g. empty (baseline only) or as one target("...") to test one ISA.
#ifndef LMT_VECTOR_CLONES
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LMT_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LMT_VECTOR_CLONES
#endif
#endif

namespace lmt {
namespace cpu {
namespace detail {

constexpr int64_t kTile = 512;         // pixels per NCHW tile: a few KB, stays in L1
constexpr int64_t kPixelTile = 256;    // pixels per NHWC tile (times a block of channels)
constexpr int64_t kShiftSamples = 16;  // samples averaged into the shift of a slice
// Below this many elements the fork/join costs more than the work.
constexpr int64_t kParallelMinElements = 1 << 15;

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline bool worth_parallel(int64_t elements) { return elements >= kParallelMinElements; }

// This thread's contiguous share [begin, end) of `count` items cut into equal parts, one per thread of
// the enclosing parallel region (all of them outside one).
struct ThreadShare {
  int64_t begin, end;
};

inline ThreadShare thread_share(int64_t count) {
#ifdef _OPENMP
  const int64_t thread = omp_get_thread_num(), threads = omp_get_num_threads();
#else
  const int64_t thread = 0, threads = 1;
#endif
  return {count * thread / threads, count * (thread + 1) / threads};
}

// ---- loading and storing spans ---------------------------------------------------------------------

// Values per step of a sweep over a contiguous slice of `len` values: all of them when T is read in place
// (sums then stay in registers from one end of the slice to the other), else a tile for `buffer`.
template <typename T>
constexpr int64_t sweep_step(int64_t len) {
  return std::is_same_v<T, acc_t<T>> ? std::max<int64_t>(len, 1) : kTile;
}

// Size of a tile buffer for load_span / output_span: none when T is used in place.
template <typename T>
constexpr int64_t widening_buffer(int64_t len = kTile) {
  return std::is_same_v<T, acc_t<T>> ? 0 : len;
}

// A contiguous span of T as acc_t<T>: float/double are used in place, half types widened into `buffer`.
template <typename T>
LMT_INLINE const acc_t<T>* load_span(const T* src, int64_t len, acc_t<T>* buffer) {
  if constexpr (std::is_same_v<T, acc_t<T>>) {
    (void)len;
    (void)buffer;
    return src;
  } else {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) buffer[i] = to_acc(src[i]);
    return buffer;
  }
}

// Where to compute output values before `finish_span`: straight into y when T is the accumulation type.
template <typename T>
LMT_INLINE acc_t<T>* output_span(T* dst, acc_t<T>* buffer) {
  if constexpr (std::is_same_v<T, acc_t<T>>) {
    (void)buffer;
    return dst;
  } else {
    (void)dst;
    return buffer;
  }
}

template <Activation A, typename Acc>
LMT_INLINE Acc activate(Acc v) {
  if constexpr (A == Activation::kRelu) {
    return v < Acc(0) ? Acc(0) : v;  // comparisons with NaN are false: NaN propagates like F.relu
  } else if constexpr (A == Activation::kLeakyRelu) {
    return v < Acc(0) ? v * Acc(kLeakyReluSlope) : v;
  } else {
    return v;
  }
}

template <Activation A, typename T, typename R>
LMT_INLINE void finish_span_as(acc_t<T>* values, const R* residual, T* dst, int64_t len) {
  using Acc = acc_t<T>;
  if (residual != nullptr) {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) dst[i] = from_acc<T>(activate<A, Acc>(values[i]) + Acc(to_acc(residual[i])));
  } else if (!(std::is_same_v<T, Acc> && A == Activation::kNone)) {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) dst[i] = from_acc<T>(activate<A, Acc>(values[i]));
  }
}

// The epilogue of every normalising op: activation, then + residual, then one rounding to T.
// `values` is what output_span returned for `dst` (it may be dst itself).
template <typename T, typename R>
LMT_INLINE void finish_span(acc_t<T>* values, const R* residual, T* dst, int64_t len, Activation activation) {
  switch (activation) {
    case Activation::kRelu:
      finish_span_as<Activation::kRelu>(values, residual, dst, len);
      break;
    case Activation::kLeakyRelu:
      finish_span_as<Activation::kLeakyRelu>(values, residual, dst, len);
      break;
    default:
      finish_span_as<Activation::kNone>(values, residual, dst, len);
  }
}

// ---- shifted sums ----------------------------------------------------------------------------------

// The shift of a slice: the mean of up to kShiftSamples of its values, spread evenly over it.
template <typename T>
LMT_INLINE acc_t<T> sample_shift(const T* x, int64_t count, int64_t stride) {
  using Acc = acc_t<T>;
  const int64_t samples = std::min(count, kShiftSamples);
  const int64_t step = (count / samples) * stride;
  Acc part[4] = {0, 0, 0, 0};  // four chains of adds instead of one: this is paid once per slice
  for (int64_t i = 0; i < samples; ++i) part[i % 4] += to_acc(x[i * step]);
  return ((part[0] + part[1]) + (part[2] + part[3])) / Acc(samples);
}

template <typename Acc>
struct ShiftedSums {
  Acc s1 = 0, s2 = 0;  // sum w (x - shift), sum w (x - shift)^2
};

// Sums over a slice are kept in kLanes independent lanes (a few vector registers) for the whole slice:
// consecutive vector adds do not wait on one another, and the lanes are folded to one number (pairwise)
// only once per slice; a horizontal fold per tile would cost more than the tile. Each lane adds up only
// 1/kLanes of the slice, so float32 rounding error stays small without a second level.
template <typename Acc>
constexpr int64_t kLanes = 128 / sizeof(Acc);

// a[j] += a[j + kWidth] (and b) for j < kWidth, then the same on the first half, down to one lane: a
// pairwise fold whose every step is one vector add of a fixed width (a plain reduction loop would end in
// a chain of scalar adds, paid once per slice).
template <int64_t kWidth, typename Acc>
LMT_INLINE void fold_halves(Acc* a, Acc* b) {
#pragma omp simd
  for (int64_t j = 0; j < kWidth; ++j) a[j] += a[j + kWidth], b[j] += b[j + kWidth];
  if constexpr (kWidth > 1) fold_halves<kWidth / 2>(a, b);
}

template <typename Acc>
struct LaneSums {
  Acc s1[kLanes<Acc>] = {}, s2[kLanes<Acc>] = {};

  ShiftedSums<Acc> fold() const {
    Acc a[kLanes<Acc>], b[kLanes<Acc>];
    for (int64_t j = 0; j < kLanes<Acc>; ++j) a[j] = s1[j], b[j] = s2[j];
    fold_halves<kLanes<Acc> / 2>(a, b);
    return {a[0], b[0]};
  }
};

// total += (sum (v - shift), sum (v - shift)^2) over one tile.
template <typename Acc>
LMT_INLINE void add_shifted_sums(const Acc* v, int64_t len, Acc shift, LaneSums<Acc>& total) {
  constexpr int64_t lanes = kLanes<Acc>;
  Acc s1[lanes], s2[lanes];  // local copies: provably not aliased by v, so they live in registers
#pragma omp simd
  for (int64_t j = 0; j < lanes; ++j) s1[j] = total.s1[j], s2[j] = total.s2[j];
  int64_t i = 0;
  for (; i + lanes <= len; i += lanes) {
#pragma omp simd
    for (int64_t j = 0; j < lanes; ++j) {
      const Acc d = v[i + j] - shift;
      s1[j] += d;
      s2[j] += d * d;
    }
  }
  for (int64_t j = 0; i + j < len; ++j) {
    const Acc d = v[i + j] - shift;
    s1[j] += d;
    s2[j] += d * d;
  }
#pragma omp simd
  for (int64_t j = 0; j < lanes; ++j) total.s1[j] = s1[j], total.s2[j] = s2[j];
}

// total += (sum w (v - shift), sum w (v - shift)^2) over one tile.
template <typename Acc>
LMT_INLINE void add_masked_shifted_sums(const Acc* v, const Acc* w, int64_t len, Acc shift, LaneSums<Acc>& total) {
  constexpr int64_t lanes = kLanes<Acc>;
  Acc s1[lanes], s2[lanes];
#pragma omp simd
  for (int64_t j = 0; j < lanes; ++j) s1[j] = total.s1[j], s2[j] = total.s2[j];
  int64_t i = 0;
  for (; i + lanes <= len; i += lanes) {
#pragma omp simd
    for (int64_t j = 0; j < lanes; ++j) {
      const Acc d = v[i + j] - shift;
      const Acc wd = w[i + j] * d;
      s1[j] += wd;
      s2[j] += wd * d;
    }
  }
  for (int64_t j = 0; i + j < len; ++j) {
    const Acc d = v[i + j] - shift;
    const Acc wd = w[i + j] * d;
    s1[j] += wd;
    s2[j] += wd * d;
  }
#pragma omp simd
  for (int64_t j = 0; j < lanes; ++j) total.s1[j] = s1[j], total.s2[j] = s2[j];
}

template <typename Acc>
LMT_INLINE Acc sum_span(const Acc* v, int64_t len) {
  LaneSums<Acc> sums;  // s1 is the plain sum (shift 0); s2 is not needed
  for (int64_t start = 0; start < len; start += kTile)
    add_shifted_sums(v + start, std::min(kTile, len - start), Acc(0), sums);
  return sums.fold().s1;
}

template <typename Acc>
struct Moments {
  Acc mean, var;
};

// Plain moments over `count` values (no eps in the denominator).
template <typename Acc>
LMT_INLINE Moments<Acc> plain_moments(Acc shift, const ShiftedSums<Acc>& sums, Acc count) {
  const Acc offset = sums.s1 / count;
  return {shift + offset, std::max(sums.s2 / count - offset * offset, Acc(0))};
}

// Masked moments with total weight `weight` and denominators weight + eps (the spec's convention).
// mean is formed directly as (sum w x) / (W + eps), so an empty region gives exactly 0; the variance is
// sum w (d - delta)^2 expanded, whose error is second order in the error of delta.
template <typename Acc>
LMT_INLINE Moments<Acc> masked_moments_from_sums(Acc shift, const ShiftedSums<Acc>& sums, Acc weight, Acc eps) {
  const Acc denominator = weight + eps;
  const Acc mean = (sums.s1 + shift * weight) / denominator;
  const Acc delta = mean - shift;
  const Acc centred = sums.s2 - Acc(2) * delta * sums.s1 + delta * delta * weight;
  return {mean, std::max(centred / denominator, Acc(0))};
}

template <typename Acc>
LMT_INLINE Acc inverse_std(Acc var, Acc eps) {
  return Acc(1) / std::sqrt(var + eps);
}

}  // namespace detail
}  // namespace cpu
}  // namespace lmt
