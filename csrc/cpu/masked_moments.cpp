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

}  // namespace

template <typename T>
void masked_moments(const MaskedMomentsArgs<T>& a) {
  using Acc = acc_t<T>;
  const int64_t n = a.dims.n, c = a.dims.c, hw = a.dims.hw, k = a.k;
  const std::vector<Acc> weights = mask_weights(a.masks, n * k, hw);
  if (a.layout == Layout::kNHWC) {
    std::vector<Acc> shift;
    std::vector<Moments<Acc>> moments;
    nhwc_moments(a.x, a.dims, pixel_runs(n, hw), a.masks, weights.data(), k, Acc(a.eps), shift, moments);
    for (int64_t i = 0; i < n * k * c; ++i) {
      a.mean[i] = moments[i].mean;
      a.var[i] = moments[i].var;
    }
    return;
  }
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
