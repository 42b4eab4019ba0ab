// Makes the shared library importable as the Python module `lmt_fast._C`.
//
// The ops register themselves with the dispatcher when the library is loaded (TORCH_LIBRARY in
// bindings.cpp) and are called as torch.ops.lmt.*. The module exports two facts for `lmt-fast info`,
// and one direct entry point per op into its CPU kernel, for lmt_fast.ops.library: calling an op
// through torch.ops from Python costs ~2 us before the kernel starts (argument parsing against the
// schema, boxing, dispatch), as much as the kernel itself on a small feature map. An entry point runs
// the call only when the dispatcher, below the autograd layer, would hand it straight to that kernel:
// dense CPU tensors with nothing in the way (no Python subclass or mode, functorch, functionalization,
// tracer, autocast); it returns None for anything else, which then goes through torch.ops. It records
// the op for the profiler as the dispatcher does.
#include <Python.h>

#include <ATen/record_function.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>

#include <initializer_list>
#include <optional>

#include "cpu_ops.h"

namespace {

using at::Tensor;

// Whether the dispatcher would send a call with these tensors (nullptr: an absent optional) to the CPU
// kernel once past autograd: the highest dispatch key left is CPU itself.
bool goes_straight_to_cpu(std::initializer_list<const Tensor*> tensors) {
  c10::DispatchKeySet keys;
  for (const Tensor* t : tensors) {
    if (t != nullptr) keys = keys | t->key_set();
  }
  const c10::impl::LocalDispatchKeySet local = c10::impl::tls_local_dispatch_key_set();
  keys = ((keys | local.included_) - local.excluded_) - c10::autograd_dispatch_keyset_with_ADInplaceOrView -
         c10::DispatchKeySet(c10::DispatchKey::BackendSelect);  // a fallthrough for these ops
  return keys.highestPriorityTypeId() == c10::DispatchKey::CPU;
}

// Python arguments as the schema types; false when one is not (the caller then declines the call).
bool as_tensor(PyObject* obj, const Tensor*& out) {
  if (!THPVariable_Check(obj)) return false;
  out = &THPVariable_Unpack(obj);
  return true;
}

bool as_optional_tensor(PyObject* obj, const Tensor*& out) {
  if (obj == Py_None) {
    out = nullptr;
    return true;
  }
  return as_tensor(obj, out);
}

bool as_double(PyObject* obj, double& out) {
  if (!PyFloat_Check(obj)) return false;
  out = PyFloat_AS_DOUBLE(obj);
  return true;
}

bool as_int(PyObject* obj, int64_t& out) {
  if (!PyLong_Check(obj)) return false;
  out = PyLong_AsLongLong(obj);
  return !(out == -1 && PyErr_Occurred());
}

bool as_bool(PyObject* obj, bool& out) {
  if (!PyBool_Check(obj)) return false;
  out = obj == Py_True;
  return true;
}

std::optional<Tensor> optional_of(const Tensor* t) { return t == nullptr ? std::nullopt : std::optional<Tensor>(*t); }

PyObject* decline() { Py_RETURN_NONE; }

// Runs `kernel` as the dispatcher would below autograd: recorded for the profiler, without the GIL.
template <typename Kernel>
auto run_kernel(const char* name, Kernel&& kernel) {
  RECORD_FUNCTION(name, c10::ArrayRef<const c10::IValue>{});
  pybind11::gil_scoped_release no_gil;
  at::AutoDispatchBelowAutograd below_autograd;
  return kernel();
}

// region_adain_cpu(x, masks, gamma, beta, region_stats, eps, activation, residual): torch.ops.lmt.region_adain.
PyObject* region_adain_cpu(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  const Tensor *x, *masks, *gamma, *beta, *residual;
  bool region_stats;
  double eps;
  int64_t activation;
  if (nargs != 8 || !as_tensor(args[0], x) || !as_tensor(args[1], masks) || !as_tensor(args[2], gamma) ||
      !as_tensor(args[3], beta) || !as_bool(args[4], region_stats) || !as_double(args[5], eps) ||
      !as_int(args[6], activation) || !as_optional_tensor(args[7], residual) ||
      !goes_straight_to_cpu({x, masks, gamma, beta, residual})) {
    return decline();
  }
  return THPVariable_Wrap(run_kernel("lmt::region_adain", [&] {
    return lmt::torch_cpu::region_adain(*x, *masks, *gamma, *beta, region_stats, eps, activation,
                                        optional_of(residual));
  }));
  END_HANDLE_TH_ERRORS
}

// instance_norm_cpu / layer_norm_cpu(x, weight, bias, eps, activation, residual): torch.ops.lmt.<op>.
template <bool kLayerNorm>
PyObject* spatial_norm_cpu(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  const Tensor *x, *weight, *bias, *residual;
  double eps;
  int64_t activation;
  if (nargs != 6 || !as_tensor(args[0], x) || !as_optional_tensor(args[1], weight) ||
      !as_optional_tensor(args[2], bias) || !as_double(args[3], eps) || !as_int(args[4], activation) ||
      !as_optional_tensor(args[5], residual) || !goes_straight_to_cpu({x, weight, bias, residual})) {
    return decline();
  }
  return THPVariable_Wrap(run_kernel(kLayerNorm ? "lmt::layer_norm" : "lmt::instance_norm", [&] {
    const auto norm = kLayerNorm ? &lmt::torch_cpu::layer_norm : &lmt::torch_cpu::instance_norm;
    return norm(*x, optional_of(weight), optional_of(bias), eps, activation, optional_of(residual));
  }));
  END_HANDLE_TH_ERRORS
}

// masked_moments_cpu(x, masks, eps): torch.ops.lmt.masked_moments, as a (mean, var) tuple.
PyObject* masked_moments_cpu(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  const Tensor *x, *masks;
  double eps;
  if (nargs != 3 || !as_tensor(args[0], x) || !as_tensor(args[1], masks) || !as_double(args[2], eps) ||
      !goes_straight_to_cpu({x, masks})) {
    return decline();
  }
  auto [mean, var] = run_kernel("lmt::masked_moments", [&] { return lmt::torch_cpu::masked_moments(*x, *masks, eps); });
  PyObject* result = PyTuple_New(2);
  if (result == nullptr) return nullptr;
  PyTuple_SET_ITEM(result, 0, THPVariable_Wrap(std::move(mean)));  // the tuple takes the references
  PyTuple_SET_ITEM(result, 1, THPVariable_Wrap(std::move(var)));
  return result;
  END_HANDLE_TH_ERRORS
}

PyMethodDef module_methods[] = {
    {"region_adain_cpu", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(region_adain_cpu)), METH_FASTCALL,
     "torch.ops.lmt.region_adain straight into the CPU kernel; None if the dispatcher would not go there"},
    {"instance_norm_cpu", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(spatial_norm_cpu<false>)),
     METH_FASTCALL, "torch.ops.lmt.instance_norm straight into the CPU kernel; None if not applicable"},
    {"layer_norm_cpu", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(spatial_norm_cpu<true>)),
     METH_FASTCALL, "torch.ops.lmt.layer_norm straight into the CPU kernel; None if not applicable"},
    {"masked_moments_cpu", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(masked_moments_cpu)),
     METH_FASTCALL, "torch.ops.lmt.masked_moments straight into the CPU kernel; None if not applicable"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT,
    "_C",
    "lmt_fast compiled kernels; the ops are registered as torch.ops.lmt.*",
    -1,
    module_methods,
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
