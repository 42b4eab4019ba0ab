// Storage types the kernels read and write, and how each converts to its accumulation type.
//
// Torch-free on purpose: the same kernels serve the torch binding and the TensorRT plugin. bf16 and fp16
// are plain 16-bit containers with the IEEE/bfloat16 bit layouts (binary-compatible with c10::BFloat16,
// c10::Half, __nv_bfloat16 and __half), converted with branch-free integer code so that the loops
// around them still auto-vectorise on baseline x86-64 (no F16C needed).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace lmt {

struct bf16 {
  uint16_t bits;
};
struct fp16 {
  uint16_t bits;
};

// Statistics and arithmetic: double for double storage, float for everything else.
template <typename T>
struct AccumulationType {
  using type = float;
};
template <>
struct AccumulationType<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccumulationType<T>::type;

inline float float_from_bits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

inline uint32_t bits_from_float(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

// ---- widening loads (exact) -----------------------------------------------------------------------

inline float to_acc(float v) { return v; }
inline double to_acc(double v) { return v; }
inline float to_acc(bf16 v) { return float_from_bits(uint32_t(v.bits) << 16); }

inline float to_acc(fp16 v) {
  const uint32_t sign = uint32_t(v.bits & 0x8000u) << 16;
  const uint32_t magnitude = uint32_t(v.bits & 0x7fffu) << 13;  // exponent+mantissa in float position
  const uint32_t exponent = magnitude & (0x1fu << 23);
  // Normal numbers: re-bias the exponent from 15 to 127.
  const uint32_t normal = magnitude + ((127u - 15u) << 23);
  // Inf/NaN: exponent all ones, mantissa (NaN payload) kept.
  const uint32_t inf_nan = magnitude | (0xffu << 23);
  // Zero/subnormal: value = mantissa * 2^-24, done exactly in float by subtracting the implicit bit
  // of 2^-14 (the magic 113 is 127 - 14).
  const float subnormal = float_from_bits(magnitude + (113u << 23)) - float_from_bits(113u << 23);
  const uint32_t picked = exponent == 0 ? bits_from_float(subnormal)
                          : exponent == (0x1fu << 23) ? inf_nan
                                                       : normal;
  return float_from_bits(picked | sign);
}

// ---- narrowing stores (round to nearest even, as torch's .to(dtype) does) ---------------------------

template <typename T>
inline T from_acc(acc_t<T> v);

template <>
inline float from_acc<float>(float v) {
  return v;
}

template <>
inline double from_acc<double>(double v) {
  return v;
}

template <>
inline bf16 from_acc<bf16>(float v) {
  const uint32_t bits = bits_from_float(v);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const bool is_nan = (bits & 0x7fffffffu) > 0x7f800000u;
  return bf16{uint16_t(is_nan ? 0x7fc0u : rounded)};
}

template <>
inline fp16 from_acc<fp16>(float v) {
  const uint32_t bits = bits_from_float(v);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t magnitude = bits & 0x7fffffffu;
  // Normal range [2^-14, 65520): re-bias the exponent, then round the 13 dropped mantissa bits to
  // nearest even; a carry correctly rolls into the exponent.
  const uint32_t rebiased = magnitude - ((127u - 15u) << 23);
  const uint32_t normal = (rebiased + 0xfffu + ((magnitude >> 13) & 1u)) >> 13;
  // Below 2^-14: adding 0.5f leaves round_to_nearest_even(v * 2^24) in the low mantissa bits.
  const uint32_t subnormal = bits_from_float(float_from_bits(magnitude) + 0.5f) - bits_from_float(0.5f);
  const uint32_t finite = magnitude < 0x38800000u ? subnormal : normal;
  const uint32_t overflowed = magnitude > 0x7f800000u ? 0x7e00u : 0x7c00u;  // NaN stays NaN, else inf
  const uint32_t picked = magnitude >= 0x477ff000u ? overflowed : finite;
  return fp16{uint16_t(picked | sign)};
}

}  // namespace lmt
