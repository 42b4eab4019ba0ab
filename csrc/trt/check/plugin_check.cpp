// plugin_check: exercises liblmt_trt_plugin.so the way TensorRT does, without TensorRT's libraries.
//
//     plugin_check path/to/liblmt_trt_plugin.so            host-side checks (no GPU needed)
//     plugin_check path/to/liblmt_trt_plugin.so --gpu      + enqueue on the GPU against a float64 reference
//     plugin_check path/to/liblmt_trt_plugin.so --static   the static-registration variant, linked against
//                                                          fake_nvinfer (check/fake_nvinfer.cpp): loading it
//                                                          must register the creator (trtexec --staticPlugins)
//
// Host side: dlopen + the entry points TensorRT's IPluginRegistry::loadLibrary looks up (getCreators,
// setLoggerFinder), the creator's identity and fields, createPlugin with the fields TensorRT's ONNX parser
// passes (strings with their NUL), the capability interfaces, the serialisation round trip, output
// types and shapes, supportsFormatCombination, configurePlugin / onShapeChange shape checks, workspace,
// and the errors for bad fields and shapes. GPU side: enqueue for float32 / float16 / bfloat16, both
// statistics modes, activations, residuals, empty regions, odd sizes and both kernel paths, compared with
// a float64 reference of lmt_fast.ops.reference.region_adain.
//
// Only TensorRT's headers are used (the plugin interfaces are abstract classes). Prints one line per
// check; the exit status is the number of failed checks (0: all passed).
#include <NvInferRuntime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;

namespace {

int g_failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAIL", what.c_str());
  if (!ok) ++g_failures;
}

// Collects what the plugin logs (TensorRT hands the library a logger through setLoggerFinder).
class CapturingLogger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kWARNING) last = msg;
  }
  std::string last;
};

class Finder : public nvinfer1::ILoggerFinder {
 public:
  explicit Finder(nvinfer1::ILogger* logger) : logger_(logger) {}
  nvinfer1::ILogger* findLogger() override { return logger_; }

 private:
  nvinfer1::ILogger* logger_;
};

// Stands in for TensorRT's expression builder; the plugin only copies x's expressions.
struct UnusedExprBuilder : nvinfer1::IExprBuilder {};

CapturingLogger g_logger;

Dims dims(std::initializer_list<int64_t> sizes) {
  Dims d{};
  d.nbDims = static_cast<int32_t>(sizes.size());
  int i = 0;
  for (int64_t s : sizes) d.d[i++] = s;
  return d;
}

PluginTensorDesc desc(const Dims& d, DataType type, TensorFormat format = TensorFormat::kLINEAR) {
  PluginTensorDesc t{};
  t.dims = d;
  t.type = type;
  t.format = format;
  t.scale = -1.f;
  return t;
}

DynamicPluginTensorDesc dyn(const Dims& d, DataType type, const Dims& max, TensorFormat f = TensorFormat::kLINEAR) {
  DynamicPluginTensorDesc t{};
  t.desc = desc(d, type, f);
  t.min = max;
  t.opt = max;
  t.max = max;
  return t;
}

struct Fields {
  float eps = 1e-5f;
  std::string activation = "none";
  std::string stats = "global";
  std::vector<PluginField> list;
  PluginFieldCollection fc{};
  // As TensorRT's ONNX parser passes string attributes: the bytes plus a NUL, length counting both.
  const PluginFieldCollection* get() {
    list.clear();
    list.emplace_back("eps", &eps, PluginFieldType::kFLOAT32, 1);
    list.emplace_back("activation", activation.c_str(), PluginFieldType::kCHAR,
                      static_cast<int32_t>(activation.size() + 1));
    list.emplace_back("stats", stats.c_str(), PluginFieldType::kCHAR, static_cast<int32_t>(stats.size() + 1));
    fc.nbFields = static_cast<int32_t>(list.size());
    fc.fields = list.data();
    return &fc;
  }
};

struct Plugin {
  nvinfer1::IPluginV3* v3 = nullptr;
  nvinfer1::IPluginV3OneCore* core = nullptr;
  nvinfer1::IPluginV3OneBuild* build = nullptr;
  nvinfer1::IPluginV3OneRuntime* runtime = nullptr;
  explicit Plugin(nvinfer1::IPluginV3* p) : v3(p) {
    if (p == nullptr) return;
    core = static_cast<nvinfer1::IPluginV3OneCore*>(p->getCapabilityInterface(nvinfer1::PluginCapabilityType::kCORE));
    build =
        static_cast<nvinfer1::IPluginV3OneBuild*>(p->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD));
    runtime = static_cast<nvinfer1::IPluginV3OneRuntime*>(
        p->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
  }
  ~Plugin() { delete v3; }
  Plugin(const Plugin&) = delete;
  Plugin& operator=(const Plugin&) = delete;
};

std::string field_text(const PluginFieldCollection* fc, const char* name) {
  for (int32_t i = 0; i < fc->nbFields; ++i) {
    const PluginField& f = fc->fields[i];
    if (std::strcmp(f.name, name) != 0) continue;
    if (f.type == PluginFieldType::kCHAR) return std::string(static_cast<const char*>(f.data));
    if (f.type == PluginFieldType::kFLOAT32) return std::to_string(*static_cast<const float*>(f.data));
  }
  return "<missing>";
}

const char* type_label(DataType t) {
  return t == DataType::kFLOAT ? "float32" : t == DataType::kHALF ? "float16" : t == DataType::kBF16 ? "bfloat16"
                                                                                                      : "other";
}

// ---- host-side checks -------------------------------------------------------------------------------------

void host_checks(nvinfer1::IPluginCreatorV3One* creator) {
  using nvinfer1::TensorRTPhase;
  check(std::strcmp(creator->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0, "creator is IPluginCreatorV3One");
  check(std::strcmp(creator->getPluginName(), "RegionAdaIN") == 0 &&
            std::strcmp(creator->getPluginVersion(), "1") == 0 &&
            std::strcmp(creator->getPluginNamespace(), "lmt") == 0,
        "creator identity RegionAdaIN / 1 / lmt (the ONNX node's op type, plugin_version, plugin_namespace)");
  const PluginFieldCollection* names = creator->getFieldNames();
  bool fields_ok = names != nullptr && names->nbFields == 3;
  if (fields_ok) {
    fields_ok = std::strcmp(names->fields[0].name, "eps") == 0 && names->fields[0].type == PluginFieldType::kFLOAT32 &&
                std::strcmp(names->fields[1].name, "activation") == 0 &&
                names->fields[1].type == PluginFieldType::kCHAR && std::strcmp(names->fields[2].name, "stats") == 0 &&
                names->fields[2].type == PluginFieldType::kCHAR;
  }
  check(fields_ok, "getFieldNames: eps (float32), activation (char), stats (char)");

  Fields f;
  f.eps = 2e-5f;
  f.activation = "lrelu";
  f.stats = "region";
  Plugin p(creator->createPlugin("node_0", f.get(), TensorRTPhase::kBUILD));
  check(p.v3 != nullptr && p.core != nullptr && p.build != nullptr && p.runtime != nullptr,
        "createPlugin(kBUILD) gives a plugin with core, build and runtime capabilities");
  if (p.v3 == nullptr || p.core == nullptr || p.build == nullptr || p.runtime == nullptr) return;
  check(std::strcmp(p.v3->getInterfaceInfo().kind, "PLUGIN") == 0 &&
            std::strcmp(p.core->getInterfaceInfo().kind, "PLUGIN_V3ONE_CORE") == 0 &&
            std::strcmp(p.build->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") == 0 &&
            std::strcmp(p.runtime->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME") == 0,
        "capability interfaces report their kinds");
  check(std::strcmp(p.core->getPluginName(), "RegionAdaIN") == 0 && std::strcmp(p.core->getPluginVersion(), "1") == 0 &&
            std::strcmp(p.core->getPluginNamespace(), "lmt") == 0,
        "plugin identity matches the creator");
  check(p.build->getNbOutputs() == 1, "one output");
  const std::string meta = p.build->getMetadataString() ? p.build->getMetadataString() : "";
  check(meta == "eps=1.99999995e-05 activation=lrelu stats=region", "metadata string: " + meta);

  // Serialisation round trip: the fields to serialise recreate the same plugin at run time.
  const PluginFieldCollection* saved = p.runtime->getFieldsToSerialize();
  check(saved != nullptr && field_text(saved, "activation") == "lrelu" && field_text(saved, "stats") == "region",
        "getFieldsToSerialize holds activation and stats");
  Plugin q(creator->createPlugin("node_0", saved, TensorRTPhase::kRUNTIME));
  check(q.build != nullptr && meta == q.build->getMetadataString(),
        "createPlugin(kRUNTIME) from the serialised fields restores the attributes");

  Plugin defaults(creator->createPlugin("node_1", nullptr, TensorRTPhase::kBUILD));
  check(defaults.build != nullptr &&
            std::string(defaults.build->getMetadataString()) == "eps=9.99999975e-06 activation=none stats=global",
        "missing fields take the exporter's defaults (eps 1e-5, none, global)");

  Fields bad;
  bad.activation = "gelu";
  g_logger.last.clear();
  nvinfer1::IPluginV3* none = creator->createPlugin("node_2", bad.get(), TensorRTPhase::kBUILD);
  check(none == nullptr && g_logger.last.find("activation must be 'none', 'relu' or 'lrelu', got 'gelu'") !=
                               std::string::npos,
        "unknown activation: no plugin, and the logged error says why (" + g_logger.last + ")");
  delete none;
  Fields negative;
  negative.eps = -1.f;
  none = creator->createPlugin("node_3", negative.get(), TensorRTPhase::kBUILD);
  check(none == nullptr && g_logger.last.find("eps must be") != std::string::npos, "eps <= 0 is refused");
  delete none;

  // Output types and shapes.
  DataType out_type = DataType::kFLOAT;
  const DataType half_in[4] = {DataType::kHALF, DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT};
  check(p.build->getOutputDataTypes(&out_type, 1, half_in, 4) == 0 && out_type == DataType::kHALF,
        "getOutputDataTypes: y has x's type");
  const DataType bf16_res[5] = {DataType::kBF16, DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT,
                                DataType::kBF16};
  check(p.build->getOutputDataTypes(&out_type, 1, bf16_res, 5) == 0 && out_type == DataType::kBF16,
        "getOutputDataTypes: bfloat16 with a residual");
  const DataType half_masks[4] = {DataType::kHALF, DataType::kHALF, DataType::kFLOAT, DataType::kFLOAT};
  check(p.build->getOutputDataTypes(&out_type, 1, half_masks, 4) != 0 &&
            g_logger.last.find("masks must be float32") != std::string::npos,
        "getOutputDataTypes refuses float16 masks");

  UnusedExprBuilder builder;
  DimsExprs in_exprs[4]{};
  const int32_t ranks[4] = {4, 4, 3, 3};
  static const char tokens[16] = {};
  for (int i = 0; i < 4; ++i) {
    in_exprs[i].nbDims = ranks[i];
    for (int a = 0; a < ranks[i]; ++a)
      in_exprs[i].d[a] = reinterpret_cast<const nvinfer1::IDimensionExpr*>(tokens + 4 * i + a);
  }
  DimsExprs out_exprs[1]{};
  const int32_t shaped = p.build->getOutputShapes(in_exprs, 4, nullptr, 0, out_exprs, 1, builder);
  bool same = shaped == 0 && out_exprs[0].nbDims == 4;
  for (int a = 0; same && a < 4; ++a) same = out_exprs[0].d[a] == in_exprs[0].d[a];
  check(same, "getOutputShapes: y has x's shape");
  in_exprs[2].nbDims = 4;
  check(p.build->getOutputShapes(in_exprs, 4, nullptr, 0, out_exprs, 1, builder) != 0,
        "getOutputShapes: rank-4 gamma is refused");
  check(p.build->getOutputShapes(in_exprs, 3, nullptr, 0, out_exprs, 1, builder) != 0,
        "getOutputShapes: 3 inputs are refused");

  // supportsFormatCombination, position by position as TensorRT asks.
  const Dims x = dims({-1, 8, 16, 16}), m = dims({-1, 2, 16, 16}), g = dims({-1, 2, 8});
  auto combo = [&](DataType xt, DataType mt, DataType yt, TensorFormat fmt, int nb_inputs, DataType rt) {
    DynamicPluginTensorDesc io[6] = {dyn(x, xt, x, fmt), dyn(m, mt, m), dyn(g, DataType::kFLOAT, g),
                                     dyn(g, DataType::kFLOAT, g), dyn(x, rt, x), dyn(x, yt, x)};
    if (nb_inputs == 4) io[4] = io[5];
    for (int pos = 0; pos < nb_inputs + 1; ++pos)
      if (!p.build->supportsFormatCombination(pos, io, nb_inputs, 1)) return false;
    return true;
  };
  for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16}) {
    check(combo(t, DataType::kFLOAT, t, TensorFormat::kLINEAR, 4, t), std::string("supports linear ") + type_label(t) +
                                                                          " x and y");
    check(combo(t, DataType::kFLOAT, t, TensorFormat::kLINEAR, 5, DataType::kFLOAT),
          std::string("supports a float32 residual with ") + type_label(t) + " x");
  }
  check(!combo(DataType::kINT8, DataType::kFLOAT, DataType::kINT8, TensorFormat::kLINEAR, 4, DataType::kFLOAT),
        "int8 x is not supported");
  check(!combo(DataType::kHALF, DataType::kHALF, DataType::kHALF, TensorFormat::kLINEAR, 4, DataType::kFLOAT),
        "float16 masks are not supported");
  check(!combo(DataType::kHALF, DataType::kFLOAT, DataType::kFLOAT, TensorFormat::kLINEAR, 4, DataType::kFLOAT),
        "y of another type than x is not supported");
  check(!combo(DataType::kHALF, DataType::kFLOAT, DataType::kHALF, TensorFormat::kHWC8, 4, DataType::kFLOAT),
        "only the linear (NCHW) format is supported");

  // configurePlugin / onShapeChange check the sizes the inputs share.
  {
    DynamicPluginTensorDesc in[4] = {dyn(x, DataType::kHALF, dims({8, 8, 64, 64})),
                                     dyn(m, DataType::kFLOAT, dims({8, 2, 64, 64})),
                                     dyn(g, DataType::kFLOAT, dims({8, 2, 8})),
                                     dyn(g, DataType::kFLOAT, dims({8, 2, 8}))};
    DynamicPluginTensorDesc out[1] = {dyn(x, DataType::kHALF, dims({8, 8, 64, 64}))};
    check(p.build->configurePlugin(in, 4, out, 1) == 0, "configurePlugin accepts consistent shapes with dynamic batch");
    in[1].desc.dims = dims({-1, 2, 16, 15});
    const bool refused = p.build->configurePlugin(in, 4, out, 1) != 0;
    check(refused && g_logger.last.find("masks must have shape (N, K, H, W) with x's N, H, W") != std::string::npos,
          "configurePlugin refuses masks of another H x W: " + g_logger.last);
    in[1].desc.dims = m;
    in[2].desc.dims = dims({-1, 3, 8});
    check(p.build->configurePlugin(in, 4, out, 1) != 0 && g_logger.last.find("gamma must have shape (N, K, C)") !=
                                                             std::string::npos,
          "configurePlugin refuses gamma with another K");
    in[2].desc.dims = g;
    const size_t bytes = p.build->getWorkspaceSize(in, 4, out, 1);
    check(bytes > 0, "getWorkspaceSize for the profile's largest shapes: " + std::to_string(bytes) + " bytes");
    DynamicPluginTensorDesc small[4] = {in[0], in[1], in[2], in[3]};
    small[0].max = dims({1, 8, 64, 64});
    small[1].max = dims({1, 2, 64, 64});
    check(p.build->getWorkspaceSize(small, 4, out, 1) <= bytes, "the workspace grows with the batch");
  }
  {
    PluginTensorDesc in[5] = {desc(dims({2, 8, 16, 16}), DataType::kFLOAT),
                              desc(dims({2, 2, 16, 16}), DataType::kFLOAT),
                              desc(dims({2, 2, 8}), DataType::kFLOAT), desc(dims({2, 2, 8}), DataType::kFLOAT),
                              desc(dims({2, 8, 16, 16}), DataType::kFLOAT)};
    PluginTensorDesc out[1] = {desc(dims({2, 8, 16, 16}), DataType::kFLOAT)};
    check(p.runtime->onShapeChange(in, 5, out, 1) == 0, "onShapeChange accepts consistent run-time shapes");
    in[3].dims = dims({2, 2, 9});
    check(p.runtime->onShapeChange(in, 5, out, 1) != 0 &&
              g_logger.last.find("beta must have shape") != std::string::npos,
          "onShapeChange refuses beta with another C");
    in[3].dims = dims({2, 2, 8});
    in[4].dims = dims({2, 8, 16, 17});
    check(p.runtime->onShapeChange(in, 5, out, 1) != 0 &&
              g_logger.last.find("residual must have x's shape") != std::string::npos,
          "onShapeChange refuses a residual of another shape");
    in[1].dims = dims({2, 2000, 16, 16});
    in[2].dims = in[3].dims = dims({2, 2000, 8});
    in[4].dims = in[0].dims;
    check(p.runtime->onShapeChange(in, 5, out, 1) != 0 &&
              g_logger.last.find("regions, got K = 2000") != std::string::npos,
          "onShapeChange refuses K above LMT_CUDA_MAX_REGIONS");
  }
  nvinfer1::IPluginV3* copy = p.v3->clone();
  nvinfer1::IPluginV3* attached = p.runtime->attachToContext(nullptr);
  check(copy != nullptr && attached != nullptr && attached != p.v3, "clone and attachToContext give new plugins");
  delete copy;
  delete attached;
}

// ---- GPU checks -------------------------------------------------------------------------------------------

struct Case {
  DataType type;
  int64_t n, c, h, w, k;
  int region_stats;
  const char* activation;
  bool residual;
  const char* path;  // LMT_FAST_CUDA_FORCE_PATH
};

float round_to(DataType t, float v) {
  if (t == DataType::kHALF) return __half2float(__float2half_rn(v));
  if (t == DataType::kBF16) return __bfloat162float(__float2bfloat16_rn(v));
  return v;
}

std::vector<unsigned char> pack(DataType t, const std::vector<float>& v) {
  const size_t size = t == DataType::kFLOAT ? 4 : 2;
  std::vector<unsigned char> bytes(v.size() * size);
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DataType::kHALF) {
      const __half h = __float2half_rn(v[i]);
      std::memcpy(&bytes[i * 2], &h, 2);
    } else if (t == DataType::kBF16) {
      const __nv_bfloat16 b = __float2bfloat16_rn(v[i]);
      std::memcpy(&bytes[i * 2], &b, 2);
    } else {
      std::memcpy(&bytes[i * 4], &v[i], 4);
    }
  }
  return bytes;
}

std::vector<float> unpack(DataType t, const std::vector<unsigned char>& bytes, size_t count) {
  std::vector<float> v(count);
  for (size_t i = 0; i < count; ++i) {
    if (t == DataType::kHALF) {
      __half h;
      std::memcpy(&h, &bytes[i * 2], 2);
      v[i] = __half2float(h);
    } else if (t == DataType::kBF16) {
      __nv_bfloat16 b;
      std::memcpy(&b, &bytes[i * 2], 2);
      v[i] = __bfloat162float(b);
    } else {
      std::memcpy(&v[i], &bytes[i * 4], 4);
    }
  }
  return v;
}

// lmt_fast.ops.reference.region_adain in float64 on the stored (rounded) inputs.
std::vector<double> reference(const Case& cs, float eps, const std::vector<float>& x, const std::vector<float>& m,
                              const std::vector<float>& gamma, const std::vector<float>& beta,
                              const std::vector<float>& residual) {
  const int64_t hw = cs.h * cs.w;
  std::vector<double> y(x.size(), 0.0);
  for (int64_t n = 0; n < cs.n; ++n) {
    for (int64_t c = 0; c < cs.c; ++c) {
      const float* xr = &x[(n * cs.c + c) * hw];
      double* yr = &y[(n * cs.c + c) * hw];
      double g_mean = 0, g_var = 0;
      for (int64_t i = 0; i < hw; ++i) g_mean += xr[i];
      g_mean /= static_cast<double>(hw);
      for (int64_t i = 0; i < hw; ++i) g_var += (xr[i] - g_mean) * (xr[i] - g_mean);
      g_var /= static_cast<double>(hw);
      for (int64_t k = 0; k < cs.k; ++k) {
        const float* mr = &m[(n * cs.k + k) * hw];
        double mean = g_mean, var = g_var;
        if (cs.region_stats) {
          double weight = 0, sum = 0, sq = 0;
          for (int64_t i = 0; i < hw; ++i) {
            weight += mr[i];
            sum += mr[i] * static_cast<double>(xr[i]);
          }
          mean = sum / (weight + eps);
          for (int64_t i = 0; i < hw; ++i) sq += mr[i] * (xr[i] - mean) * (xr[i] - mean);
          var = sq / (weight + eps);
        }
        const double ga = gamma[(n * cs.k + k) * cs.c + c], be = beta[(n * cs.k + k) * cs.c + c];
        const double inv = 1.0 / std::sqrt(var + eps);
        for (int64_t i = 0; i < hw; ++i) yr[i] += mr[i] * (ga * (xr[i] - mean) * inv + be);
      }
      for (int64_t i = 0; i < hw; ++i) {
        double v = yr[i];
        if (std::strcmp(cs.activation, "relu") == 0) v = std::max(v, 0.0);
        if (std::strcmp(cs.activation, "lrelu") == 0 && v < 0) v *= 0.01;
        if (cs.residual) v += residual[(n * cs.c + c) * hw + i];
        yr[i] = v;
      }
    }
  }
  return y;
}

bool cuda_ok(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  check(false, std::string(what) + ": " + cudaGetErrorString(e));
  return false;
}

void run_case(nvinfer1::IPluginCreatorV3One* creator, const Case& cs, std::mt19937& rng) {
  using nvinfer1::TensorRTPhase;
  const float eps = 1e-5f;
  Fields f;
  f.eps = eps;
  f.activation = cs.activation;
  f.stats = cs.region_stats ? "region" : "global";
  Plugin p(creator->createPlugin("gpu_case", f.get(), TensorRTPhase::kRUNTIME));
  if (p.runtime == nullptr) {
    check(false, "createPlugin for the GPU case");
    return;
  }
  const int64_t hw = cs.h * cs.w;
  const size_t nx = static_cast<size_t>(cs.n * cs.c * hw), nm = static_cast<size_t>(cs.n * cs.k * hw);
  const size_t ng = static_cast<size_t>(cs.n * cs.k * cs.c);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  std::vector<float> x(nx), m(nm), gamma(ng), beta(ng), residual(cs.residual ? nx : 0);
  for (float& v : x) v = round_to(cs.type, 0.3f + 0.5f * normal(rng));
  for (int64_t n = 0; n < cs.n; ++n)
    for (int64_t k = 0; k < cs.k; ++k)
      for (int64_t i = 0; i < hw; ++i)  // the last region of sample 0 is empty when K > 1
        m[(n * cs.k + k) * hw + i] = (n == 0 && k == cs.k - 1 && cs.k > 1) ? 0.f : uniform(rng);
  for (float& v : gamma) v = 1.f + 0.2f * normal(rng);
  for (float& v : beta) v = 0.2f * normal(rng);
  for (float& v : residual) v = round_to(cs.type, normal(rng));

  const Dims xd = dims({cs.n, cs.c, cs.h, cs.w}), md = dims({cs.n, cs.k, cs.h, cs.w}), gd = dims({cs.n, cs.k, cs.c});
  const int nb_inputs = cs.residual ? 5 : 4;
  PluginTensorDesc in[5] = {desc(xd, cs.type), desc(md, DataType::kFLOAT), desc(gd, DataType::kFLOAT),
                            desc(gd, DataType::kFLOAT), desc(xd, cs.type)};
  PluginTensorDesc out[1] = {desc(xd, cs.type)};
  DynamicPluginTensorDesc din[5], dout[1];
  for (int i = 0; i < 5; ++i) din[i] = dyn(in[i].dims, in[i].type, in[i].dims);
  dout[0] = dyn(xd, cs.type, xd);
  const size_t ws_bytes = p.build != nullptr ? p.build->getWorkspaceSize(din, nb_inputs, dout, 1) : 0;
  if (p.build == nullptr || p.build->configurePlugin(din, nb_inputs, dout, 1) != 0 ||
      p.runtime->onShapeChange(in, nb_inputs, out, 1) != 0) {
    check(false, "configure the GPU case");
    return;
  }

  const std::vector<unsigned char> hx = pack(cs.type, x), hr = pack(cs.type, residual);
  void *dx = nullptr, *dy = nullptr, *dm = nullptr, *dg = nullptr, *db = nullptr, *dr = nullptr, *dws = nullptr;
  bool ok = cuda_ok(cudaMalloc(&dx, hx.size()), "cudaMalloc") && cuda_ok(cudaMalloc(&dy, hx.size()), "cudaMalloc") &&
            cuda_ok(cudaMalloc(&dm, nm * 4), "cudaMalloc") && cuda_ok(cudaMalloc(&dg, ng * 4), "cudaMalloc") &&
            cuda_ok(cudaMalloc(&db, ng * 4), "cudaMalloc") &&
            (!cs.residual || cuda_ok(cudaMalloc(&dr, hr.size()), "cudaMalloc")) &&
            (ws_bytes == 0 || cuda_ok(cudaMalloc(&dws, ws_bytes + 8), "cudaMalloc"));
  ok = ok && cuda_ok(cudaMemcpy(dx, hx.data(), hx.size(), cudaMemcpyHostToDevice), "copy x") &&
       cuda_ok(cudaMemcpy(dm, m.data(), nm * 4, cudaMemcpyHostToDevice), "copy masks") &&
       cuda_ok(cudaMemcpy(dg, gamma.data(), ng * 4, cudaMemcpyHostToDevice), "copy gamma") &&
       cuda_ok(cudaMemcpy(db, beta.data(), ng * 4, cudaMemcpyHostToDevice), "copy beta") &&
       (!cs.residual || cuda_ok(cudaMemcpy(dr, hr.data(), hr.size(), cudaMemcpyHostToDevice), "copy residual"));
  if (ok) {
    setenv("LMT_FAST_CUDA_FORCE_PATH", cs.path, 1);
    const void* inputs[5] = {dx, dm, dg, db, dr};
    void* outputs[1] = {dy};
    // An odd workspace address: the plugin aligns it itself.
    void* ws = dws != nullptr ? static_cast<void*>(static_cast<char*>(dws) + 8) : nullptr;
    const int32_t status = p.runtime->enqueue(in, out, inputs, outputs, ws, nullptr);
    ok = status == 0 && cuda_ok(cudaDeviceSynchronize(), "kernel");
    if (status != 0) check(false, "enqueue returned " + std::to_string(status) + ": " + g_logger.last);
  }
  if (ok) {
    std::vector<unsigned char> hy(hx.size());
    cuda_ok(cudaMemcpy(hy.data(), dy, hy.size(), cudaMemcpyDeviceToHost), "copy y");
    const std::vector<float> y = unpack(cs.type, hy, nx);
    const std::vector<double> want = reference(cs, eps, x, m, gamma, beta, residual);
    double err = 0, scale = 1e-12;
    bool finite = true;
    for (size_t i = 0; i < nx; ++i) {
      finite = finite && std::isfinite(y[i]);
      err = std::max(err, std::fabs(y[i] - want[i]));
      scale = std::max(scale, std::fabs(want[i]));
    }
    const double tol = cs.type == DataType::kFLOAT ? 1e-4 : cs.type == DataType::kHALF ? 4e-3 : 3e-2;
    char line[256];
    std::snprintf(line, sizeof(line),
                  "enqueue %s x=(%lld,%lld,%lld,%lld) K=%lld stats=%s activation=%s residual=%d path=%s: "
                  "max |err| / max |y| = %.3g (tolerance %.0e)",
                  type_label(cs.type),
                  static_cast<long long>(cs.n), static_cast<long long>(cs.c), static_cast<long long>(cs.h),
                  static_cast<long long>(cs.w), static_cast<long long>(cs.k), f.stats.c_str(), cs.activation,
                  cs.residual ? 1 : 0, cs.path, err / scale, tol);
    check(finite && err / scale <= tol, line);
  }
  for (void* ptr : {dx, dy, dm, dg, db, dr, dws}) cudaFree(ptr);
}

void gpu_checks(nvinfer1::IPluginCreatorV3One* creator) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    check(false, "--gpu needs a CUDA device");
    return;
  }
  std::mt19937 rng(1234);
  const DataType types[3] = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16};
  for (DataType t : types) {
    run_case(creator, {t, 2, 5, 7, 9, 2, 0, "none", false, "auto"}, rng);      // odd sizes, scalar accesses
    run_case(creator, {t, 2, 5, 7, 9, 2, 1, "lrelu", true, "auto"}, rng);      // region stats, empty region
    run_case(creator, {t, 2, 16, 32, 32, 3, 1, "relu", false, "onepass"}, rng);  // vector accesses
    run_case(creator, {t, 2, 16, 32, 32, 3, 0, "none", true, "split"}, rng);
    run_case(creator, {t, 1, 4, 128, 136, 2, 1, "none", false, "auto"}, rng);  // row > one-pass limit: split
  }
}

// The static-registration variant: dlopen alone (what trtexec --staticPlugins does) must have registered the
// creator with libnvinfer's global registry, here fake_nvinfer's, under the ONNX node's namespace; getCreators
// then lists none, so that IPluginRegistry::loadLibrary on the same library does not register it twice.
nvinfer1::IPluginCreatorInterface* statically_registered_creator(void* lib, int32_t creators_listed) {
  using Find = nvinfer1::IPluginCreatorInterface* (*)(const char*, const char*, const char*);
  using Count = int32_t (*)();
  auto find = reinterpret_cast<Find>(dlsym(lib, "lmt_fake_nvinfer_find"));
  auto count = reinterpret_cast<Count>(dlsym(lib, "lmt_fake_nvinfer_count"));
  check(find != nullptr && count != nullptr, "the library is linked against fake_nvinfer (--static)");
  if (find == nullptr || count == nullptr) return nullptr;
  nvinfer1::IPluginCreatorInterface* creator = find("RegionAdaIN", "1", "lmt");
  check(creator != nullptr && count() == 1,
        "loading the library registered RegionAdaIN/1 in namespace lmt with the global registry (registered: " +
            std::to_string(count()) + ")");
  check(creators_listed == 0, "getCreators lists no creator once registered statically (got " +
                                  std::to_string(creators_listed) + ")");
  return creator;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s LIBRARY.so [--gpu] [--static]\n", argv[0]);
    return 2;
  }
  bool gpu = false, static_registration = false;
  for (int i = 2; i < argc; ++i) {
    gpu = gpu || std::strcmp(argv[i], "--gpu") == 0;
    static_registration = static_registration || std::strcmp(argv[i], "--static") == 0;
  }
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  check(lib != nullptr, std::string("dlopen ") + argv[1] + (lib ? "" : std::string(": ") + dlerror()));
  if (lib == nullptr) return g_failures;
  using GetCreators = nvinfer1::IPluginCreatorInterface* const* (*)(int32_t&);
  using SetLoggerFinder = void (*)(nvinfer1::ILoggerFinder*);
  auto get_creators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
  auto set_logger_finder = reinterpret_cast<SetLoggerFinder>(dlsym(lib, "setLoggerFinder"));
  check(get_creators != nullptr && set_logger_finder != nullptr,
        "exports getCreators and setLoggerFinder (what IPluginRegistry::loadLibrary looks up)");
  if (get_creators == nullptr || set_logger_finder == nullptr) return g_failures;
  Finder finder(&g_logger);
  set_logger_finder(&finder);
  int32_t count = -1;
  nvinfer1::IPluginCreatorInterface* const* creators = get_creators(count);
  nvinfer1::IPluginCreatorInterface* found = nullptr;
  if (static_registration) {
    found = statically_registered_creator(lib, count);
  } else {
    check(creators != nullptr && count == 1, "getCreators lists one creator (got " + std::to_string(count) + ")");
    found = creators != nullptr && count == 1 ? creators[0] : nullptr;
  }
  if (found == nullptr) return g_failures;
  auto* creator = static_cast<nvinfer1::IPluginCreatorV3One*>(found);
  host_checks(creator);
  if (gpu) gpu_checks(creator);
  std::printf("%d check(s) failed\n", g_failures);
  return std::min(g_failures, 100);
}
