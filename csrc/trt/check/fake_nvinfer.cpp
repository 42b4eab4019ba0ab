// fake_nvinfer: a stand-in libnvinfer.so with the two C entry points a statically registering plugin
// library calls while it is being loaded, so that registration can be checked without TensorRT:
//
//     extern "C" nvinfer1::IPluginRegistry* getPluginRegistry();   // what REGISTER_TENSORRT_PLUGIN calls
//     extern "C" nvinfer1::ILogger* getLogger();
//
// Build it as a shared library with the soname libnvinfer.so and link the static-registration variant of
// liblmt_trt_plugin.so against it (build_plugin(static_registration=True, tensorrt_lib=DIR));
// `plugin_check LIB --static` then dlopens the plugin exactly as trtexec --staticPlugins does and asks this
// registry, through lmt_fake_nvinfer_find, what was registered. Only TensorRT's headers are used; the
// registry implements the IPluginRegistry of whichever TensorRT major version they are (10 or 11).
#include <NvInferRuntime.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#define FAKE_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

struct Entry {
  nvinfer1::IPluginCreatorInterface* creator;
  std::string plugin_namespace;
};

class FakeRegistry final : public nvinfer1::IPluginRegistry {
 public:
  ~FakeRegistry() noexcept override = default;

  std::vector<Entry> entries;

  bool registerCreator(nvinfer1::IPluginCreatorInterface& creator,
                       nvinfer1::AsciiChar const* const pluginNamespace) noexcept override {
    entries.push_back({&creator, pluginNamespace != nullptr ? pluginNamespace : ""});
    return true;
  }
  bool deregisterCreator(nvinfer1::IPluginCreatorInterface const& creator) noexcept override {
    for (auto it = entries.begin(); it != entries.end(); ++it) {
      if (it->creator == &creator) {
        entries.erase(it);
        return true;
      }
    }
    return false;
  }
  nvinfer1::IPluginCreatorInterface* getCreator(nvinfer1::AsciiChar const* const name,
                                                nvinfer1::AsciiChar const* const version,
                                                nvinfer1::AsciiChar const* const pluginNamespace) noexcept override {
    for (const Entry& e : entries) {
      if (std::strcmp(e.creator->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") != 0) continue;
      auto* v3 = static_cast<nvinfer1::IPluginCreatorV3One*>(e.creator);
      if (std::strcmp(v3->getPluginName(), name) == 0 && std::strcmp(v3->getPluginVersion(), version) == 0 &&
          e.plugin_namespace == (pluginNamespace != nullptr ? pluginNamespace : "")) {
        return e.creator;
      }
    }
    return nullptr;
  }
  nvinfer1::IPluginCreatorInterface* const* getAllCreators(int32_t* const numCreators) const noexcept override {
    *numCreators = 0;
    return nullptr;
  }
  // Unused by plugin libraries: inert answers.
  void setErrorRecorder(nvinfer1::IErrorRecorder* const) noexcept override {}
  nvinfer1::IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
  bool isParentSearchEnabled() const override { return false; }
  void setParentSearchEnabled(bool const) override {}
  PluginLibraryHandle loadLibrary(nvinfer1::AsciiChar const*) noexcept override { return nullptr; }
  void deregisterLibrary(PluginLibraryHandle) noexcept override {}
  nvinfer1::IPluginResource* acquirePluginResource(nvinfer1::AsciiChar const*,
                                                   nvinfer1::IPluginResource*) noexcept override {
    return nullptr;
  }
  int32_t releasePluginResource(nvinfer1::AsciiChar const*) noexcept override { return 0; }
  // Not virtual in TensorRT 10.0 (added later in 10.x): no `override`, so both header versions compile.
  nvinfer1::IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const numCreators) noexcept {
    *numCreators = 0;
    return nullptr;
  }
#if NV_TENSORRT_MAJOR < 11
  // TensorRT 10's IPluginV2-era methods (deprecated there, removed in 11): overriding them is not a use.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  bool registerCreator(nvinfer1::IPluginCreator&, nvinfer1::AsciiChar const* const) noexcept override { return false; }
  nvinfer1::IPluginCreator* const* getPluginCreatorList(int32_t* const numCreators) const noexcept override {
    *numCreators = 0;
    return nullptr;
  }
  nvinfer1::IPluginCreator* getPluginCreator(nvinfer1::AsciiChar const* const, nvinfer1::AsciiChar const* const,
                                             nvinfer1::AsciiChar const* const) noexcept override {
    return nullptr;
  }
  bool deregisterCreator(nvinfer1::IPluginCreator const&) noexcept override { return false; }
#pragma GCC diagnostic pop
#endif
};

class FakeLogger final : public nvinfer1::ILogger {
 public:
  void log(Severity, nvinfer1::AsciiChar const* msg) noexcept override { last = msg; }
  std::string last;
};

FakeRegistry& registry() {
  static FakeRegistry instance;
  return instance;
}

FakeLogger& logger() {
  static FakeLogger instance;
  return instance;
}

}  // namespace

FAKE_EXPORT nvinfer1::IPluginRegistry* getPluginRegistry() noexcept { return &registry(); }

FAKE_EXPORT nvinfer1::ILogger* getLogger() noexcept { return &logger(); }

// For plugin_check: the creator registered under (name, version, namespace), or nullptr; and how many are.
FAKE_EXPORT nvinfer1::IPluginCreatorInterface* lmt_fake_nvinfer_find(const char* name, const char* version,
                                                                     const char* plugin_namespace) {
  return registry().getCreator(name, version, plugin_namespace);
}

FAKE_EXPORT int32_t lmt_fake_nvinfer_count() { return static_cast<int32_t>(registry().entries.size()); }
