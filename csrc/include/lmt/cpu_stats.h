// Statistics of one slice of x in one sweep (internal to csrc/cpu; see cpu_common.h for the strategy).
//
// The slice is one NCHW row: one (n, c) plane, contiguous H*W values (channels_last: cpu_nhwc.h).
// Masked variants take the K mask planes of the sample (K x H*W) and their totals W_k = sum m_k.
#pragma once

#include <algorithm>
#include <cstdint>

#include "lmt/cpu_common.h"

namespace lmt {
namespace cpu {
namespace detail {

// ---- NCHW rows ------------------------------------------------------------------------------------

// Plain per-row moments (mean over H*W, biased variance).
template <typename T>
LMT_INLINE Moments<acc_t<T>> row_moments(const T* x, int64_t hw, acc_t<T>* tile_buffer) {
  using Acc = acc_t<T>;
  const Acc shift = sample_shift(x, hw, 1);
  LaneSums<Acc> sums;
  const int64_t step = sweep_step<T>(hw);
  for (int64_t start = 0; start < hw; start += step) {
    const int64_t len = std::min(step, hw - start);
    add_shifted_sums(load_span(x + start, len, tile_buffer), len, shift, sums);
  }
  return plain_moments(shift, sums.fold(), Acc(hw));
}

// Masked moments of one row for K regions into moments[0..K); returns the row's shift.
template <typename T>
LMT_INLINE acc_t<T> row_masked_moments(const T* x, int64_t hw, const acc_t<T>* masks, const acc_t<T>* weights,
                                       int64_t k, acc_t<T> eps, acc_t<T>* tile_buffer, LaneSums<acc_t<T>>* sums,
                                       Moments<acc_t<T>>* moments) {
  using Acc = acc_t<T>;
  const Acc shift = sample_shift(x, hw, 1);
  std::fill(sums, sums + k, LaneSums<Acc>{});
  for (int64_t start = 0; start < hw; start += kTile) {
    const int64_t len = std::min(kTile, hw - start);
    const Acc* values = load_span(x + start, len, tile_buffer);  // read once, reused for every region
    for (int64_t r = 0; r < k; ++r) add_masked_shifted_sums(values, masks + r * hw + start, len, shift, sums[r]);
  }
  for (int64_t r = 0; r < k; ++r) moments[r] = masked_moments_from_sums(shift, sums[r].fold(), weights[r], eps);
  return shift;
}

// W_k = sum m_k for every (n, k) plane of the masks.
template <typename Acc>
inline std::vector<Acc> mask_weights(const Acc* masks, int64_t planes, int64_t hw) {
  std::vector<Acc> weights(planes);
#pragma omp parallel for schedule(static) if (worth_parallel(planes * hw))
  for (int64_t i = 0; i < planes; ++i) weights[i] = sum_span(masks + i * hw, hw);
  return weights;
}

}  // namespace detail
}  // namespace cpu
}  // namespace lmt
