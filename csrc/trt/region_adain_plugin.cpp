// The `lmt::RegionAdaIN` TensorRT plugin (IPluginV3 with the V3One core, build and runtime capabilities)
// and its creator. See region_adain_plugin.h for the node's interface; the library entry points
// (getCreators, setLoggerFinder) are in plugin_library.cpp.
#include "region_adain_plugin.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <sstream>

namespace lmt {
namespace trt {

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::TensorFormat;
using Severity = nvinfer1::ILogger::Severity;

namespace {

constexpr int32_t kMinInputs = 4;  // x, masks, gamma, beta
constexpr int32_t kMaxInputs = 5;  // + residual
constexpr int32_t kNbOutputs = 1;
constexpr size_t kWorkspaceAlign = 256;  // the kernels need 16 bytes; TensorRT does not promise any
constexpr const char* kForcePathEnv = "LMT_FAST_CUDA_FORCE_PATH";
const char* const kInputNames[kMaxInputs] = {"x", "masks", "gamma", "beta", "residual"};
const int32_t kInputRanks[kMaxInputs] = {4, 4, 3, 3, 4};

bool is_storage_type(DataType t) { return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16; }

lmt_dtype to_lmt_dtype(DataType t) {
  switch (t) {
    case DataType::kHALF:
      return LMT_DTYPE_F16;
    case DataType::kBF16:
      return LMT_DTYPE_BF16;
    default:
      return LMT_DTYPE_F32;
  }
}

const char* type_name(DataType t) {
  switch (t) {
    case DataType::kFLOAT:
      return "float32";
    case DataType::kHALF:
      return "float16";
    case DataType::kBF16:
      return "bfloat16";
    case DataType::kINT8:
      return "int8";
    case DataType::kINT32:
      return "int32";
    case DataType::kINT64:
      return "int64";
    case DataType::kBOOL:
      return "bool";
    case DataType::kUINT8:
      return "uint8";
    default:
      return "another type";
  }
}

std::string dims_text(const Dims& d) {
  std::ostringstream s;
  s << "(";
  for (int32_t i = 0; i < d.nbDims; ++i) s << (i ? ", " : "") << d.d[i];
  s << ")";
  return s.str();
}

bool agree(int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; }

std::string count_problem(int32_t nb_inputs, int32_t nb_outputs) {
  if (nb_inputs < kMinInputs || nb_inputs > kMaxInputs)
    return "expects 4 inputs (x, masks, gamma, beta) or 5 (with residual), got " + std::to_string(nb_inputs);
  if (nb_outputs != kNbOutputs) return "has 1 output, got " + std::to_string(nb_outputs);
  return "";
}

// The text of a kCHAR field: `length` counts the bytes, the NUL terminator included or not.
std::string char_field(const PluginField& f) {
  const char* text = static_cast<const char*>(f.data);
  if (text == nullptr || f.length <= 0) return "";
  return std::string(text, strnlen(text, static_cast<size_t>(f.length)));
}

bool int_field(const PluginField& f, int32_t& value) {
  if (f.type != PluginFieldType::kINT32 || f.data == nullptr || f.length != 1) return false;
  value = *static_cast<const int32_t*>(f.data);
  return true;
}

std::string parse_eps(const PluginField& f, float& eps) {
  double value = 0;
  if (f.type == PluginFieldType::kFLOAT32 && f.data != nullptr && f.length == 1) {
    value = *static_cast<const float*>(f.data);
  } else if (f.type == PluginFieldType::kFLOAT64 && f.data != nullptr && f.length == 1) {
    value = *static_cast<const double*>(f.data);
  } else {
    return "field 'eps' must be one float32 value";
  }
  if (!std::isfinite(value) || !(value > 0)) return "eps must be a finite number > 0, got " + std::to_string(value);
  eps = static_cast<float>(value);
  return "";
}

std::string parse_activation(const PluginField& f, lmt_activation& activation) {
  int32_t code = -1;
  if (f.type == PluginFieldType::kCHAR) {
    const std::string text = char_field(f);
    if (text == "none" || text.empty()) code = LMT_ACTIVATION_NONE;
    else if (text == "relu") code = LMT_ACTIVATION_RELU;
    else if (text == "lrelu") code = LMT_ACTIVATION_LEAKY_RELU;
    else return "activation must be 'none', 'relu' or 'lrelu', got '" + text + "'";
  } else if (!int_field(f, code)) {
    return "field 'activation' must be a string (or one int32 code)";
  }
  if (code < LMT_ACTIVATION_NONE || code > LMT_ACTIVATION_LEAKY_RELU)
    return "activation code must be 0 (none), 1 (relu) or 2 (lrelu), got " + std::to_string(code);
  activation = static_cast<lmt_activation>(code);
  return "";
}

std::string parse_stats(const PluginField& f, int& region_stats) {
  int32_t code = -1;
  if (f.type == PluginFieldType::kCHAR) {
    const std::string text = char_field(f);
    if (text == "global") code = 0;
    else if (text == "region") code = 1;
    else return "stats must be 'global' or 'region', got '" + text + "'";
  } else if (!int_field(f, code)) {
    return "field 'stats' must be a string (or one int32 code)";
  }
  if (code != 0 && code != 1) return "stats code must be 0 (global) or 1 (region), got " + std::to_string(code);
  region_stats = code;
  return "";
}

// LMT_FAST_CUDA_FORCE_PATH, as the torch binding reads it. Returns false for an unknown value.
bool requested_path(lmt_path& path) {
  const char* value = std::getenv(kForcePathEnv);
  path = LMT_PATH_AUTO;
  if (value == nullptr || *value == '\0' || std::strcmp(value, "auto") == 0) return true;
  if (std::strcmp(value, "onepass") == 0) {
    path = LMT_PATH_ONEPASS;
    return true;
  }
  if (std::strcmp(value, "split") == 0) {
    path = LMT_PATH_SPLIT;
    return true;
  }
  return false;
}

void* align_workspace(void* workspace) {
  const uintptr_t p = reinterpret_cast<uintptr_t>(workspace);
  return reinterpret_cast<void*>((p + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign);
}

}  // namespace

// ---- fields and shapes -------------------------------------------------------------------------------

const char* activation_name(lmt_activation activation) {
  switch (activation) {
    case LMT_ACTIVATION_RELU:
      return "relu";
    case LMT_ACTIVATION_LEAKY_RELU:
      return "lrelu";
    default:
      return "none";
  }
}

const char* stats_name(int region_stats) { return region_stats ? "region" : "global"; }

std::string parse_fields(const PluginFieldCollection* fields, RegionAdaINParams& params) {
  if (fields == nullptr) return "";
  if (fields->nbFields > 0 && fields->fields == nullptr) return "the field collection has no fields array";
  for (int32_t i = 0; i < fields->nbFields; ++i) {
    const PluginField& f = fields->fields[i];
    const std::string name = f.name ? f.name : "";
    std::string problem;
    if (name == "eps") {
      problem = parse_eps(f, params.eps);
    } else if (name == "activation") {
      problem = parse_activation(f, params.activation);
    } else if (name == "stats") {
      problem = parse_stats(f, params.region_stats);
    } else if (name != "plugin_namespace" && name != "plugin_version") {
      plugin_log(Severity::kWARNING, "ignoring unknown field '" + name + "' (fields: eps, activation, stats)");
    }
    if (!problem.empty()) return problem;
  }
  return "";
}

std::string check_input_dims(const Dims* dims, int32_t nb_inputs) {
  std::string problem = count_problem(nb_inputs, kNbOutputs);
  if (!problem.empty()) return problem;
  for (int32_t i = 0; i < nb_inputs; ++i) {
    if (dims[i].nbDims != kInputRanks[i])
      return std::string(kInputNames[i]) + " must have rank " + std::to_string(kInputRanks[i]) + ", got shape " +
             dims_text(dims[i]);
  }
  const Dims& x = dims[0];
  const Dims& m = dims[1];
  for (int32_t a = 1; a < 4; ++a) {
    if (x.d[a] == 0) return "x must have C, H, W >= 1, got shape " + dims_text(x);
  }
  if (!agree(m.d[0], x.d[0]) || !agree(m.d[2], x.d[2]) || !agree(m.d[3], x.d[3]))
    return "masks must have shape (N, K, H, W) with x's N, H, W (the exporter resizes them), got " + dims_text(m) +
           " for x " + dims_text(x);
  const int64_t k = m.d[1];
  if (k >= 0 && (k < 1 || k > LMT_CUDA_MAX_REGIONS))
    return "masks must have 1 to " + std::to_string(LMT_CUDA_MAX_REGIONS) + " regions, got K = " + std::to_string(k);
  for (int32_t i = 2; i < 4; ++i) {
    const Dims& g = dims[i];
    if (!agree(g.d[0], x.d[0]) || !agree(g.d[1], k) || !agree(g.d[2], x.d[1]))
      return std::string(kInputNames[i]) + " must have shape (N, K, C) = (x's N, masks' K, x's C), got " +
             dims_text(g) + " for x " + dims_text(x) + " and masks " + dims_text(m);
  }
  if (nb_inputs == kMaxInputs) {
    const Dims& r = dims[4];
    for (int32_t a = 0; a < 4; ++a) {
      if (!agree(r.d[a], x.d[a])) return "residual must have x's shape " + dims_text(x) + ", got " + dims_text(r);
    }
  }
  return "";
}

// ---- the plugin ----------------------------------------------------------------------------------------

RegionAdaINPlugin::RegionAdaINPlugin(const RegionAdaINParams& params) : params_(params) {
  char eps[32];
  std::snprintf(eps, sizeof(eps), "%.9g", static_cast<double>(params_.eps));
  description_ = std::string("eps=") + eps + " activation=" + activation_name(params_.activation) +
                 " stats=" + stats_name(params_.region_stats);
}

nvinfer1::IPluginCapability* RegionAdaINPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE:
      return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD:
      return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME:
      return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

nvinfer1::IPluginV3* RegionAdaINPlugin::clone() noexcept {
  RegionAdaINPlugin* copy = new (std::nothrow) RegionAdaINPlugin(params_);
  if (copy == nullptr) {
    plugin_log(Severity::kERROR, "out of host memory cloning the plugin");
    return nullptr;
  }
  copy->nb_inputs_ = nb_inputs_;
  return copy;
}

const char* RegionAdaINPlugin::getPluginName() const noexcept { return kPluginName; }
const char* RegionAdaINPlugin::getPluginVersion() const noexcept { return kPluginVersion; }
const char* RegionAdaINPlugin::getPluginNamespace() const noexcept { return kPluginNamespace; }

int32_t RegionAdaINPlugin::configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_inputs,
                                           const nvinfer1::DynamicPluginTensorDesc* out,
                                           int32_t nb_outputs) noexcept {
  std::string problem = count_problem(nb_inputs, nb_outputs);
  if (problem.empty()) {
    Dims dims[kMaxInputs];
    for (int32_t i = 0; i < nb_inputs; ++i) dims[i] = in[i].desc.dims;
    problem = check_input_dims(dims, nb_inputs);
  }
  if (problem.empty() && out[0].desc.type != in[0].desc.type)
    problem = std::string("y must have x's dtype ") + type_name(in[0].desc.type) + ", got " +
              type_name(out[0].desc.type);
  if (!problem.empty()) {
    plugin_log(Severity::kERROR, problem);
    return 1;
  }
  nb_inputs_ = nb_inputs;
  return 0;
}

int32_t RegionAdaINPlugin::getOutputDataTypes(DataType* output_types, int32_t nb_outputs, const DataType* input_types,
                                              int32_t nb_inputs) const noexcept {
  std::string problem = count_problem(nb_inputs, nb_outputs);
  if (problem.empty() && !is_storage_type(input_types[0]))
    problem = std::string("x must be float32, float16 or bfloat16, got ") + type_name(input_types[0]);
  for (int32_t i = 1; problem.empty() && i < 4; ++i) {
    if (input_types[i] != DataType::kFLOAT)
      problem = std::string(kInputNames[i]) + " must be float32 (statistics and styles are float32), got " +
                type_name(input_types[i]);
  }
  if (problem.empty() && nb_inputs == kMaxInputs && !is_storage_type(input_types[4]))
    problem = std::string("residual must be float32, float16 or bfloat16, got ") + type_name(input_types[4]);
  if (!problem.empty()) {
    plugin_log(Severity::kERROR, problem);
    return 1;
  }
  output_types[0] = input_types[0];
  return 0;
}

int32_t RegionAdaINPlugin::getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nb_inputs,
                                           const nvinfer1::DimsExprs* /* shape_inputs */,
                                           int32_t /* nb_shape_inputs */, nvinfer1::DimsExprs* outputs,
                                           int32_t nb_outputs, nvinfer1::IExprBuilder& /* expr_builder */) noexcept {
  std::string problem = count_problem(nb_inputs, nb_outputs);
  for (int32_t i = 0; problem.empty() && i < nb_inputs; ++i) {
    if (inputs[i].nbDims != kInputRanks[i])
      problem = std::string(kInputNames[i]) + " must have rank " + std::to_string(kInputRanks[i]) + ", got rank " +
                std::to_string(inputs[i].nbDims);
  }
  if (!problem.empty()) {
    plugin_log(Severity::kERROR, problem);
    return 1;
  }
  outputs[0] = inputs[0];  // y has x's shape
  return 0;
}

bool RegionAdaINPlugin::supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* in_out,
                                                  int32_t nb_inputs, int32_t nb_outputs) noexcept {
  if (!count_problem(nb_inputs, nb_outputs).empty() || pos < 0 || pos >= nb_inputs + nb_outputs) return false;
  const nvinfer1::PluginTensorDesc& desc = in_out[pos].desc;
  if (desc.format != TensorFormat::kLINEAR) return false;
  if (pos == 0) return is_storage_type(desc.type);                  // x
  if (pos < 4) return desc.type == DataType::kFLOAT;                // masks, gamma, beta
  if (pos < nb_inputs) return is_storage_type(desc.type);           // residual
  return desc.type == in_out[0].desc.type;                          // y
}

int32_t RegionAdaINPlugin::getNbOutputs() const noexcept { return kNbOutputs; }

size_t RegionAdaINPlugin::getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nb_inputs,
                                           const nvinfer1::DynamicPluginTensorDesc* /* outputs */,
                                           int32_t nb_outputs) const noexcept {
  if (!count_problem(nb_inputs, nb_outputs).empty()) return 0;
  // The split path's need grows with every size, so the profile's largest shapes bound every call.
  const Dims& x = inputs[0].max;
  const Dims& m = inputs[1].max;
  if (x.nbDims != 4 || m.nbDims != 4) return 0;
  const size_t bytes = lmt_cuda_workspace_size(LMT_OP_REGION_ADAIN, to_lmt_dtype(inputs[0].desc.type), LMT_LAYOUT_NCHW,
                                               x.d[0], x.d[1], x.d[2], x.d[3], m.d[1]);
  return bytes == 0 ? 0 : bytes + kWorkspaceAlign;
}

const char* RegionAdaINPlugin::getTimingCacheID() noexcept { return description_.c_str(); }

const char* RegionAdaINPlugin::getMetadataString() noexcept { return description_.c_str(); }

int32_t RegionAdaINPlugin::onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nb_inputs,
                                         const nvinfer1::PluginTensorDesc* out, int32_t nb_outputs) noexcept {
  std::string problem = count_problem(nb_inputs, nb_outputs);
  if (problem.empty()) {
    Dims dims[kMaxInputs];
    for (int32_t i = 0; i < nb_inputs; ++i) dims[i] = in[i].dims;
    problem = check_input_dims(dims, nb_inputs);
  }
  if (problem.empty()) {
    bool same = out[0].dims.nbDims == in[0].dims.nbDims;
    for (int32_t a = 0; same && a < in[0].dims.nbDims; ++a) same = out[0].dims.d[a] == in[0].dims.d[a];
    if (!same) problem = "y must have x's shape " + dims_text(in[0].dims) + ", got " + dims_text(out[0].dims);
  }
  if (!problem.empty()) {
    plugin_log(Severity::kERROR, problem);
    return 1;
  }
  nb_inputs_ = nb_inputs;
  return 0;
}

int32_t RegionAdaINPlugin::enqueue(const nvinfer1::PluginTensorDesc* input_desc,
                                   const nvinfer1::PluginTensorDesc* /* output_desc */, const void* const* inputs,
                                   void* const* outputs, void* workspace, cudaStream_t stream) noexcept {
  if (nb_inputs_ < kMinInputs) {
    plugin_log(Severity::kERROR, "enqueue before onShapeChange: the number of inputs is not known");
    return 1;
  }
  lmt_path path = LMT_PATH_AUTO;
  if (!requested_path(path)) {
    plugin_log(Severity::kERROR, std::string(kForcePathEnv) + " must be 'auto', 'onepass' or 'split'");
    return 1;
  }
  const Dims& x = input_desc[0].dims;
  const int64_t n = x.d[0], c = x.d[1], h = x.d[2], w = x.d[3];
  const int64_t k = input_desc[1].dims.d[1];
  const lmt_dtype dtype = to_lmt_dtype(input_desc[0].type);
  const bool has_residual = nb_inputs_ == kMaxInputs;
  const void* residual = has_residual ? inputs[4] : nullptr;
  const lmt_dtype residual_dtype = has_residual ? to_lmt_dtype(input_desc[4].type) : LMT_DTYPE_F32;
  const size_t need = lmt_cuda_workspace_size(LMT_OP_REGION_ADAIN, dtype, LMT_LAYOUT_NCHW, n, c, h, w, k);
  void* scratch = workspace != nullptr ? align_workspace(workspace) : nullptr;
  const cudaError_t status = lmt_cuda_region_adain(
      inputs[0], outputs[0], dtype, LMT_LAYOUT_NCHW, n, c, h, w, static_cast<const float*>(inputs[1]), k,
      static_cast<const float*>(inputs[2]), static_cast<const float*>(inputs[3]), params_.region_stats, params_.eps,
      params_.activation, residual, residual_dtype, scratch, scratch != nullptr ? need : 0, path, stream);
  if (status != cudaSuccess) {
    plugin_log(Severity::kERROR, std::string("CUDA kernel launch failed for x ") + dims_text(x) + ", K = " +
                              std::to_string(k) + ": " + cudaGetErrorString(status));
    return 1;
  }
  return 0;
}

nvinfer1::IPluginV3* RegionAdaINPlugin::attachToContext(nvinfer1::IPluginResourceContext* /* context */) noexcept {
  // No per-context resources: the kernels take all scratch memory from TensorRT's workspace.
  return clone();
}

const PluginFieldCollection* RegionAdaINPlugin::getFieldsToSerialize() noexcept {
  try {
    serial_eps_ = params_.eps;
    serial_activation_ = activation_name(params_.activation);
    serial_stats_ = stats_name(params_.region_stats);
    serial_fields_.clear();
    serial_fields_.emplace_back("eps", &serial_eps_, PluginFieldType::kFLOAT32, 1);
    serial_fields_.emplace_back("activation", serial_activation_.c_str(), PluginFieldType::kCHAR,
                                static_cast<int32_t>(serial_activation_.size() + 1));
    serial_fields_.emplace_back("stats", serial_stats_.c_str(), PluginFieldType::kCHAR,
                                static_cast<int32_t>(serial_stats_.size() + 1));
  } catch (const std::exception& e) {
    plugin_log(Severity::kERROR, std::string("cannot list the fields to serialise: ") + e.what());
    serial_fields_.clear();
  }
  serial_collection_.nbFields = static_cast<int32_t>(serial_fields_.size());
  serial_collection_.fields = serial_fields_.data();
  return &serial_collection_;
}

// ---- the creator -----------------------------------------------------------------------------------------

RegionAdaINPluginCreator::RegionAdaINPluginCreator() {
  fields_.emplace_back("eps", nullptr, PluginFieldType::kFLOAT32, 1);
  fields_.emplace_back("activation", nullptr, PluginFieldType::kCHAR, 0);
  fields_.emplace_back("stats", nullptr, PluginFieldType::kCHAR, 0);
  collection_.nbFields = static_cast<int32_t>(fields_.size());
  collection_.fields = fields_.data();
}

nvinfer1::IPluginV3* RegionAdaINPluginCreator::createPlugin(const char* name, const PluginFieldCollection* fc,
                                                            nvinfer1::TensorRTPhase /* phase */) noexcept {
  try {
    RegionAdaINParams params;
    const std::string problem = parse_fields(fc, params);
    if (!problem.empty()) {
      plugin_log(Severity::kERROR,
                 std::string("cannot create the plugin for node '") + (name ? name : "") + "': " + problem);
      return nullptr;
    }
    return new RegionAdaINPlugin(params);
  } catch (const std::exception& e) {
    plugin_log(Severity::kERROR, std::string("cannot create the plugin: ") + e.what());
    return nullptr;
  }
}

const PluginFieldCollection* RegionAdaINPluginCreator::getFieldNames() noexcept { return &collection_; }
const char* RegionAdaINPluginCreator::getPluginName() const noexcept { return kPluginName; }
const char* RegionAdaINPluginCreator::getPluginVersion() const noexcept { return kPluginVersion; }
const char* RegionAdaINPluginCreator::getPluginNamespace() const noexcept { return kPluginNamespace; }

}  // namespace trt
}  // namespace lmt
