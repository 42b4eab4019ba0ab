// TensorRT plugin for the `lmt::RegionAdaIN` node that `lmt-fast export --custom-ops` writes
// (lmt_fast/export/lowering.py, REGION_ADAIN_NODE), over the torch-free CUDA kernels of csrc/cuda.
//
// Plugin identity: name "RegionAdaIN", version "1", namespace "lmt" (the ONNX node's op type and its
// plugin_version / plugin_namespace attributes, which is how TensorRT's ONNX parser finds the creator).
//
// I/O (all TensorFormat::kLINEAR, i.e. dense NCHW):
//   input 0  x         (N, C, H, W)  float32, float16 or bfloat16
//   input 1  masks     (N, K, H, W)  float32, already at x's H x W; 1 <= K <= LMT_CUDA_MAX_REGIONS
//   input 2  gamma     (N, K, C)     float32
//   input 3  beta      (N, K, C)     float32
//   input 4  residual  (N, C, H, W)  optional; float32, float16 or bfloat16
//   output 0 y         x's shape and dtype
// Statistics accumulate in float32 whatever x's dtype; y is rounded once, at the end.
//
// Fields (ONNX attributes at build time, the same fields when a plan is deserialised):
//   eps         kFLOAT32 (kFLOAT64 accepted)  > 0, default 1e-5
//   activation  kCHAR "none" | "relu" | "lrelu"  (or kINT32 0 | 1 | 2), default "none"
//   stats       kCHAR "global" | "region"        (or kINT32 0 | 1),     default "global"
// TensorRT's ONNX parser passes exactly the fields getFieldNames() lists; any other field given to
// createPlugin is ignored with a warning (plugin_namespace / plugin_version silently).
//
// Workspace: the split path's need for the profile's largest shapes (lmt_cuda_workspace_size), plus
// alignment slack. LMT_FAST_CUDA_FORCE_PATH=auto|onepass|split overrides the kernels' launch heuristic,
// as for the torch binding (read at each enqueue; for tests and benchmarks).
#pragma once

#include <NvInferRuntime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "lmt/cuda_kernels.h"

namespace lmt {
namespace trt {

constexpr const char* kPluginName = "RegionAdaIN";
constexpr const char* kPluginVersion = "1";
constexpr const char* kPluginNamespace = "lmt";

// Logging through the logger TensorRT hands the library (setLoggerFinder), else stderr.
void plugin_log(nvinfer1::ILogger::Severity severity, const std::string& message) noexcept;

// The node's attributes.
struct RegionAdaINParams {
  float eps = 1e-5f;
  lmt_activation activation = LMT_ACTIVATION_NONE;
  int region_stats = 0;  // 0: "global" (HAdaIN), 1: "region" (masked moments)
};

const char* activation_name(lmt_activation activation);
const char* stats_name(int region_stats);

// Reads a field collection into `params` (missing fields keep their defaults). Returns an empty
// string on success, else what is wrong (unknown values, wrong field types).
std::string parse_fields(const nvinfer1::PluginFieldCollection* fields, RegionAdaINParams& params);

// Checks the ranks and the sizes that must agree between the inputs. Sizes of -1 (dimensions only
// known at run time) are not compared. Returns an empty string when consistent, else the problem.
std::string check_input_dims(const nvinfer1::Dims* dims, int32_t nb_inputs);

class RegionAdaINPlugin final : public nvinfer1::IPluginV3,
                                public nvinfer1::IPluginV3OneCore,
                                public nvinfer1::IPluginV3OneBuild,
                                public nvinfer1::IPluginV3OneRuntime {
 public:
  explicit RegionAdaINPlugin(const RegionAdaINParams& params);
  ~RegionAdaINPlugin() override = default;

  const RegionAdaINParams& params() const { return params_; }

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
  nvinfer1::IPluginV3* clone() noexcept override;

  // IPluginV3OneCore
  const char* getPluginName() const noexcept override;
  const char* getPluginVersion() const noexcept override;
  const char* getPluginNamespace() const noexcept override;

  // IPluginV3OneBuild
  int32_t configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_inputs,
                          const nvinfer1::DynamicPluginTensorDesc* out, int32_t nb_outputs) noexcept override;
  int32_t getOutputDataTypes(nvinfer1::DataType* output_types, int32_t nb_outputs,
                             const nvinfer1::DataType* input_types, int32_t nb_inputs) const noexcept override;
  int32_t getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nb_inputs, const nvinfer1::DimsExprs* shape_inputs,
                          int32_t nb_shape_inputs, nvinfer1::DimsExprs* outputs, int32_t nb_outputs,
                          nvinfer1::IExprBuilder& expr_builder) noexcept override;
  bool supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* in_out, int32_t nb_inputs,
                                 int32_t nb_outputs) noexcept override;
  int32_t getNbOutputs() const noexcept override;
  size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nb_inputs,
                          const nvinfer1::DynamicPluginTensorDesc* outputs, int32_t nb_outputs) const noexcept override;
  const char* getTimingCacheID() noexcept override;
  const char* getMetadataString() noexcept override;

  // IPluginV3OneRuntime
  int32_t onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nb_inputs, const nvinfer1::PluginTensorDesc* out,
                        int32_t nb_outputs) noexcept override;
  int32_t enqueue(const nvinfer1::PluginTensorDesc* input_desc, const nvinfer1::PluginTensorDesc* output_desc,
                  const void* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  const nvinfer1::PluginFieldCollection* getFieldsToSerialize() noexcept override;

 private:
  RegionAdaINParams params_;
  int32_t nb_inputs_ = 0;    // 4 or 5, from configurePlugin / onShapeChange (enqueue is not told)
  std::string description_;  // "eps=... activation=... stats=..." (timing cache ID and metadata)
  // Storage behind getFieldsToSerialize().
  float serial_eps_ = 0.f;
  std::string serial_activation_;
  std::string serial_stats_;
  std::vector<nvinfer1::PluginField> serial_fields_;
  nvinfer1::PluginFieldCollection serial_collection_{};
};

class RegionAdaINPluginCreator final : public nvinfer1::IPluginCreatorV3One {
 public:
  RegionAdaINPluginCreator();
  ~RegionAdaINPluginCreator() override = default;

  nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
  const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override;
  const char* getPluginName() const noexcept override;
  const char* getPluginVersion() const noexcept override;
  const char* getPluginNamespace() const noexcept override;

 private:
  std::vector<nvinfer1::PluginField> fields_;
  nvinfer1::PluginFieldCollection collection_{};
};

}  // namespace trt
}  // namespace lmt
