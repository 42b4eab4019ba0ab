// Makes the shared library importable as the Python module `lmt_fast._C`.
//
// The ops register themselves with the dispatcher when the library is loaded (TORCH_LIBRARY in
// bindings.cpp) and are called as torch.ops.lmt.*, so the module itself exports nothing but two facts
// for `lmt-fast info`. Plain CPython API: no pybind11 needed.
#include <Python.h>

namespace {

PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT,
    "_C",
    "lmt_fast compiled kernels; the ops are registered as torch.ops.lmt.*",
    -1,
    nullptr,
};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&module_definition);
  if (module == nullptr) return nullptr;
#ifdef LMT_FAST_WITH_CUDA
  const long with_cuda = 1;
#else
  const long with_cuda = 0;
#endif
  if (PyModule_AddIntConstant(module, "with_cuda", with_cuda) != 0 ||
      PyModule_AddStringConstant(module, "op_library", "lmt") != 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
