// The CPU kernels of the torch.ops.lmt schemas, as the dispatcher calls them (bindings.cpp). module.cpp
// also calls them directly, for calls the dispatcher would hand to them anyway (see module.cpp).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace lmt {
namespace torch_cpu {

std::tuple<at::Tensor, at::Tensor> masked_moments(const at::Tensor& x, const at::Tensor& masks, double eps);

at::Tensor region_adain(const at::Tensor& x, const at::Tensor& masks, const at::Tensor& gamma, const at::Tensor& beta,
                        bool region_stats, double eps, int64_t activation, const std::optional<at::Tensor>& residual);

at::Tensor instance_norm(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                         const std::optional<at::Tensor>& bias, double eps, int64_t activation,
                         const std::optional<at::Tensor>& residual);

at::Tensor layer_norm(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                      const std::optional<at::Tensor>& bias, double eps, int64_t activation,
                      const std::optional<at::Tensor>& residual);

}  // namespace torch_cpu
}  // namespace lmt
