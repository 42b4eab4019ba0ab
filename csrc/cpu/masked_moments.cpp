// masked_moments: per-(n, k, c) mask-weighted mean and centred variance, one sweep over x.
#include <vector>

#include "lmt/cpu_nhwc.h"
#include "lmt/cpu_stats.h"

namespace lmt {
namespace cpu {

using namespace detail;

namespace {

template <typename Acc>
struct RowScratch {
  std::vector<Acc> tile;
  std::vector<LaneSums<Acc>> sums;
  std::vector<Moments<Acc>> moments;
  explicit RowScratch(int64_t k) : tile(kTile), sums(k), moments(k) {}
};

// One NCHW row: the (n, c) plane against the K masks of sample n.
template <typename T>
LMT_VECTOR_CLONES void moments_of_row(const MaskedMomentsArgs<T>& a, const acc_t<T>* weights, int64_t row,
                                      RowScratch<acc_t<T>>& s) {
  using Acc = acc_t<T>;
  const int64_t c = a.dims.c, hw = a.dims.hw, k = a.k;
  const int64_t sample = row / c, channel = row % c;
  row_masked_moments(a.x + row * hw, hw, a.masks + sample * k * hw, weights + sample * k, k, Acc(a.eps),
                     s.tile.data(), s.sums.data(), s.moments.data());
  for (int64_t r = 0; r < k; ++r) {
    const int64_t out = (sample * k + r) * c + channel;
    a.mean[out] = s.moments[r].mean;
    a.var[out] = s.moments[r].var;
  }
}

// NHWC: runs of pixels summed, then the first run of each sample writes the sample's moments.
template <typename T>
void masked_moments_nhwc(const MaskedMomentsArgs<T>& a, const std::vector<acc_t<T>>& weights) {
  using Acc = acc_t<T>;
  const int64_t n = a.dims.n, c = a.dims.c, hw = a.dims.hw, k = a.k;
  const bool parallel = worth_parallel(n * c * hw);
  const PixelRuns runs = pixel_runs(n, hw, parallel ? max_threads() : 1);
  const RunRecords layout{c, k};
  std::vector<Acc> records(runs.tasks(n) * layout.size());
  sum_then_write(
      runs, n, parallel, [] { return std::vector<Acc>(widening_buffer<T>(kChannelBlock<Acc>)); },
      [&](int64_t task, std::vector<Acc>& buffer) {
        sum_run_into(a.x, a.dims, runs, task, a.masks, k, buffer.data(), records.data());
      },
      [&](int64_t task, std::vector<Acc>&) {
        if (runs.begin(task) != 0) return;
        const int64_t sample = runs.sample(task);
        for (int64_t r = 0; r < k; ++r) {
          const int64_t out = (sample * k + r) * c;
          masked_sample_moments(records.data(), runs, layout, sample, r, weights[sample * k + r], Acc(a.eps),
                                a.mean + out, a.var + out);
        }
      });
}

}  // namespace

template <typename T>
void masked_moments(const MaskedMomentsArgs<T>& a) {
  using Acc = acc_t<T>;
  const int64_t n = a.dims.n, c = a.dims.c, hw = a.dims.hw, k = a.k;
  const std::vector<Acc> weights = mask_weights(a.masks, n * k, hw);
  if (a.layout == Layout::kNHWC) return masked_moments_nhwc(a, weights);
#pragma omp parallel if (worth_parallel(n * c * hw))
  {
    RowScratch<Acc> scratch(k);
#pragma omp for schedule(static)
    for (int64_t row = 0; row < n * c; ++row) moments_of_row(a, weights.data(), row, scratch);
  }
}

template void masked_moments<float>(const MaskedMomentsArgs<float>&);
template void masked_moments<double>(const MaskedMomentsArgs<double>&);
template void masked_moments<bf16>(const MaskedMomentsArgs<bf16>&);
template void masked_moments<fp16>(const MaskedMomentsArgs<fp16>&);

}  // namespace cpu
}  // namespace lmt
