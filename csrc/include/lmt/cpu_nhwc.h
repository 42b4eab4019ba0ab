// channels_last (NHWC) statistics (internal to csrc/cpu; see cpu_common.h for the strategy).
//
// In NHWC a pixel's C channels are contiguous and a channel's pixels are C apart, so per-channel
// statistics are column sums of an (H*W) x C matrix. Walking a column (or a narrow block of columns)
// strides through memory and defeats the prefetchers, stores included. Instead a task owns a run of
// whole pixels of one sample and accumulates per-channel partial sums over it, reading x as one
// contiguous stream; the runs' partial sums (all around one shift per channel) are then added up.
// The write sweep walks the same runs with the same static schedule, so each thread re-reads the part
// of x it has just summed, from its own cache when that part fits.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "lmt/cpu_common.h"

namespace lmt {
namespace cpu {
namespace detail {

// Runs of pixels: `per_sample` runs of `pixels` pixels (the last may be shorter) for each sample.
struct PixelRuns {
  int64_t hw, per_sample, pixels;

  int64_t sample(int64_t task) const { return task / per_sample; }
  int64_t begin(int64_t task) const { return (task % per_sample) * pixels; }
  int64_t end(int64_t task) const { return std::min(hw, begin(task) + pixels); }
};

// Enough runs for every thread to have work (two each, for balance), none shorter than a pixel tile.
inline PixelRuns pixel_runs(int64_t n, int64_t hw) {
  const int64_t wanted = (2 * int64_t(max_threads()) + n - 1) / std::max<int64_t>(n, 1);
  const int64_t per_sample = std::max<int64_t>(1, std::min(wanted, (hw + kPixelTile - 1) / kPixelTile));
  const int64_t pixels = (hw + per_sample - 1) / per_sample;
  return {hw, (hw + pixels - 1) / pixels, pixels};
}

// Adds a tile's sums to the running totals and clears the tile.
template <typename Acc>
LMT_INLINE void flush_tile(Acc* tile, Acc* total, int64_t len) {
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) {
    total[i] += tile[i];
    tile[i] = Acc(0);
  }
}

// Adds kPixels consecutive pixels (1 or 2) to the tile sums. Two pixels per sweep over the channels share
// the loads and stores of the shifts and the sums, which is what bounds this loop.
template <int kPixels, typename T>
LMT_INLINE void add_pixels(const T* x, int64_t c, const acc_t<T>* shift, const acc_t<T>* masks,
                           int64_t mask_stride, int64_t k, acc_t<T>* pixel_buffer, acc_t<T>* tile) {
  using Acc = acc_t<T>;
  const Acc* v[kPixels];
  for (int q = 0; q < kPixels; ++q) v[q] = load_span(x + q * c, c, pixel_buffer + q * c);
  if (masks == nullptr) {
    Acc* s1 = tile;
    Acc* s2 = tile + c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      Acc sum1 = 0, sum2 = 0;
      const Acc sh = shift[j];
      for (int q = 0; q < kPixels; ++q) {
        const Acc d = v[q][j] - sh;
        sum1 += d;
        sum2 += d * d;
      }
      s1[j] += sum1;
      s2[j] += sum2;
    }
    return;
  }
  for (int64_t r = 0; r < k; ++r) {
    Acc w[kPixels];
    for (int q = 0; q < kPixels; ++q) w[q] = masks[r * mask_stride + q];
    Acc* s1 = tile + 2 * r * c;
    Acc* s2 = s1 + c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      Acc sum1 = 0, sum2 = 0;
      const Acc sh = shift[j];
      for (int q = 0; q < kPixels; ++q) {
        const Acc d = v[q][j] - sh;
        const Acc wd = w[q] * d;
        sum1 += wd;
        sum2 += wd * d;
      }
      s1[j] += sum1;
      s2[j] += sum2;
    }
  }
}

// Partial sums of one run: sums[r][0][j] = sum w_r (x_j - shift_j), sums[r][1][j] = sum w_r (x_j - shift_j)^2
// over pixels [0, pixels) of the run (masks == nullptr: one region of weight 1). Two levels: a pixel
// tile is summed in `tile` (2 k c values, in L1), then added to `sums`. pixel_buffer holds 2 c values.
template <typename T>
LMT_VECTOR_CLONES void run_sums(const T* x, int64_t c, int64_t pixels, const acc_t<T>* shift, const acc_t<T>* masks,
                                int64_t mask_stride, int64_t k, acc_t<T>* pixel_buffer, acc_t<T>* tile,
                                acc_t<T>* sums) {
  using Acc = acc_t<T>;
  const int64_t len = 2 * k * c;
  std::fill(tile, tile + len, Acc(0));
  std::fill(sums, sums + len, Acc(0));
  for (int64_t start = 0; start < pixels; start += kPixelTile) {
    const int64_t end = std::min(pixels, start + kPixelTile);
    int64_t p = start;
    for (; p + 1 < end; p += 2)
      add_pixels<2>(x + p * c, c, shift, masks == nullptr ? nullptr : masks + p, mask_stride, k, pixel_buffer, tile);
    if (p < end)
      add_pixels<1>(x + p * c, c, shift, masks == nullptr ? nullptr : masks + p, mask_stride, k, pixel_buffer, tile);
    flush_tile(tile, sums, len);
  }
}

// Per-(n, k, c) moments of an NHWC x: moments[(n * k + r) * c + j], and the per-(n, c) shifts the sums
// were taken around (shift[n * c + j]). masks == nullptr gives plain moments (k must be 1, weights unused);
// otherwise masked moments with region totals weights[n * k + r] and denominators W + eps.
template <typename T>
void nhwc_moments(const T* x, Dims dims, const PixelRuns& runs, const acc_t<T>* masks, const acc_t<T>* weights,
                  int64_t k, acc_t<T> eps, std::vector<acc_t<T>>& shift, std::vector<Moments<acc_t<T>>>& moments) {
  using Acc = acc_t<T>;
  const int64_t n = dims.n, c = dims.c, hw = dims.hw;
  const int64_t tasks = n * runs.per_sample, len = 2 * k * c;
  shift.resize(n * c);
  moments.resize(n * k * c);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < c; ++j) shift[i * c + j] = sample_shift(x + i * hw * c + j, hw, c);
  }
  std::vector<Acc> partial(tasks * len);
#pragma omp parallel if (worth_parallel(n * c * hw))
  {
    std::vector<Acc> pixel(2 * c), tile(len);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t sample = runs.sample(task), begin = runs.begin(task);
      run_sums(x + (sample * hw + begin) * c, c, runs.end(task) - begin, shift.data() + sample * c,
               masks == nullptr ? nullptr : masks + sample * k * hw + begin, hw, k, pixel.data(), tile.data(),
               partial.data() + task * len);
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t r = 0; r < k; ++r) {
      for (int64_t j = 0; j < c; ++j) {
        ShiftedSums<Acc> sums;
        for (int64_t run = 0; run < runs.per_sample; ++run) {
          const Acc* part = partial.data() + (i * runs.per_sample + run) * len + 2 * r * c;
          sums.s1 += part[j];
          sums.s2 += part[c + j];
        }
        const Acc s = shift[i * c + j];
        moments[(i * k + r) * c + j] = masks == nullptr ? plain_moments(s, sums, Acc(hw))
                                                        : masked_moments_from_sums(s, sums, weights[i * k + r], eps);
      }
    }
  }
}

}  // namespace detail
}  // namespace cpu
}  // namespace lmt
