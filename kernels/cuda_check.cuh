// Error checking for every CUDA call and launch: a failure throws std::runtime_error naming the
// call, the file and the line (llm.c's cudaCheck, as an exception so the host can report it).
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace ml2o::cuda {

[[noreturn]] inline void cuda_fail(cudaError_t err, const char* what, const char* file, int line) {
  throw std::runtime_error(std::string("CUDA error: ") + cudaGetErrorName(err) + " (" +
                           cudaGetErrorString(err) + ") in " + what + " at " + file + ":" +
                           std::to_string(line));
}

}  // namespace ml2o::cuda

#define ML2O_CUDA_CHECK(call)                                                \
  do {                                                                       \
    const cudaError_t ml2o_err_ = (call);                                    \
    if (ml2o_err_ != cudaSuccess)                                            \
      ::ml2o::cuda::cuda_fail(ml2o_err_, #call, __FILE__, __LINE__);         \
  } while (0)

// After every kernel launch: launch-configuration errors surface here.
#define ML2O_CUDA_CHECK_LAUNCH(name)                                         \
  do {                                                                       \
    const cudaError_t ml2o_err_ = cudaGetLastError();                        \
    if (ml2o_err_ != cudaSuccess)                                            \
      ::ml2o::cuda::cuda_fail(ml2o_err_, "launch of " name, __FILE__, __LINE__); \
  } while (0)
