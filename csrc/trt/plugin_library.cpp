// Entry points of liblmt_trt_plugin.so: how TensorRT finds the RegionAdaIN creator (see README.md).
//
// Default build (dynamic registration): the library exports
//     extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder*);
//     extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
// which IPluginRegistry::loadLibrary (Python: trt.get_plugin_registry().load_library), trtexec
// --dynamicPlugins and --setPluginsToSerialize look up after dlopen. It uses no libnvinfer symbol, so it
// links without TensorRT's libraries.
//
// LMT_TRT_STATIC_REGISTRATION (CMake option / build_plugin(static_registration=True), built as
// liblmt_trt_plugin_static.so): the creator is also registered with the process's global registry while
// the library loads (what REGISTER_TENSORRT_PLUGIN does), which trtexec --staticPlugins, LD_PRELOAD and a
// plain dlopen need. That calls getPluginRegistry(), so the library links against libnvinfer (and with
// -z nodelete: the registry keeps the creator's address). getCreators then reports no creator, so that
// loading the same library through loadLibrary as well does not register it twice.
#include <atomic>
#include <cstdio>
#include <string>

#include "region_adain_plugin.h"

// The library's exports (the build also passes exports.map); TENSORRTAPI only exports inside TensorRT.
#define LMT_TRT_EXPORT __attribute__((visibility("default")))
#define LMT_TRT_STRINGIFY_(x) #x
#define LMT_TRT_STRINGIFY(x) LMT_TRT_STRINGIFY_(x)

namespace lmt {
namespace trt {
namespace {

std::atomic<nvinfer1::ILoggerFinder*> g_logger_finder{nullptr};
std::atomic<bool> g_registered_statically{false};

RegionAdaINPluginCreator& creator() {
  static RegionAdaINPluginCreator instance;
  return instance;
}

nvinfer1::ILogger* find_logger() noexcept {
  nvinfer1::ILoggerFinder* finder = g_logger_finder.load();
  if (finder != nullptr) {
    try {
      nvinfer1::ILogger* logger = finder->findLogger();
      if (logger != nullptr) return logger;
    } catch (...) {
    }
  }
#if defined(LMT_TRT_STATIC_REGISTRATION)
  return getLogger();  // libnvinfer's logger (the static build links it)
#else
  return nullptr;
#endif
}

#if defined(LMT_TRT_STATIC_REGISTRATION)
struct StaticRegistration {
  StaticRegistration() {
    nvinfer1::IPluginRegistry* registry = getPluginRegistry();
    if (registry != nullptr && registry->registerCreator(creator(), kPluginNamespace)) g_registered_statically = true;
  }
};
const StaticRegistration g_static_registration;
#endif

}  // namespace

void plugin_log(nvinfer1::ILogger::Severity severity, const std::string& message) noexcept {
  try {
    const std::string text = std::string(kPluginNamespace) + "::" + kPluginName + ": " + message;
    nvinfer1::ILogger* logger = find_logger();
    if (logger != nullptr) {
      logger->log(severity, text.c_str());
    } else if (severity <= nvinfer1::ILogger::Severity::kWARNING) {
      std::fprintf(stderr, "%s %s\n", severity <= nvinfer1::ILogger::Severity::kERROR ? "[E]" : "[W]", text.c_str());
    }
  } catch (...) {
  }
}

}  // namespace trt
}  // namespace lmt

extern "C" {

LMT_TRT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
  if (finder != nullptr) lmt::trt::g_logger_finder.store(finder);
}

LMT_TRT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  static nvinfer1::IPluginCreatorInterface* const creators[] = {&lmt::trt::creator()};
  nbCreators = lmt::trt::g_registered_statically.load() ? 0 : 1;
  return creators;
}

// Not a TensorRT entry point: what this library is, for tools and tests (ctypes).
LMT_TRT_EXPORT const char* lmt_trt_plugin_info() {
  return "lmt::RegionAdaIN version 1 (IPluginV3), built against TensorRT " LMT_TRT_STRINGIFY(
      NV_TENSORRT_MAJOR) "." LMT_TRT_STRINGIFY(NV_TENSORRT_MINOR) "." LMT_TRT_STRINGIFY(NV_TENSORRT_PATCH)
#if defined(LMT_TRT_STATIC_REGISTRATION)
      " headers, static registration";
#else
      " headers, dynamic registration (getCreators)";
#endif
}

}  // extern "C"
