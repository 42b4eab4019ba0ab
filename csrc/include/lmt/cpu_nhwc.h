// channels_last (NHWC) statistics and sweeps (internal to csrc/cpu; see cpu_common.h for the strategy).
//
// In NHWC a pixel's C channels are contiguous and a channel's pixels are C apart, so per-channel
// statistics are column sums of an (H*W) x C matrix. Walking a column (or a narrow block of columns)
// over all pixels strides through memory and defeats the prefetchers, stores included. Instead a task owns
// a run of whole pixels of one sample and sums it tile by tile: within a tile of kPixelTile pixels it
// takes one block of kChannelBlock channels at a time, whose sums stay in registers across the tile's
// pixels (a load per vector of x; a per-pixel sweep over all C channels would load and store its sums for
// every pixel instead), and only then go to memory. The runs' partial sums (all around one shift per
// channel) are then added up. The write sweep walks the same runs the same way, block coefficients in
// registers, so each thread re-reads the part of x it has just summed, from its own cache when it fits.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "lmt/cpu_common.h"

namespace lmt {
namespace cpu {
namespace detail {

// Channels per block: 512 bytes, eight AVX-512 registers per row of sums or coefficients. Wide blocks keep
// the reads of a pixel long and contiguous (with C = 128 a pixel is one block), which the prefetchers need
// when x comes from L3 or memory: 256-byte blocks ran ~25% slower there, and no faster from L2.
template <typename Acc>
constexpr int64_t kChannelBlock = 512 / sizeof(Acc);

// Pixels per tile of masked sums: the tile is read once per region, from L1 when it is this short.
constexpr int64_t kMaskedPixelTile = 32;

// Runs of pixels: `per_sample` runs of `pixels` pixels (the last may be shorter) for each sample.
struct PixelRuns {
  int64_t hw, per_sample, pixels;

  int64_t sample(int64_t task) const { return task / per_sample; }
  int64_t begin(int64_t task) const { return (task % per_sample) * pixels; }
  int64_t end(int64_t task) const { return std::min(hw, begin(task) + pixels); }
  int64_t tasks(int64_t n) const { return n * per_sample; }
};

// Whole samples when they share out evenly (or nearly: many of them) between the threads, so that a task
// can write right after summing, with no wait for other threads; otherwise each sample is cut into as many
// runs as make the tasks share out evenly (none shorter than a pixel tile), and the write sweep waits for
// every run's sums. (Cutting a sample's channels between threads instead would need no wait, but ran ~5x
// slower: two cores then write alternate blocks of every pixel, and the lines the prefetchers fetch for one
// are the other's.)
inline PixelRuns pixel_runs(int64_t n, int64_t hw, int64_t threads) {
  int64_t per_sample = 1;
  if (threads > 1 && n % threads != 0 && n < 4 * threads) per_sample = threads / std::gcd(n, threads);
  per_sample = std::max<int64_t>(1, std::min(per_sample, (hw + kPixelTile - 1) / kPixelTile));
  const int64_t pixels = (hw + per_sample - 1) / per_sample;
  return {hw, (hw + pixels - 1) / pixels, pixels};
}

// The two sweeps of an NHWC op in one parallel region (a fork/join, or a barrier, costs microseconds, as
// much as the work at small sizes). sum_run(task, scratch) sums a run; write_run(task, scratch) writes it
// and needs the sums of every run of its sample: when a sample is a single run, its task does both at
// once; otherwise every run is summed before any is written. make_scratch() gives each thread its buffers.
template <typename MakeScratch, typename SumRun, typename WriteRun>
void sum_then_write(const PixelRuns& runs, int64_t n, bool parallel, MakeScratch&& make_scratch, SumRun&& sum_run,
                    WriteRun&& write_run) {
  const int64_t tasks = runs.tasks(n);
#pragma omp parallel if (parallel)
  {
    auto scratch = make_scratch();
    if (runs.per_sample == 1) {
#pragma omp for schedule(static) nowait
      for (int64_t task = 0; task < tasks; ++task) {
        sum_run(task, scratch);
        write_run(task, scratch);
      }
    } else {
#pragma omp for schedule(static)
      for (int64_t task = 0; task < tasks; ++task) sum_run(task, scratch);
#pragma omp for schedule(static) nowait
      for (int64_t task = 0; task < tasks; ++task) write_run(task, scratch);
    }
  }
}

// ---- statistics ----------------------------------------------------------------------------------------

// Per-channel shifts of one NHWC sample: the mean of kShiftSamples pixels spread over it (what
// sample_shift takes for one channel), added pixel by pixel so that the loads are contiguous.
template <typename T>
LMT_INLINE void channel_shifts(const T* x, int64_t hw, int64_t c, acc_t<T>* shift) {
  using Acc = acc_t<T>;
  const int64_t samples = std::min(hw, kShiftSamples);
  const int64_t step = (hw / samples) * c;
  std::fill(shift, shift + c, Acc(0));
  for (int64_t i = 0; i < samples; ++i) {
    const T* pixel = x + i * step;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) shift[j] += to_acc(pixel[j]);
  }
#pragma omp simd
  for (int64_t j = 0; j < c; ++j) shift[j] /= Acc(samples);
}

// s1[j] += sum w_p (x_pj - shift_j), s2[j] += sum w_p (x_pj - shift_j)^2 over `pixels` pixels from x, for
// one block of kWidth channels (`width` when kWidth is 0: the narrower last block); kWeighted false means
// w_p = 1. The block's sums live in registers across the pixels. buffer holds a block (half types).
template <bool kWeighted, int64_t kWidth, typename T>
LMT_INLINE void add_block_sums(const T* x, int64_t c, int64_t pixels, int64_t width, const acc_t<T>* shift,
                               const acc_t<T>* weights, acc_t<T>* buffer, acc_t<T>* s1, acc_t<T>* s2) {
  using Acc = acc_t<T>;
  constexpr int64_t kMax = kWidth > 0 ? kWidth : kChannelBlock<Acc>;
  const int64_t len = kWidth > 0 ? kWidth : width;
  Acc sh[kMax], a1[kMax], a2[kMax];  // locals, provably not aliased by x: they stay in registers
#pragma omp simd
  for (int64_t j = 0; j < len; ++j) sh[j] = shift[j], a1[j] = Acc(0), a2[j] = Acc(0);
  for (int64_t p = 0; p < pixels; ++p) {
    const Acc* v = load_span(x + p * c, len, buffer);
    if constexpr (kWeighted) {
      const Acc w = weights[p];
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) {
        const Acc d = v[j] - sh[j];
        const Acc wd = w * d;
        a1[j] += wd;
        a2[j] += wd * d;
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) {
        const Acc d = v[j] - sh[j];
        a1[j] += d;
        a2[j] += d * d;
      }
    }
  }
#pragma omp simd
  for (int64_t j = 0; j < len; ++j) s1[j] += a1[j], s2[j] += a2[j];
}

// One tile's sums for every channel block: sums as run_sums lays them out.
template <bool kWeighted, typename T>
LMT_INLINE void add_tile_sums(const T* x, int64_t c, int64_t pixels, const acc_t<T>* shift, const acc_t<T>* weights,
                              acc_t<T>* buffer, acc_t<T>* s1, acc_t<T>* s2) {
  constexpr int64_t kBlock = kChannelBlock<acc_t<T>>;
  int64_t j = 0;
  for (; j + kBlock <= c; j += kBlock)
    add_block_sums<kWeighted, kBlock>(x + j, c, pixels, kBlock, shift + j, weights, buffer, s1 + j, s2 + j);
  if (j < c) add_block_sums<kWeighted, 0>(x + j, c, pixels, c - j, shift + j, weights, buffer, s1 + j, s2 + j);
}

// Partial sums of one run of `pixels` pixels from x, for each region r (masks == nullptr: one region of
// weight 1): sums[2 r c + j] = sum w_r (x_j - shift_j), sums[(2 r + 1) c + j] = sum w_r (x_j - shift_j)^2.
// Two levels: a tile's sums in registers, added to `sums`. buffer holds a channel block.
template <typename T>
LMT_VECTOR_CLONES void run_sums(const T* x, int64_t c, int64_t pixels, const acc_t<T>* shift, const acc_t<T>* masks,
                                int64_t mask_stride, int64_t k, acc_t<T>* buffer, acc_t<T>* sums) {
  using Acc = acc_t<T>;
  std::fill(sums, sums + 2 * k * c, Acc(0));
  const int64_t tile_pixels = masks == nullptr ? kPixelTile : kMaskedPixelTile;
  for (int64_t start = 0; start < pixels; start += tile_pixels) {
    const int64_t count = std::min(tile_pixels, pixels - start);
    const T* tile = x + start * c;
    if (masks == nullptr) {
      add_tile_sums<false>(tile, c, count, shift, static_cast<const Acc*>(nullptr), buffer, sums, sums + c);
      continue;
    }
    for (int64_t r = 0; r < k; ++r) {  // the tile is re-read from L1 for each region
      Acc* s1 = sums + 2 * r * c;
      add_tile_sums<true>(tile, c, count, shift, masks + r * mask_stride + start, buffer, s1, s1 + c);
    }
  }
}

// Where each task keeps its sums: the sample's shifts (c), then the run's sums (2 k c, as run_sums).
struct RunRecords {
  int64_t c, k;
  int64_t size() const { return (1 + 2 * k) * c; }
};

// Sums one task's run into its record: the shifts of its sample, then run_sums.
template <typename T>
LMT_INLINE void sum_run_into(const T* x, Dims dims, const PixelRuns& runs, int64_t task, const acc_t<T>* masks,
                             int64_t k, acc_t<T>* buffer, acc_t<T>* records) {
  const int64_t c = dims.c, hw = dims.hw, sample = runs.sample(task), begin = runs.begin(task);
  acc_t<T>* record = records + task * RunRecords{c, k}.size();
  const T* xs = x + sample * hw * c;
  channel_shifts(xs, hw, c, record);  // recomputed by every run of the sample: the same values, no sharing
  run_sums(xs + begin * c, c, runs.end(task) - begin, record,
           masks == nullptr ? masks : masks + sample * k * hw + begin, hw, k, buffer, record + c);
}

// The sums of region r of one sample, over all its runs (in run order): s1[j], s2[j].
template <typename Acc>
LMT_INLINE void sample_sums(const Acc* records, const PixelRuns& runs, RunRecords layout, int64_t sample, int64_t r,
                            Acc* s1, Acc* s2) {
  const int64_t c = layout.c;
  std::fill(s1, s1 + c, Acc(0));
  std::fill(s2, s2 + c, Acc(0));
  for (int64_t run = 0; run < runs.per_sample; ++run) {
    const Acc* part = records + (sample * runs.per_sample + run) * layout.size() + (1 + 2 * r) * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) s1[j] += part[j], s2[j] += part[c + j];
  }
}

// The shifts of one sample (every run of it holds the same).
template <typename Acc>
LMT_INLINE const Acc* sample_shifts(const Acc* records, const PixelRuns& runs, RunRecords layout, int64_t sample) {
  return records + sample * runs.per_sample * layout.size();
}

// Plain moments of one sample per channel (region 0 of records summed without masks): mean[j], var[j].
template <typename Acc>
LMT_INLINE void plain_sample_moments(const Acc* records, const PixelRuns& runs, RunRecords layout, int64_t sample,
                                     Acc* mean, Acc* var) {
  const int64_t c = layout.c;
  sample_sums(records, runs, layout, sample, 0, mean, var);  // sums first, turned into moments in place
  const Acc* shift = sample_shifts(records, runs, layout, sample);
  const Acc count = Acc(runs.hw);
#pragma omp simd
  for (int64_t j = 0; j < c; ++j) {
    const Moments<Acc> m = plain_moments(shift[j], ShiftedSums<Acc>{mean[j], var[j]}, count);
    mean[j] = m.mean;
    var[j] = m.var;
  }
}

// Masked moments of region r of one sample per channel, with region total `weight`: mean[j], var[j].
template <typename Acc>
LMT_INLINE void masked_sample_moments(const Acc* records, const PixelRuns& runs, RunRecords layout, int64_t sample,
                                      int64_t r, Acc weight, Acc eps, Acc* mean, Acc* var) {
  const int64_t c = layout.c;
  sample_sums(records, runs, layout, sample, r, mean, var);
  const Acc* shift = sample_shifts(records, runs, layout, sample);
#pragma omp simd
  for (int64_t j = 0; j < c; ++j) {
    const Moments<Acc> m = masked_moments_from_sums(shift[j], ShiftedSums<Acc>{mean[j], var[j]}, weight, eps);
    mean[j] = m.mean;
    var[j] = m.var;
  }
}

}  // namespace detail
}  // namespace cpu
}  // namespace lmt
