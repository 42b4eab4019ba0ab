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

// NCHW work is done in groups of rows (channels) of one sample: each row's statistics first, then the
// write sweep tile by tile across the group, so that a tile of the masks is loaded once for all rows of
// the group (from L1) and the group's rows of x are re-read from L2.
constexpr int64_t kGroupBytes = 256 * 1024;  // x bytes of one group: half of a small L2
constexpr int64_t kMaxGroupRows = 16;

inline int64_t group_rows(int64_t n, int64_t c, int64_t hw, int64_t element_bytes) {
  const int64_t by_cache = std::max<int64_t>(1, kGroupBytes / std::max<int64_t>(1, hw * element_bytes));
  const int64_t by_threads = std::max<int64_t>(1, n * c / (4 * int64_t(max_threads())));
  return std::min({kMaxGroupRows, by_cache, by_threads, c});
}

template <typename Acc>
struct GroupScratch {
  std::vector<Acc> tile, out, mix_scale, mix_offset;  // kTile each
  std::vector<LaneSums<Acc>> sums;                     // per region
  std::vector<Moments<Acc>> moments;                   // per region
  std::vector<Acc> scale, offset;                      // [row of the group][region]
  std::vector<Acc> center;                             // [row of the group]
  GroupScratch(int64_t k, int64_t rows)
      : tile(kTile), out(kTile), mix_scale(kTile), mix_offset(kTile), sums(k), moments(k), scale(rows * k),
        offset(rows * k), center(rows) {}
};

// kRegions, the write sweep's compile-time K: 1, 2, 3 make the per-pixel mix one fused loop; 0 handles
// any K with tile buffers; kComplementaryPair is K = 2 with m_1 == 1 - m_0 (coefficients as (difference,
// base)).
constexpr int kComplementaryPair = -1;

// The write sweep of one tile of one NCHW row.

template <int kRegions, typename T, typename R>
LMT_INLINE void write_tile(const T* x, const acc_t<T>* m, int64_t k, int64_t hw, int64_t len, const acc_t<T>* scale,
                           const acc_t<T>* offset, acc_t<T> center, const R* residual, T* y, Activation activation,
                           GroupScratch<acc_t<T>>& s) {
  using Acc = acc_t<T>;
  const Acc* v = load_span(x, len, s.tile.data());
  Acc* out = output_span(y, s.out.data());
  if constexpr (kRegions == kComplementaryPair) {  // scale/offset hold (difference, base)
    const Acc scale_difference = scale[0], scale_base = scale[1];
    const Acc offset_difference = offset[0], offset_base = offset[1];
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const Acc mixed_scale = scale_base + m[i] * scale_difference;
      const Acc mixed_offset = offset_base + m[i] * offset_difference;
      out[i] = mixed_scale * (v[i] - center) + mixed_offset;
    }
  } else if constexpr (kRegions > 0) {
    Acc sc[kRegions], of[kRegions];
    for (int r = 0; r < kRegions; ++r) sc[r] = scale[r], of[r] = offset[r];
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      Acc mixed_scale = 0, mixed_offset = 0;
      for (int r = 0; r < kRegions; ++r) {
        mixed_scale += m[r * hw + i] * sc[r];
        mixed_offset += m[r * hw + i] * of[r];
      }
      out[i] = mixed_scale * (v[i] - center) + mixed_offset;
    }
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

template <int kRegions, typename T, typename R>
LMT_INLINE void write_rows(const RegionAdainArgs<T, R>& a, int64_t row0, int64_t rows, GroupScratch<acc_t<T>>& s) {
  const int64_t hw = a.dims.hw, k = a.k;
  const acc_t<T>* masks = a.masks + (row0 / a.dims.c) * k * hw;
  for (int64_t start = 0; start < hw; start += kTile) {
    const int64_t len = std::min(kTile, hw - start);
    for (int64_t g = 0; g < rows; ++g) {
      const int64_t at = (row0 + g) * hw + start;
      write_tile<kRegions>(a.x + at, masks + start, k, hw, len, s.scale.data() + g * k, s.offset.data() + g * k,
                           s.center[g], a.residual == nullptr ? nullptr : a.residual + at, a.y + at, a.activation, s);
    }
  }
}

// Rows [row0, row0 + rows) of one sample: statistics and per-region coefficients of each row, then the
// write sweep.
template <typename T, typename R>
LMT_VECTOR_CLONES void region_adain_rows(const RegionAdainArgs<T, R>& a, const acc_t<T>* weights, bool pair,
                                         int64_t row0, int64_t rows, GroupScratch<acc_t<T>>& s) {
  using Acc = acc_t<T>;
  const int64_t c = a.dims.c, hw = a.dims.hw, k = a.k;
  const Acc eps = Acc(a.eps);
  const int64_t sample = row0 / c;
  const Acc* masks = a.masks + sample * k * hw;
  for (int64_t g = 0; g < rows; ++g) {
    const int64_t row = row0 + g, channel = row % c;
    const T* x = a.x + row * hw;
    const Acc* gamma = a.gamma + sample * k * c + channel;  // region r at [r * c]
    const Acc* beta = a.beta + sample * k * c + channel;
    Acc* scale = s.scale.data() + g * k;
    Acc* offset = s.offset.data() + g * k;
    if (a.region_stats) {
      const Acc center = row_masked_moments(x, hw, masks, weights + sample * k, k, eps, s.tile.data(),
                                            s.sums.data(), s.moments.data());
      for (int64_t r = 0; r < k; ++r) {
        scale[r] = gamma[r * c] * inverse_std(s.moments[r].var, eps);
        offset[r] = beta[r * c] + scale[r] * (center - s.moments[r].mean);
      }
      s.center[g] = center;
    } else {
      const Moments<Acc> moments = row_moments(x, hw, s.tile.data());
      const Acc rstd = inverse_std(moments.var, eps);
      for (int64_t r = 0; r < k; ++r) {
        scale[r] = gamma[r * c] * rstd;
        offset[r] = beta[r * c];
      }
      s.center[g] = moments.mean;
    }
    if (pair) to_difference_and_base(scale, offset, 1);
  }
  if (pair) return write_rows<kComplementaryPair>(a, row0, rows, s);
  switch (k) {
    case 1:
      return write_rows<1>(a, row0, rows, s);
    case 2:
      return write_rows<2>(a, row0, rows, s);
    case 3:
      return write_rows<3>(a, row0, rows, s);
    default:
      return write_rows<0>(a, row0, rows, s);
  }
}

// The write sweep of kPixels consecutive pixels (1 or 2) from pixel p of one NHWC sample; scale/offset
// are [region][channel] of the sample, center is [channel]; kRegions as in write_tile (0 only with one
// pixel). Two pixels per sweep over the channels share the loads of the per-channel coefficients,
// which is what bounds this loop.
template <int kRegions, int kPixels, typename T, typename R>
LMT_INLINE void write_pixels(const RegionAdainArgs<T, R>& a, int64_t sample, int64_t p, const acc_t<T>* center,
                             const acc_t<T>* scale, const acc_t<T>* offset, acc_t<T>* pixel_buffer,
                             acc_t<T>* out_buffer) {
  using Acc = acc_t<T>;
  const int64_t c = a.dims.c, hw = a.dims.hw, k = a.k;
  const Acc* masks = a.masks + sample * k * hw + p;
  const Acc* v[kPixels];
  Acc* out[kPixels];
  for (int q = 0; q < kPixels; ++q) {
    const int64_t at = (sample * hw + p + q) * c;
    v[q] = load_span(a.x + at, c, pixel_buffer + q * c);
    out[q] = output_span(a.y + at, out_buffer + q * c);
  }
  if constexpr (kRegions == kComplementaryPair) {  // scale/offset hold (difference, base) per channel
    Acc w[kPixels];
    for (int q = 0; q < kPixels; ++q) w[q] = masks[q];
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      // Coefficients into registers first: the stores below could alias them as far as the compiler knows.
      const Acc scale_difference = scale[j], scale_base = scale[c + j];
      const Acc offset_difference = offset[j], offset_base = offset[c + j], ctr = center[j];
      for (int q = 0; q < kPixels; ++q) {
        const Acc mixed_scale = scale_base + w[q] * scale_difference;
        const Acc mixed_offset = offset_base + w[q] * offset_difference;
        out[q][j] = mixed_scale * (v[q][j] - ctr) + mixed_offset;
      }
    }
  } else if constexpr (kRegions > 0) {
    Acc w[kPixels][kRegions];
    for (int q = 0; q < kPixels; ++q)
      for (int r = 0; r < kRegions; ++r) w[q][r] = masks[r * hw + q];
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      Acc sc[kRegions], of[kRegions];  // into registers first (see above)
      for (int r = 0; r < kRegions; ++r) sc[r] = scale[r * c + j], of[r] = offset[r * c + j];
      const Acc ctr = center[j];
      for (int q = 0; q < kPixels; ++q) {
        Acc mixed_scale = 0, mixed_offset = 0;
        for (int r = 0; r < kRegions; ++r) {
          mixed_scale += w[q][r] * sc[r];
          mixed_offset += w[q][r] * of[r];
        }
        out[q][j] = mixed_scale * (v[q][j] - ctr) + mixed_offset;
      }
    }
  } else {
    static_assert(kPixels == 1, "the any-K write handles one pixel at a time");
    Acc* o = out[0];
    const Acc* x = v[0];
    const Acc w0 = masks[0];
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) o[j] = w0 * (scale[j] * (x[j] - center[j]) + offset[j]);
    for (int64_t r = 1; r < k; ++r) {
      const Acc w = masks[r * hw];
      const Acc* sc = scale + r * c;
      const Acc* of = offset + r * c;
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) o[j] += w * (sc[j] * (x[j] - center[j]) + of[j]);
    }
  }
  for (int q = 0; q < kPixels; ++q) {
    const int64_t at = (sample * hw + p + q) * c;
    finish_span(out[q], a.residual == nullptr ? nullptr : a.residual + at, a.y + at, c, a.activation);
  }
}

template <int kRegions, typename T, typename R>
LMT_INLINE void write_run(const RegionAdainArgs<T, R>& a, int64_t sample, int64_t begin, int64_t end,
                          const acc_t<T>* center, const acc_t<T>* scale, const acc_t<T>* offset,
                          acc_t<T>* pixel_buffer, acc_t<T>* out_buffer) {
  int64_t p = begin;
  if constexpr (kRegions != 0) {
    for (; p + 1 < end; p += 2)
      write_pixels<kRegions, 2>(a, sample, p, center, scale, offset, pixel_buffer, out_buffer);
  }
  for (; p < end; ++p) write_pixels<kRegions, 1>(a, sample, p, center, scale, offset, pixel_buffer, out_buffer);
}

template <typename T, typename R>
LMT_VECTOR_CLONES void region_adain_pixels(const RegionAdainArgs<T, R>& a, bool pair, int64_t sample, int64_t begin,
                                           int64_t end, const acc_t<T>* center, const acc_t<T>* scale,
                                           const acc_t<T>* offset, acc_t<T>* pixel_buffer, acc_t<T>* out_buffer) {
  if (pair) {
    return write_run<kComplementaryPair>(a, sample, begin, end, center, scale, offset, pixel_buffer, out_buffer);
  }
  switch (a.k) {
    case 1:
      return write_run<1>(a, sample, begin, end, center, scale, offset, pixel_buffer, out_buffer);
    case 2:
      return write_run<2>(a, sample, begin, end, center, scale, offset, pixel_buffer, out_buffer);
    case 3:
      return write_run<3>(a, sample, begin, end, center, scale, offset, pixel_buffer, out_buffer);
    default:
      return write_run<0>(a, sample, begin, end, center, scale, offset, pixel_buffer, out_buffer);
  }
}

template <typename T, typename R>
void region_adain_nhwc(const RegionAdainArgs<T, R>& a, const std::vector<acc_t<T>>& weights, bool pair) {
  using Acc = acc_t<T>;
  const int64_t n = a.dims.n, c = a.dims.c, hw = a.dims.hw, k = a.k;
  const Acc eps = Acc(a.eps);
  const PixelRuns runs = pixel_runs(n, hw);
  std::vector<Acc> center;  // per (n, c): the shift (region statistics) or the mean (global)
  std::vector<Moments<Acc>> moments;
  std::vector<Acc> scale(n * k * c), offset(n * k * c);
  if (a.region_stats) {
    nhwc_moments(a.x, a.dims, runs, a.masks, weights.data(), k, eps, center, moments);
    for (int64_t i = 0; i < n * k * c; ++i) {
      const int64_t sample = i / (k * c), channel = i % c;
      const Acc ctr = center[sample * c + channel];
      scale[i] = a.gamma[i] * inverse_std(moments[i].var, eps);
      offset[i] = a.beta[i] + scale[i] * (ctr - moments[i].mean);
    }
  } else {
    std::vector<Acc> shift;
    nhwc_moments(a.x, a.dims, runs, static_cast<const Acc*>(nullptr), nullptr, 1, eps, shift, moments);
    center.resize(n * c);
    for (int64_t i = 0; i < n * c; ++i) center[i] = moments[i].mean;
    for (int64_t i = 0; i < n * k * c; ++i) {
      const int64_t sample = i / (k * c), channel = i % c;
      scale[i] = a.gamma[i] * inverse_std(moments[sample * c + channel].var, eps);
      offset[i] = a.beta[i];
    }
  }
  if (pair) {
    for (int64_t i = 0; i < n; ++i) to_difference_and_base(scale.data() + i * k * c, offset.data() + i * k * c, c);
  }
  const int64_t tasks = n * runs.per_sample;
#pragma omp parallel if (worth_parallel(n * c * hw))
  {
    std::vector<Acc> pixel(2 * c), out(2 * c);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t sample = runs.sample(task);
      region_adain_pixels(a, pair, sample, runs.begin(task), runs.end(task), center.data() + sample * c,
                          scale.data() + sample * k * c, offset.data() + sample * k * c, pixel.data(), out.data());
    }
  }
}

}  // namespace

template <typename T, typename R>
void region_adain(const RegionAdainArgs<T, R>& a) {
  using Acc = acc_t<T>;
  const int64_t n = a.dims.n, c = a.dims.c, hw = a.dims.hw, k = a.k;
  std::vector<Acc> weights;  // W_k per (n, k): only region statistics need them
  if (a.region_stats) weights = mask_weights(a.masks, n * k, hw);
  const bool pair = complementary_pair(a.masks, n, k, hw);
  if (a.layout == Layout::kNHWC) {
    region_adain_nhwc(a, weights, pair);
  } else {
    const int64_t rows = group_rows(n, c, hw, sizeof(T));
    const int64_t groups = (c + rows - 1) / rows;  // per sample
#pragma omp parallel if (worth_parallel(n * c * hw))
    {
      GroupScratch<Acc> scratch(k, rows);
#pragma omp for schedule(static)
      for (int64_t task = 0; task < n * groups; ++task) {
        const int64_t sample = task / groups, c0 = (task % groups) * rows;
        region_adain_rows(a, weights.data(), pair, sample * c + c0, std::min(rows, c - c0), scratch);
      }
    }
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
