// Split path, stage 2: one warp per (statistics row, set) merges the row's tile partials and turns
// them into the op's result: the masked_moments outputs, or the per-(n, k, c) parameters
// (mean, scale, shift) that the apply kernel uses. The merge order is fixed (lanes stride over tiles,
// then a butterfly), so results are deterministic run to run.
#include "common.cuh"
#include "kernels.cuh"

namespace lmt {
namespace gpu {
namespace {

constexpr int kCombineThreads = 256;

__global__ void __launch_bounds__(kCombineThreads) combine_kernel(const OpArgs a, const float4* partials,
                                                                  int64_t tiles, Params out) {
  const int64_t job = (int64_t(blockIdx.x) * kCombineThreads + threadIdx.x) / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int sets = a.stat_sets();
  if (job >= a.stat_rows() * sets) return;  // uniform per warp: the shuffles below stay full-warp

  const float4* src = partials + job * tiles;
  Moments m{0.f, 0.f, 0.f, 0.f};
  for (int64_t t = lane; t < tiles; t += kWarpSize) m = combine(m, from_float4(src[t]));
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) m = combine(m, shfl_xor(m, offset));
  float mean, var;
  finalize(m, a.masked_stats, a.eps, mean, var);

  const int64_t row = job / sets;
  const int k = static_cast<int>(job - row * sets);
  if (a.mean_out != nullptr) {  // masked_moments: row = (n, c), set = region
    if (lane == 0) {
      const int64_t n = row / a.c, ch = row - n * a.c;
      const int64_t idx = (n * a.k + k) * a.c + ch;
      a.mean_out[idx] = mean;
      a.var_out[idx] = var;
    }
    return;
  }
  const float rstd = rsqrtf(var + a.eps);
  if (a.per_sample) {  // layer norm: row = n; one set of parameters per channel
    for (int64_t ch = lane; ch < a.c; ch += kWarpSize) {
      const int64_t idx = row * a.c + ch;
      out.mean[idx] = mean;
      out.scale[idx] = (a.weight != nullptr ? a.weight[ch] : 1.f) * rstd;
      out.shift[idx] = a.bias != nullptr ? a.bias[ch] : 0.f;
    }
    return;
  }
  const int64_t n = row / a.c, ch = row - n * a.c;
  if (!a.mix) {  // instance norm
    if (lane == 0) {
      out.mean[row] = mean;
      out.scale[row] = (a.weight != nullptr ? a.weight[ch] : 1.f) * rstd;
      out.shift[row] = a.bias != nullptr ? a.bias[ch] : 0.f;
    }
    return;
  }
  // region_adain: region statistics give set k its own parameters; global statistics are shared by
  // all K regions, each with its own gamma and beta.
  const int first = a.masked_stats ? k : lane;
  const int step = a.masked_stats ? a.k : kWarpSize;
  if (a.masked_stats && lane != 0) return;
  for (int r = first; r < a.k; r += step) {
    const int64_t idx = (n * a.k + r) * a.c + ch;
    out.mean[idx] = mean;
    out.scale[idx] = a.gamma[idx] * rstd;
    out.shift[idx] = a.beta[idx];
  }
}

}  // namespace

cudaError_t launch_combine(const OpArgs& a, const float4* partials, int64_t tiles, Params params,
                           cudaStream_t stream) {
  const int64_t jobs = a.stat_rows() * a.stat_sets();
  const int64_t warps_per_block = kCombineThreads / kWarpSize;
  const unsigned blocks = static_cast<unsigned>(ceil_div(jobs, warps_per_block));
  combine_kernel<<<blocks, kCombineThreads, 0, stream>>>(a, partials, tiles, params);
  return cudaGetLastError();
}

}  // namespace gpu
}  // namespace lmt
