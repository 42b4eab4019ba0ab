// instance_norm (statistics per (n, c) over H x W) and layer_norm (per n over C x H x W, GroupNorm(1)),
// both with per-channel affine, activation and residual: y = act(scale_c * (x - mean) + offset_c) + res.
#include <vector>

#include "lmt/cpu_nhwc.h"
#include "lmt/cpu_stats.h"

namespace lmt {
namespace cpu {

using namespace detail;

namespace {

// Elements of one layer_norm sample summed by one task (the sample may be far larger than a cache).
constexpr int64_t kChunk = 16384;

template <typename Acc>
struct Affine {
  Acc scale, offset;
};

template <typename Acc>
LMT_INLINE Affine<Acc> channel_affine(const Acc* weight, const Acc* bias, int64_t channel, Acc rstd) {
  return {weight == nullptr ? rstd : weight[channel] * rstd, bias == nullptr ? Acc(0) : bias[channel]};
}

// y[i] = act(scale * (x[i] - center) + offset) + residual[i] over one contiguous NCHW row.
template <typename T, typename R>
LMT_INLINE void write_affine_row(const T* x, int64_t len, acc_t<T> center, Affine<acc_t<T>> affine,
                                 const R* residual, T* y, Activation activation, acc_t<T>* tile,
                                 acc_t<T>* out_buffer) {
  using Acc = acc_t<T>;
  for (int64_t start = 0; start < len; start += kTile) {
    const int64_t count = std::min(kTile, len - start);
    const Acc* v = load_span(x + start, count, tile);
    Acc* out = output_span(y + start, out_buffer);
#pragma omp simd
    for (int64_t i = 0; i < count; ++i) out[i] = affine.scale * (v[i] - center) + affine.offset;
    finish_span(out, residual == nullptr ? nullptr : residual + start, y + start, count, activation);
  }
}

// y = act(scale_j * (x - center_j) + offset_j) + residual over pixels [begin, end) of one NHWC sample, for
// the kWidth channels from channel j (`width` when kWidth is 0), the block's coefficients in registers
// across the pixels (see cpu_nhwc.h).
template <int64_t kWidth, typename T, typename R>
LMT_INLINE void write_affine_block(const NormArgs<T, R>& a, int64_t sample, int64_t begin, int64_t end, int64_t j,
                                   int64_t width, const acc_t<T>* center, const acc_t<T>* scale,
                                   const acc_t<T>* offset, acc_t<T>* pixel_buffer, acc_t<T>* out_buffer) {
  using Acc = acc_t<T>;
  constexpr int64_t kMax = kWidth > 0 ? kWidth : kChannelBlock<Acc>;
  const int64_t len = kWidth > 0 ? kWidth : width;
  const int64_t c = a.dims.c, hw = a.dims.hw;
  Acc ctr[kMax], sc[kMax], of[kMax];  // locals: not aliased by the stores to y
#pragma omp simd
  for (int64_t q = 0; q < len; ++q) ctr[q] = center[j + q], sc[q] = scale[j + q], of[q] = offset[j + q];
  for (int64_t p = begin; p < end; ++p) {
    const int64_t at = (sample * hw + p) * c + j;
    const Acc* v = load_span(a.x + at, len, pixel_buffer);
    Acc* out = output_span(a.y + at, out_buffer);
#pragma omp simd
    for (int64_t q = 0; q < len; ++q) out[q] = sc[q] * (v[q] - ctr[q]) + of[q];
    finish_span(out, a.residual == nullptr ? nullptr : a.residual + at, a.y + at, len, a.activation);
  }
}

// Pixels [begin, end) of one NHWC sample with that sample's per-channel center, scale and offset, tile by
// tile, a channel block at a time.
template <typename T, typename R>
LMT_VECTOR_CLONES void affine_pixels(const NormArgs<T, R>& a, int64_t sample, int64_t begin, int64_t end,
                                     const acc_t<T>* center, const acc_t<T>* scale, const acc_t<T>* offset,
                                     acc_t<T>* pixel, acc_t<T>* out) {
  constexpr int64_t kBlock = kChannelBlock<acc_t<T>>;
  const int64_t c = a.dims.c;
  for (int64_t start = begin; start < end; start += kPixelTile) {
    const int64_t stop = std::min(end, start + kPixelTile);
    int64_t j = 0;
    for (; j + kBlock <= c; j += kBlock)
      write_affine_block<kBlock>(a, sample, start, stop, j, kBlock, center, scale, offset, pixel, out);
    if (j < c) write_affine_block<0>(a, sample, start, stop, j, c - j, center, scale, offset, pixel, out);
  }
}

template <typename T, typename R>
void affine_pixels_nhwc(const NormArgs<T, R>& a, const std::vector<acc_t<T>>& center,
                        const std::vector<acc_t<T>>& scale, const std::vector<acc_t<T>>& offset) {
  using Acc = acc_t<T>;
  const int64_t n = a.dims.n, c = a.dims.c;
  const bool parallel = worth_parallel(n * c * a.dims.hw);
  const PixelRuns runs = pixel_runs(n, a.dims.hw, parallel ? max_threads() : 1);
  const int64_t tasks = runs.tasks(n);
#pragma omp parallel if (parallel)
  {
    std::vector<Acc> pixel(widening_buffer<T>(kChannelBlock<Acc>)), out(widening_buffer<T>(kChannelBlock<Acc>));
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t s = runs.sample(task) * c;
      affine_pixels(a, runs.sample(task), runs.begin(task), runs.end(task), center.data() + s, scale.data() + s,
                    offset.data() + s, pixel.data(), out.data());
    }
  }
}

template <typename T, typename R>
LMT_VECTOR_CLONES void instance_norm_row(const NormArgs<T, R>& a, int64_t row, acc_t<T>* tile, acc_t<T>* out) {
  using Acc = acc_t<T>;
  const int64_t c = a.dims.c, hw = a.dims.hw;
  const T* x = a.x + row * hw;
  const Moments<Acc> m = row_moments(x, hw, tile);
  const auto affine = channel_affine(a.weight, a.bias, row % c, inverse_std(m.var, Acc(a.eps)));
  write_affine_row(x, hw, m.mean, affine, a.residual == nullptr ? nullptr : a.residual + row * hw, a.y + row * hw,
                   a.activation, tile, out);
}

template <typename T, typename R>
void instance_norm_nchw(const NormArgs<T, R>& a) {
  using Acc = acc_t<T>;
  const int64_t rows = a.dims.n * a.dims.c;
#pragma omp parallel if (worth_parallel(rows * a.dims.hw))
  {
    std::vector<Acc> tile(widening_buffer<T>()), out(widening_buffer<T>());
#pragma omp for schedule(static)
    for (int64_t row = 0; row < rows; ++row) instance_norm_row(a, row, tile.data(), out.data());
  }
}

// Per-thread buffers of the NHWC instance norm: the write coefficients of the sample last prepared (a
// thread's next run is often of the same sample) and widening buffers for a channel block.
template <typename Acc>
struct AffineScratch {
  int64_t sample = -1;
  std::vector<Acc> center, scale, offset;  // [c]
  std::vector<Acc> pixel, out;
  AffineScratch(int64_t c, int64_t buffer) : center(c), scale(c), offset(c), pixel(buffer), out(buffer) {}
};

// center = mean, scale = weight * rstd, offset = bias per channel of one sample, from the runs' sums.
template <typename T, typename R>
LMT_VECTOR_CLONES void instance_coefficients(const NormArgs<T, R>& a, const acc_t<T>* records, const PixelRuns& runs,
                                             int64_t sample, AffineScratch<acc_t<T>>& s) {
  using Acc = acc_t<T>;
  const int64_t c = a.dims.c;
  const Acc eps = Acc(a.eps);
  Acc* scale = s.scale.data();
  Acc* offset = s.offset.data();
  plain_sample_moments(records, runs, RunRecords{c, 1}, sample, s.center.data(), scale);  // var into scale
#pragma omp simd
  for (int64_t j = 0; j < c; ++j) {
    const auto affine = channel_affine(a.weight, a.bias, j, inverse_std(scale[j], eps));
    scale[j] = affine.scale;
    offset[j] = affine.offset;
  }
  s.sample = sample;
}

// NHWC: runs of pixels summed, then written with the coefficients of their sample; one parallel region
// (see sum_then_write).
template <typename T, typename R>
void instance_norm_nhwc(const NormArgs<T, R>& a) {
  using Acc = acc_t<T>;
  const int64_t n = a.dims.n, c = a.dims.c, hw = a.dims.hw;
  const bool parallel = worth_parallel(n * c * hw);
  const PixelRuns runs = pixel_runs(n, hw, parallel ? max_threads() : 1);
  std::vector<Acc> records(runs.tasks(n) * RunRecords{c, 1}.size());
  sum_then_write(
      runs, n, parallel, [&] { return AffineScratch<Acc>(c, widening_buffer<T>(kChannelBlock<Acc>)); },
      [&](int64_t task, AffineScratch<Acc>& s) {
        sum_run_into(a.x, a.dims, runs, task, static_cast<const Acc*>(nullptr), 1, s.pixel.data(), records.data());
      },
      [&](int64_t task, AffineScratch<Acc>& s) {
        const int64_t sample = runs.sample(task);
        if (s.sample != sample) instance_coefficients(a, records.data(), runs, sample, s);
        affine_pixels(a, sample, runs.begin(task), runs.end(task), s.center.data(), s.scale.data(), s.offset.data(),
                      s.pixel.data(), s.out.data());
      });
}

// Shifted sums of elements [start, end) of one layer_norm sample.
template <typename T>
LMT_VECTOR_CLONES ShiftedSums<acc_t<T>> chunk_sums(const T* x, int64_t start, int64_t end, acc_t<T> shift,
                                                   acc_t<T>* tile) {
  LaneSums<acc_t<T>> sums;
  for (int64_t t = start; t < end; t += kTile) {
    const int64_t len = std::min(kTile, end - t);
    add_shifted_sums(load_span(x + t, len, tile), len, shift, sums);
  }
  return sums.fold();
}

// Per-sample moments over C x H x W. Both layouts store a sample contiguously, so the statistics do not
// depend on the layout; the sample is split into chunks summed in parallel around one shared shift.
template <typename T>
std::vector<Moments<acc_t<T>>> sample_moments(const T* x, int64_t n, int64_t per_sample) {
  using Acc = acc_t<T>;
  const int64_t chunks = (per_sample + kChunk - 1) / kChunk;
  std::vector<Acc> shift(n);
  for (int64_t i = 0; i < n; ++i) shift[i] = sample_shift(x + i * per_sample, per_sample, 1);
  std::vector<ShiftedSums<Acc>> partial(n * chunks);
#pragma omp parallel if (worth_parallel(n * per_sample))
  {
    std::vector<Acc> tile(widening_buffer<T>());
#pragma omp for schedule(static)
    for (int64_t task = 0; task < n * chunks; ++task) {
      const int64_t sample = task / chunks;
      const int64_t start = (task % chunks) * kChunk;
      partial[task] = chunk_sums(x + sample * per_sample, start, std::min(per_sample, start + kChunk), shift[sample],
                                 tile.data());
    }
  }
  std::vector<Moments<Acc>> moments(n);
  for (int64_t i = 0; i < n; ++i) {
    ShiftedSums<Acc> sums;
    for (int64_t j = 0; j < chunks; ++j) {
      sums.s1 += partial[i * chunks + j].s1;
      sums.s2 += partial[i * chunks + j].s2;
    }
    moments[i] = plain_moments(shift[i], sums, Acc(per_sample));
  }
  return moments;
}

template <typename T, typename R>
LMT_VECTOR_CLONES void layer_norm_row(const NormArgs<T, R>& a, const Moments<acc_t<T>>& m, int64_t row, acc_t<T>* tile,
                                      acc_t<T>* out) {
  const int64_t hw = a.dims.hw;
  const auto affine = channel_affine(a.weight, a.bias, row % a.dims.c, inverse_std(m.var, acc_t<T>(a.eps)));
  write_affine_row(a.x + row * hw, hw, m.mean, affine, a.residual == nullptr ? nullptr : a.residual + row * hw,
                   a.y + row * hw, a.activation, tile, out);
}

template <typename T, typename R>
void layer_norm_nchw(const NormArgs<T, R>& a, const std::vector<Moments<acc_t<T>>>& moments) {
  using Acc = acc_t<T>;
  const int64_t rows = a.dims.n * a.dims.c;
#pragma omp parallel if (worth_parallel(rows * a.dims.hw))
  {
    std::vector<Acc> tile(widening_buffer<T>()), out(widening_buffer<T>());
#pragma omp for schedule(static)
    for (int64_t row = 0; row < rows; ++row) layer_norm_row(a, moments[row / a.dims.c], row, tile.data(), out.data());
  }
}

template <typename T, typename R>
void layer_norm_nhwc(const NormArgs<T, R>& a, const std::vector<Moments<acc_t<T>>>& moments) {
  using Acc = acc_t<T>;
  const int64_t n = a.dims.n, c = a.dims.c;
  std::vector<Acc> center(n * c), scale(n * c), offset(n * c);
  for (int64_t i = 0; i < n * c; ++i) {
    const Moments<Acc>& m = moments[i / c];
    const auto affine = channel_affine(a.weight, a.bias, i % c, inverse_std(m.var, Acc(a.eps)));
    center[i] = m.mean;
    scale[i] = affine.scale;
    offset[i] = affine.offset;
  }
  affine_pixels_nhwc(a, center, scale, offset);
}

}  // namespace

template <typename T, typename R>
void instance_norm(const NormArgs<T, R>& args) {
  if (args.layout == Layout::kNHWC) {
    instance_norm_nhwc(args);
  } else {
    instance_norm_nchw(args);
  }
}

template <typename T, typename R>
void layer_norm(const NormArgs<T, R>& args) {
  const auto moments = sample_moments(args.x, args.dims.n, args.dims.c * args.dims.hw);
  if (args.layout == Layout::kNHWC) {
    layer_norm_nhwc(args, moments);
  } else {
    layer_norm_nchw(args, moments);
  }
}

#define LMT_INSTANTIATE_NORMS(T, R)                              \
  template void instance_norm<T, R>(const NormArgs<T, R>&); \
  template void layer_norm<T, R>(const NormArgs<T, R>&);

LMT_INSTANTIATE_NORMS(float, float)
LMT_INSTANTIATE_NORMS(double, double)
LMT_INSTANTIATE_NORMS(bf16, bf16)
LMT_INSTANTIATE_NORMS(bf16, float)
LMT_INSTANTIATE_NORMS(fp16, fp16)
LMT_INSTANTIATE_NORMS(fp16, float)

#undef LMT_INSTANTIATE_NORMS

}  // namespace cpu
}  // namespace lmt
