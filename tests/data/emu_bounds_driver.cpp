// Runs every entry point of csrc/cuda (built against the CUDA emulator, under AddressSanitizer) over a set
// of shapes, dtypes, layouts and pipelines with every buffer allocated to its exact size: any read or
// write outside x, y, masks, gamma, beta, weight, bias, residual, mean, var or the workspace is reported by
// ASan. Values are not checked here (tests/test_cuda_emulated.py compares them with the spec).
// Used by tests/test_cuda_emulated.py::test_kernels_stay_inside_every_buffer.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "lmt/cuda_kernels.h"

namespace {

// An exactly sized, 16-byte aligned buffer with random contents (ASan's redzone starts at its end).
struct Exact {
  void* p = nullptr;
  explicit Exact(size_t bytes, unsigned seed) {
    if (bytes == 0) return;
    if (posix_memalign(&p, 16, bytes) != 0) std::abort();
    auto* b = static_cast<unsigned char*>(p);
    for (size_t i = 0; i < bytes; ++i) b[i] = static_cast<unsigned char>((seed + i * 2654435761u) >> 24);
    // Keep float32 inputs finite and modest: a pattern of small positive floats.
    if (bytes % 4 == 0)
      for (size_t i = 0; i < bytes / 4; ++i) static_cast<float*>(p)[i] = 0.25f + 0.001f * static_cast<float>(i % 97);
  }
  ~Exact() { std::free(p); }
  Exact(const Exact&) = delete;
  Exact& operator=(const Exact&) = delete;
};

size_t element_size(lmt_dtype d) { return d == LMT_DTYPE_F32 ? 4 : 2; }

int failures = 0;

void expect_ok(cudaError_t status, const char* what, int64_t n, int64_t c, int64_t h, int64_t w) {
  if (status == cudaSuccess) return;
  std::printf("FAIL %s (%lld,%lld,%lld,%lld): status %d\n", what, static_cast<long long>(n),
              static_cast<long long>(c), static_cast<long long>(h), static_cast<long long>(w), static_cast<int>(status));
  ++failures;
}

void run_shape(lmt_dtype dtype, lmt_layout layout, lmt_path path, int64_t n, int64_t c, int64_t h, int64_t w,
               int64_t k) {
  const size_t count = static_cast<size_t>(n * c * h * w), es = element_size(dtype);
  // LMT_EMU_SHORT_X=1 allocates x one element short: the test's proof that ASan does catch an overrun.
  const size_t x_count = std::getenv("LMT_EMU_SHORT_X") != nullptr ? count - 1 : count;
  Exact x(x_count * es, 1), y(count * es, 2), residual(count * es, 3), masks(sizeof(float) * n * k * h * w, 4);
  Exact gamma(sizeof(float) * n * k * c, 5), beta(sizeof(float) * n * k * c, 6);
  Exact mean(sizeof(float) * n * k * c, 7), var(sizeof(float) * n * k * c, 8);
  Exact weight(sizeof(float) * c, 9), bias(sizeof(float) * c, 10);
  const float* m = static_cast<const float*>(masks.p);
  {
    const size_t bytes = lmt_cuda_workspace_size(LMT_OP_MASKED_MOMENTS, dtype, layout, n, c, h, w, k);
    Exact ws(bytes, 11);
    expect_ok(lmt_cuda_masked_moments(x.p, dtype, layout, n, c, h, w, m, k, 1e-5f, static_cast<float*>(mean.p),
                                      static_cast<float*>(var.p), ws.p, bytes, path, nullptr),
              "masked_moments", n, c, h, w);
  }
  for (int stats = 0; stats < 2; ++stats) {
    const size_t bytes = lmt_cuda_workspace_size(LMT_OP_REGION_ADAIN, dtype, layout, n, c, h, w, k);
    Exact ws(bytes, 12);
    expect_ok(lmt_cuda_region_adain(x.p, y.p, dtype, layout, n, c, h, w, m, k, static_cast<const float*>(gamma.p),
                                    static_cast<const float*>(beta.p), stats, 1e-5f, LMT_ACTIVATION_RELU, residual.p,
                                    dtype, ws.p, bytes, path, nullptr),
              "region_adain", n, c, h, w);
  }
  const lmt_op norms[2] = {LMT_OP_INSTANCE_NORM, LMT_OP_LAYER_NORM};
  for (lmt_op op : norms) {
    const size_t bytes = lmt_cuda_workspace_size(op, dtype, layout, n, c, h, w, 1);
    Exact ws(bytes, 13);
    auto fn = op == LMT_OP_INSTANCE_NORM ? lmt_cuda_instance_norm : lmt_cuda_layer_norm;
    expect_ok(fn(x.p, y.p, dtype, layout, n, c, h, w, static_cast<const float*>(weight.p),
                 static_cast<const float*>(bias.p), 1e-5f, LMT_ACTIVATION_LEAKY_RELU, residual.p, dtype, ws.p, bytes,
                 path, nullptr),
              op == LMT_OP_INSTANCE_NORM ? "instance_norm" : "layer_norm", n, c, h, w);
  }
}

}  // namespace

int main() {
  // (N, C, H, W, K): odd sizes (scalar path), vector-friendly sizes, a row of two split tiles, C not a
  // multiple of the NHWC channel chunk.
  const int64_t shapes[][5] = {{1, 5, 13, 17, 2}, {2, 16, 8, 16, 3}, {1, 40, 8, 8, 2}, {1, 2, 65, 67, 2},
                               {2, 33, 7, 9, 3}};
  // bfloat16 has float16's access widths: the same indexing.
  const lmt_dtype dtypes[2] = {LMT_DTYPE_F32, LMT_DTYPE_F16};
  const lmt_layout layouts[2] = {LMT_LAYOUT_NCHW, LMT_LAYOUT_NHWC};
  const lmt_path paths[3] = {LMT_PATH_AUTO, LMT_PATH_ONEPASS, LMT_PATH_SPLIT};
  int calls = 0;
  for (const auto& s : shapes)
    for (lmt_dtype d : dtypes)
      for (lmt_layout l : layouts)
        for (lmt_path p : paths) {
          if (l == LMT_LAYOUT_NHWC && p != LMT_PATH_AUTO) continue;  // NHWC always takes the split path
          run_shape(d, l, p, s[0], s[1], s[2], s[3], s[4]);
          calls += 5;
        }
  std::printf("%d calls, %d failed\n", calls, failures);
  return failures == 0 ? 0 : 1;
}
