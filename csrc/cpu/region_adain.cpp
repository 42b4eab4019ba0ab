// region_adain: y = act(sum_k m_k * (gamma_k * (x - mu_k) * rstd_k + beta_k)) + residual.
//
// Per (n, c) the sum folds into per-region coefficients computed once from the statistics:
//   y = sum_k m_k * (scale_k * (x - center) + offset_k),
//   scale_k = gamma_k * rstd_k,  offset_k = beta_k + scale_k * (center - mu_k),
// so the write sweep costs K multiply-adds per pixel. `center` (the row mean, or the row's shift for
// region statistics) keeps x - center small, so the fold does not cancel when x has a large mean.
//
// Complementary pair: when K = 2 and m_1 == 1 - m_0 exactly (highway AdaIN), the mix is
//   sum_k m_k * scale_k = scale_1 + m_0 * (scale_0 - scale_1)   (and the same for offsets),
// which reads one mask plane instead of two and saves two multiply-adds per element; the kernels check
// the masks (N*H*W values, 1/C of x) and store the coefficients as (difference, base) for this case.
#include <vector>

#include "lmt/cpu_nhwc.h"
#include "lmt/cpu_stats.h"

namespace lmt {
namespace cpu {

using namespace detail;

namespace {

// Whether K = 2 masks are a complementary pair: m_1 == 1 - m_0 at every pixel of every sample.
template <typename Acc>
bool complementary_pair(const Acc* masks, int64_t n, int64_t k, int64_t hw) {
  if (k != 2) return false;
  int64_t mismatches = 0;
  for (int64_t i = 0; i < n; ++i) {
    const Acc* m0 = masks + 2 * i * hw;
    const Acc* m1 = m0 + hw;
#pragma omp simd reduction(+ : mismatches)
    for (int64_t p = 0; p < hw; ++p) mismatches += m1[p] != Acc(1) - m0[p];
  }
  return mismatches == 0;
}

// Pair coefficients [region][stride] -> (region 0 - region 1, region 1), for the complementary write.
template <typename Acc>
inline void to_difference_and_base(Acc* scale, Acc* offset, int64_t stride) {
  for (int64_t j = 0; j < stride; ++j) {
    scale[j] -= scale[stride + j];
    offset[j] -= offset[stride + j];
  }
}

// NCHW work is done row by row (a row is one (n, c) plane): its statistics, then its write sweep while the
// row is still in L1 (the rows of 64 x 64 floats are 16 KB). Each thread takes one contiguous share of the
// rows; a sample's K mask planes are re-read from L2 for each of its rows.
template <typename T>
struct RowScratch {
  using Acc = acc_t<T>;
  std::vector<Acc> tile, out, mix_scale, mix_offset;  // kTile each, only where used: each is a malloc per call
  std::vector<LaneSums<Acc>> sums;                     // per region (region statistics)
  std::vector<Moments<Acc>> moments;                   // per region (region statistics)
  std::vector<Acc> scale, offset;                      // per region
  RowScratch(int64_t k, bool region_stats)
      : tile(widening_buffer<T>()),
        out(widening_buffer<T>()),
        mix_scale(k > 3 ? kTile : 0),
        mix_offset(k > 3 ? kTile : 0),
        sums(region_stats ? k : 0),
        moments(region_stats ? k : 0),
        scale(k),
        offset(k) {}
};

// kRegions, the write sweep's compile-time K: 1, 2, 3 make the per-pixel mix one fused loop; 0 handles
// any K with tile buffers; kComplementaryPair is K = 2 with m_1 == 1 - m_0 (coefficients as (difference,
// base)).
constexpr int kComplementaryPair = -1;

// The per-pixel mix of a row's coefficients for kRegions in {kComplementaryPair, 1, 2, 3}, applied to
// d = x - center with the pixel's masks at m[0], m[hw], ...: y = mixed scale * d + mixed offset.
template <int kRegions, typename Acc>
struct RowMix {
  static constexpr int kRows = kRegions == kComplementaryPair ? 2 : kRegions;
  Acc sc[kRows], of[kRows];  // copies: the stores to y could alias the scratch they come from

  RowMix(const Acc* scale, const Acc* offset) {
    for (int r = 0; r < kRows; ++r) sc[r] = scale[r], of[r] = offset[r];
  }

  LMT_INLINE Acc operator()(Acc d, const Acc* m, int64_t hw) const {
    if constexpr (kRegions == kComplementaryPair) {  // (difference, base)
      return (sc[1] + m[0] * sc[0]) * d + (of[1] + m[0] * of[0]);
    } else {
      Acc mixed_scale = 0, mixed_offset = 0;
      for (int r = 0; r < kRegions; ++r) {
        mixed_scale += m[r * hw] * sc[r];
        mixed_offset += m[r * hw] * of[r];
      }
      return mixed_scale * d + mixed_offset;
    }
  }
};

// The write sweep of one tile of one NCHW row.

template <int kRegions, typename T, typename R>
LMT_INLINE void write_tile(const T* x, const acc_t<T>* m, int64_t k, int64_t hw, int64_t len, const acc_t<T>* scale,
                           const acc_t<T>* offset, acc_t<T> center, const R* residual, T* y, Activation activation,
                           RowScratch<T>& s) {
  using Acc = acc_t<T>;
  const Acc* v = load_span(x, len, s.tile.data());
  Acc* out = output_span(y, s.out.data());
  if constexpr (kRegions != 0) {
    const RowMix<kRegions, Acc> mix(scale, offset);
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) out[i] = mix(v[i] - center, m + i, hw);
  } else {
    Acc* mixed_scale = s.mix_scale.data();
    Acc* mixed_offset = s.mix_offset.data();
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      mixed_scale[i] = m[i] * scale[0];
      mixed_offset[i] = m[i] * offset[0];
    }
    for (int64_t r = 1; r < k; ++r) {
      const Acc sc = scale[r], of = offset[r];
      const Acc* mr = m + r * hw;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        mixed_scale[i] += mr[i] * sc;
        mixed_offset[i] += mr[i] * of;
      }
    }
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) out[i] = mixed_scale[i] * (v[i] - center) + mixed_offset[i];
  }
  finish_span(out, residual, y, len, activation);
}

// The write sweep of one row, in one pass when T is read in place (tiles otherwise, and for the any-K mix,
// whose buffers hold a tile).
template <int kRegions, typename T, typename R>
LMT_INLINE void write_row(const RegionAdainArgs<T, R>& a, int64_t sample, int64_t row, acc_t<T> center,
                          RowScratch<T>& s) {
  const int64_t hw = a.dims.hw, k = a.k;
  const acc_t<T>* masks = a.masks + sample * k * hw;
  const int64_t step = kRegions == 0 ? kTile : sweep_step<T>(hw);
  for (int64_t start = 0; start < hw; start += step) {
    const int64_t len = std::min(step, hw - start), at = row * hw + start;
    write_tile<kRegions>(a.x + at, masks + start, k, hw, len, s.scale.data(), s.offset.data(), center,
                         a.residual == nullptr ? nullptr : a.residual + at, a.y + at, a.activation, s);
  }
}

// The coefficients of one row from its plain moments (global statistics) into s.scale, s.offset; returns
// the row's center, its mean.
template <typename T, typename R>
LMT_INLINE acc_t<T> global_coefficients(const RegionAdainArgs<T, R>& a, bool pair, int64_t sample, int64_t channel,
                                        Moments<acc_t<T>> moments, RowScratch<T>& s) {
  using Acc = acc_t<T>;
  const int64_t c = a.dims.c, k = a.k;
  const Acc* gamma = a.gamma + sample * k * c + channel;  // region r at [r * c]
  const Acc* beta = a.beta + sample * k * c + channel;
  const Acc rstd = inverse_std(moments.var, Acc(a.eps));
  for (int64_t r = 0; r < k; ++r) {
    s.scale[r] = gamma[r * c] * rstd;
    s.offset[r] = beta[r * c];
  }
  if (pair) to_difference_and_base(s.scale.data(), s.offset.data(), 1);
  return moments.mean;
}

// The statistics of one row and its per-region coefficients (as (difference, base) for a complementary
// pair) into s.scale, s.offset; returns the row's center.
template <typename T, typename R>
LMT_INLINE acc_t<T> row_coefficients(const RegionAdainArgs<T, R>& a, const acc_t<T>* weights, bool pair,
                                     int64_t sample, int64_t channel, RowScratch<T>& s) {
  using Acc = acc_t<T>;
  const int64_t c = a.dims.c, hw = a.dims.hw, k = a.k;
  const Acc eps = Acc(a.eps);
  const T* x = a.x + (sample * c + channel) * hw;
  const Acc* gamma = a.gamma + sample * k * c + channel;  // region r at [r * c]
  const Acc* beta = a.beta + sample * k * c + channel;
  Acc* scale = s.scale.data();
  Acc* offset = s.offset.data();
  if (!a.region_stats) return global_coefficients(a, pair, sample, channel, row_moments(x, hw, s.tile.data()), s);
  const Acc center = row_masked_moments(x, hw, a.masks + sample * k * hw, weights + sample * k, k, eps,
                                        s.tile.data(), s.sums.data(), s.moments.data());
  for (int64_t r = 0; r < k; ++r) {
    scale[r] = gamma[r * c] * inverse_std(s.moments[r].var, eps);
    offset[r] = beta[r * c] + scale[r] * (center - s.moments[r].mean);
  }
  if (pair) to_difference_and_base(scale, offset, 1);
  return center;
}

// write_row for a row of T read in place, fused with the shifted sums of the next row: the sums are
// additions and the mix is multiply-adds, which run on different units, so in one loop they overlap
// (the row is then written in ~10% less time at 32 x 32). The sums are add_shifted_sums' exactly.
template <int kRegions, typename T, typename R>
LMT_INLINE void write_row_summing_next(const RegionAdainArgs<T, R>& a, int64_t sample, int64_t row, T center,
                                       RowScratch<T>& s, T next_shift, LaneSums<T>& next_sums) {
  constexpr int64_t lanes = kLanes<T>;
  const int64_t hw = a.dims.hw, at = row * hw;
  const T* x = a.x + at;
  const T* next = x + hw;
  const T* m = a.masks + sample * a.k * hw;
  T* y = a.y + at;
  const RowMix<kRegions, T> mix(s.scale.data(), s.offset.data());
  T s1[lanes] = {}, s2[lanes] = {};  // locals, provably not aliased by y: they stay in registers
  int64_t i = 0;
  for (; i + lanes <= hw; i += lanes) {
#pragma omp simd
    for (int64_t j = 0; j < lanes; ++j) {
      y[i + j] = mix(x[i + j] - center, m + i + j, hw);
      const T d = next[i + j] - next_shift;
      s1[j] += d;
      s2[j] += d * d;
    }
  }
  for (int64_t j = 0; i + j < hw; ++j) {
    y[i + j] = mix(x[i + j] - center, m + i + j, hw);
    const T d = next[i + j] - next_shift;
    s1[j] += d;
    s2[j] += d * d;
  }
  for (int64_t j = 0; j < lanes; ++j) next_sums.s1[j] = s1[j], next_sums.s2[j] = s2[j];
  finish_span(y, a.residual == nullptr ? nullptr : a.residual + at, y, hw, a.activation);
}

// Rows [begin, end) with global statistics, each row's sums taken while the previous one is written.
// Rows of T read in place that stay in L1 two at a time with their masks (see kPipelinedRowBytes).
template <int kRegions, typename T, typename R>
LMT_INLINE void global_rows_pipelined(const RegionAdainArgs<T, R>& a, bool pair, int64_t begin, int64_t end,
                                      RowScratch<T>& s) {
  const int64_t c = a.dims.c, hw = a.dims.hw;
  int64_t sample = begin / c, channel = begin % c;
  T center = global_coefficients(a, pair, sample, channel, row_moments(a.x + begin * hw, hw, s.tile.data()), s);
  for (int64_t row = begin; row + 1 < end; ++row) {
    const T next_shift = sample_shift(a.x + (row + 1) * hw, hw, 1);
    LaneSums<T> next_sums;
    write_row_summing_next<kRegions>(a, sample, row, center, s, next_shift, next_sums);
    if (++channel == c) channel = 0, ++sample;
    const Moments<T> moments = plain_moments(next_shift, next_sums.fold(), T(hw));
    center = global_coefficients(a, pair, sample, channel, moments, s);
  }
  write_row<kRegions>(a, sample, end - 1, center, s);
}

// Rows no longer than this (in bytes) are pipelined: two of them, a mask plane or three and a row of y
// then fit in L1. Longer rows are summed and written one after the other.
constexpr int64_t kPipelinedRowBytes = 4096;

// Rows [begin, end) with compile-time K (see write_tile); the row index is split into (sample, channel)
// once and then stepped.
template <int kRegions, typename T, typename R>
LMT_INLINE void region_adain_rows_as(const RegionAdainArgs<T, R>& a, const acc_t<T>* weights, bool pair,
                                     int64_t begin, int64_t end, RowScratch<T>& s) {
  if constexpr (std::is_same_v<T, acc_t<T>> && kRegions != 0) {
    if (!a.region_stats && begin < end && a.dims.hw * int64_t(sizeof(T)) <= kPipelinedRowBytes)
      return global_rows_pipelined<kRegions>(a, pair, begin, end, s);
  }
  const int64_t c = a.dims.c;
  int64_t sample = begin / c, channel = begin % c;
  for (int64_t row = begin; row < end; ++row) {
    write_row<kRegions>(a, sample, row, row_coefficients(a, weights, pair, sample, channel, s), s);
    if (++channel == c) channel = 0, ++sample;
  }
}

// Rows [begin, end) of x (any samples).
template <typename T, typename R>
LMT_VECTOR_CLONES void region_adain_rows(const RegionAdainArgs<T, R>& a, const acc_t<T>* weights, bool pair,
                                         int64_t begin, int64_t end, RowScratch<T>& s) {
  if (pair) return region_adain_rows_as<kComplementaryPair>(a, weights, pair, begin, end, s);
  switch (a.k) {
    case 1:
      return region_adain_rows_as<1>(a, weights, pair, begin, end, s);
    case 2:
      return region_adain_rows_as<2>(a, weights, pair, begin, end, s);
    case 3:
      return region_adain_rows_as<3>(a, weights, pair, begin, end, s);
    default:
      return region_adain_rows_as<0>(a, weights, pair, begin, end, s);
  }
}

// ---- channels_last ------------------------------------------------------------------------------------

// Per-thread buffers of the NHWC path: the write coefficients of the sample last prepared (a thread's
// next run is often of the same sample), one region's moments while they are formed, and widening buffers
// for a pixel (the any-K write) or a channel block.
template <typename Acc>
struct NhwcScratch {
  int64_t sample = -1;
  std::vector<Acc> center, scale, offset;  // [c], [region][c], [region][c]
  std::vector<Acc> mean, var;              // [c]
  std::vector<Acc> pixel, out;             // widening buffers
  NhwcScratch(int64_t k, int64_t c, int64_t buffer)
      : center(c), scale(k * c), offset(k * c), mean(c), var(c), pixel(buffer), out(buffer) {}
};

// The write coefficients of one sample from the runs' sums: center[j] and per region scale[r c + j],
// offset[r c + j] (as (difference, base) for a complementary pair), formed as region_adain_rows does.
template <typename T, typename R>
LMT_VECTOR_CLONES void sample_coefficients(const RegionAdainArgs<T, R>& a, const acc_t<T>* weights, bool pair,
                                           const acc_t<T>* records, const PixelRuns& runs, int64_t sample,
                                           NhwcScratch<acc_t<T>>& s) {
  using Acc = acc_t<T>;
  const int64_t c = a.dims.c, k = a.k;
  const Acc eps = Acc(a.eps);
  const Acc* gamma = a.gamma + sample * k * c;
  const Acc* beta = a.beta + sample * k * c;
  Acc* center = s.center.data();
  const Acc* mean = s.mean.data();
  const Acc* var = s.var.data();
  if (a.region_stats) {
    const RunRecords layout{c, k};
    const Acc* shift = sample_shifts(records, runs, layout, sample);
    std::copy(shift, shift + c, center);
    for (int64_t r = 0; r < k; ++r) {
      masked_sample_moments(records, runs, layout, sample, r, weights[sample * k + r], eps, s.mean.data(),
                            s.var.data());
      Acc* scale = s.scale.data() + r * c;
      Acc* offset = s.offset.data() + r * c;
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) {
        scale[j] = gamma[r * c + j] * inverse_std(var[j], eps);
        offset[j] = beta[r * c + j] + scale[j] * (center[j] - mean[j]);
      }
    }
  } else {
    plain_sample_moments(records, runs, RunRecords{c, 1}, sample, center, s.var.data());
    for (int64_t r = 0; r < k; ++r) {
      Acc* scale = s.scale.data() + r * c;
      Acc* offset = s.offset.data() + r * c;
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) {
        scale[j] = gamma[r * c + j] * inverse_std(var[j], eps);
        offset[j] = beta[r * c + j];
      }
    }
  }
  if (pair) to_difference_and_base(s.scale.data(), s.offset.data(), c);
  s.sample = sample;
}

// Rows of coefficients behind kRegions (see write_tile).
template <int kRegions>
constexpr int kCoefficientRows = kRegions == kComplementaryPair ? 2 : kRegions;

// The write sweep of pixels [begin, end) of one sample for the kWidth channels from channel j (`width`
// when kWidth is 0), kRegions in {kComplementaryPair, 1, 2, 3}, with the block's coefficients in registers
// across the pixels. The mix is write_tile's.
template <int kRegions, int64_t kWidth, typename T, typename R>
LMT_INLINE void write_block(const RegionAdainArgs<T, R>& a, int64_t sample, int64_t begin, int64_t end, int64_t j,
                            int64_t width, NhwcScratch<acc_t<T>>& s) {
  using Acc = acc_t<T>;
  constexpr int kRows = kCoefficientRows<kRegions>;
  constexpr int64_t kMax = kWidth > 0 ? kWidth : kChannelBlock<Acc>;
  const int64_t len = kWidth > 0 ? kWidth : width;
  const int64_t c = a.dims.c, hw = a.dims.hw;
  Acc ctr[kMax], sc[kRows][kMax], of[kRows][kMax];  // locals: not aliased by the stores to y
  for (int r = 0; r < kRows; ++r) {
#pragma omp simd
    for (int64_t q = 0; q < len; ++q) sc[r][q] = s.scale[r * c + j + q], of[r][q] = s.offset[r * c + j + q];
  }
#pragma omp simd
  for (int64_t q = 0; q < len; ++q) ctr[q] = s.center[j + q];
  const Acc* masks = a.masks + sample * a.k * hw;
  Acc* pixel_buffer = s.pixel.data();
  Acc* out_buffer = s.out.data();
  for (int64_t p = begin; p < end; ++p) {
    const int64_t at = (sample * hw + p) * c + j;
    const Acc* v = load_span(a.x + at, len, pixel_buffer);
    Acc* out = output_span(a.y + at, out_buffer);
    if constexpr (kRegions == kComplementaryPair) {  // rows: (difference, base)
      const Acc w = masks[p];
#pragma omp simd
      for (int64_t q = 0; q < len; ++q) {
        const Acc mixed_scale = sc[1][q] + w * sc[0][q];
        const Acc mixed_offset = of[1][q] + w * of[0][q];
        out[q] = mixed_scale * (v[q] - ctr[q]) + mixed_offset;
      }
    } else {
      Acc w[kRegions];
      for (int r = 0; r < kRegions; ++r) w[r] = masks[r * hw + p];
#pragma omp simd
      for (int64_t q = 0; q < len; ++q) {
        Acc mixed_scale = 0, mixed_offset = 0;
        for (int r = 0; r < kRegions; ++r) {
          mixed_scale += w[r] * sc[r][q];
          mixed_offset += w[r] * of[r][q];
        }
        out[q] = mixed_scale * (v[q] - ctr[q]) + mixed_offset;
      }
    }
    finish_span(out, a.residual == nullptr ? nullptr : a.residual + at, a.y + at, len, a.activation);
  }
}

// Pixels [begin, end) of one sample, tile by tile, a channel block at a time.
template <int kRegions, typename T, typename R>
LMT_INLINE void write_run_blocks(const RegionAdainArgs<T, R>& a, int64_t sample, int64_t begin, int64_t end,
                                 NhwcScratch<acc_t<T>>& s) {
  constexpr int64_t kBlock = kChannelBlock<acc_t<T>>;
  const int64_t c = a.dims.c;
  for (int64_t start = begin; start < end; start += kPixelTile) {
    const int64_t stop = std::min(end, start + kPixelTile);
    int64_t j = 0;
    for (; j + kBlock <= c; j += kBlock) write_block<kRegions, kBlock>(a, sample, start, stop, j, kBlock, s);
    if (j < c) write_block<kRegions, 0>(a, sample, start, stop, j, c - j, s);
  }
}

// The write sweep for any K, one pixel at a time over all its channels (coefficient rows from memory).
template <typename T, typename R>
LMT_INLINE void write_run_pixels(const RegionAdainArgs<T, R>& a, int64_t sample, int64_t begin, int64_t end,
                                 NhwcScratch<acc_t<T>>& s) {
  using Acc = acc_t<T>;
  const int64_t c = a.dims.c, hw = a.dims.hw, k = a.k;
  const Acc* center = s.center.data();
  Acc* pixel_buffer = s.pixel.data();
  Acc* out_buffer = s.out.data();
  for (int64_t p = begin; p < end; ++p) {
    const int64_t at = (sample * hw + p) * c;
    const Acc* masks = a.masks + sample * k * hw + p;
    const Acc* x = load_span(a.x + at, c, pixel_buffer);
    Acc* o = output_span(a.y + at, out_buffer);
    const Acc w0 = masks[0];
    const Acc* sc0 = s.scale.data();
    const Acc* of0 = s.offset.data();
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) o[j] = w0 * (sc0[j] * (x[j] - center[j]) + of0[j]);
    for (int64_t r = 1; r < k; ++r) {
      const Acc w = masks[r * hw];
      const Acc* sc = s.scale.data() + r * c;
      const Acc* of = s.offset.data() + r * c;
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) o[j] += w * (sc[j] * (x[j] - center[j]) + of[j]);
    }
    finish_span(o, a.residual == nullptr ? nullptr : a.residual + at, a.y + at, c, a.activation);
  }
}

template <typename T, typename R>
LMT_VECTOR_CLONES void region_adain_run(const RegionAdainArgs<T, R>& a, bool pair, int64_t sample, int64_t begin,
                                        int64_t end, NhwcScratch<acc_t<T>>& s) {
  if (pair) return write_run_blocks<kComplementaryPair>(a, sample, begin, end, s);
  switch (a.k) {
    case 1:
      return write_run_blocks<1>(a, sample, begin, end, s);
    case 2:
      return write_run_blocks<2>(a, sample, begin, end, s);
    case 3:
      return write_run_blocks<3>(a, sample, begin, end, s);
    default:
      return write_run_pixels(a, sample, begin, end, s);
  }
}

// NHWC: runs of pixels summed (global statistics need no masks), then written with the coefficients of
// their sample; one parallel region (see sum_then_write).
template <typename T, typename R>
void region_adain_nhwc(const RegionAdainArgs<T, R>& a, const std::vector<acc_t<T>>& weights, bool pair) {
  using Acc = acc_t<T>;
  const int64_t n = a.dims.n, c = a.dims.c, hw = a.dims.hw;
  const bool parallel = worth_parallel(n * c * hw);
  const PixelRuns runs = pixel_runs(n, hw, parallel ? max_threads() : 1);
  const Acc* stats_masks = a.region_stats ? a.masks : nullptr;
  const int64_t stats_regions = a.region_stats ? a.k : 1;
  std::vector<Acc> records(runs.tasks(n) * RunRecords{c, stats_regions}.size());
  const int64_t buffer = widening_buffer<T>(std::max(c, kChannelBlock<Acc>));
  sum_then_write(
      runs, n, parallel, [&] { return NhwcScratch<Acc>(a.k, c, buffer); },
      [&](int64_t task, NhwcScratch<Acc>& s) {
        sum_run_into(a.x, a.dims, runs, task, stats_masks, stats_regions, s.pixel.data(), records.data());
      },
      [&](int64_t task, NhwcScratch<Acc>& s) {
        const int64_t sample = runs.sample(task);
        if (s.sample != sample) sample_coefficients(a, weights.data(), pair, records.data(), runs, sample, s);
        region_adain_run(a, pair, sample, runs.begin(task), runs.end(task), s);
      });
}

}  // namespace

template <typename T, typename R>
void region_adain(const RegionAdainArgs<T, R>& a) {
  using Acc = acc_t<T>;
  const int64_t n = a.dims.n, c = a.dims.c, hw = a.dims.hw, k = a.k;
  std::vector<Acc> weights;  // W_k per (n, k): only region statistics need them
  if (a.region_stats) weights = mask_weights(a.masks, n * k, hw);
  const bool pair = complementary_pair(a.masks, n, k, hw);
  if (a.layout == Layout::kNHWC) return region_adain_nhwc(a, weights, pair);
#pragma omp parallel if (worth_parallel(n * c * hw))
  {
    RowScratch<T> scratch(k, a.region_stats);
    const ThreadShare share = thread_share(n * c);
    region_adain_rows(a, weights.data(), pair, share.begin, share.end, scratch);
  }
}

template void region_adain<float, float>(const RegionAdainArgs<float, float>&);
template void region_adain<double, double>(const RegionAdainArgs<double, double>&);
template void region_adain<bf16, bf16>(const RegionAdainArgs<bf16, bf16>&);
template void region_adain<bf16, float>(const RegionAdainArgs<bf16, float>&);
template void region_adain<fp16, fp16>(const RegionAdainArgs<fp16, fp16>&);
template void region_adain<fp16, float>(const RegionAdainArgs<fp16, float>&);

}  // namespace cpu
}  // namespace lmt
