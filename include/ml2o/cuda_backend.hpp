// The CUDA backend (kernels/). Declared here so host code can create it; defined only when the
// project is built with ML2O_CUDA (ML2O_HAVE_CUDA is then defined).
#pragma once
#include <memory>

#include "ml2o/backend.hpp"

namespace ml2o {

bool cuda_device_present();                  // a CUDA device is visible at run time
std::unique_ptr<Backend> make_cuda_backend();  // throws std::runtime_error without a device

}  // namespace ml2o
