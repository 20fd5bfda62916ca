// Launchers of the batched unroll kernels (unroll_kernels.cuh: v1 in float and Dual<float>;
// unroll_v2_kernels.cuh: v2). What each launch covers is the plan's (unroll_plan.hpp).
#include <algorithm>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

#include "launch.cuh"
#include "unroll_kernels.cuh"
#include "unroll_v2_kernels.cuh"
#include "lab/unroll_v3_lab_kernels.cuh"  // opt-in only (ML2O_CUDA_KERNEL=v3-lab), unverified

namespace ml2o::cuda {

namespace {

// Raises a kernel's dynamic shared-memory limit to what it can ever need (the largest arch), once
// per kernel, checking it against the device's opt-in limit. This is not a stream operation, so it
// happens before any graph capture (a plan's first run is always a plain launch).
template <class Kernel>
void prepare(Kernel kernel, size_t max_smem, size_t smem) {
  static std::mutex mu;
  static std::map<const void*, size_t> limit;  // kernel -> the limit set
  std::lock_guard<std::mutex> lock(mu);
  const void* key = reinterpret_cast<const void*>(kernel);
  auto it = limit.find(key);
  if (it == limit.end()) {
    int dev = 0, optin = 0;
    ML2O_CUDA_CHECK(cudaGetDevice(&dev));
    ML2O_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    const size_t set = std::min(max_smem, static_cast<size_t>(optin));
    ML2O_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(set)));
    it = limit.emplace(key, set).first;
  }
  if (smem > it->second)
    throw std::runtime_error("cuda backend: a kernel needs " + std::to_string(smem) +
                             " bytes of shared memory per block, the device allows " +
                             std::to_string(it->second));
}

template <class Kernel>
void launch(Kernel kernel, size_t max_smem, size_t smem, const LaunchGroup& g, const BatchArgs& b,
            cudaStream_t s) {
  prepare(kernel, max_smem, smem);
  kernel<<<dim3(static_cast<unsigned>(g.blocks)), dim3(static_cast<unsigned>(g.threads)), smem, s>>>(b);
}

template <int MAXT, class S>
void launch_v1(const LaunchGroup& g, const BatchArgs& b, int P, bool backward, cudaStream_t s) {
  constexpr bool dual = kIsDual<S>;
  const KernelClass cls = MAXT == kLargeThreads ? KernelClass::v1_large : KernelClass::v1_small;
  constexpr int Pmax = RnnpropLayout::size;
  if (backward)
    launch(unroll_backward_kernel<MAXT, S>, v1_backward_smem(cls, Pmax, dual),
           v1_backward_smem(cls, P, dual), g, b, s);
  else
    launch(unroll_forward_kernel<MAXT, S>, v1_forward_smem(cls, Pmax, dual),
           v1_forward_smem(cls, P, dual), g, b, s);
}

}  // namespace

void launch_unroll_group(const LaunchGroup& g, const BatchArgs& b, int P, bool dual, bool backward,
                         cudaStream_t s) {
  if (g.blocks == 0) return;
  switch (g.cls) {
    case KernelClass::v2:
      if (dual) throw std::logic_error("cuda backend: the HVP has no v2 kernel");
      if (backward)
        launch(unroll_backward_v2_kernel, sizeof(float) * kV2BackwardFloats,
               sizeof(float) * kV2BackwardFloats, g, b, s);
      else
        launch(unroll_forward_v2_kernel, sizeof(float) * kV2ForwardFloats,
               sizeof(float) * kV2ForwardFloats, g, b, s);
      break;
    case KernelClass::v3_lab:  // the v3 forward (lab), v2's backward from the same tape
      if (dual) throw std::logic_error("cuda backend: the HVP has no v3 kernel");
      if (backward)
        launch(unroll_backward_v2_kernel, sizeof(float) * kV2BackwardFloats,
               sizeof(float) * kV2BackwardFloats, g, b, s);
      else
        launch(unroll_forward_v3_lab_kernel, sizeof(float) * kV3ForwardFloats,
               sizeof(float) * kV3ForwardFloats, g, b, s);
      break;
    case KernelClass::v1_small:
      if (dual) launch_v1<kSmallThreads, DualF>(g, b, P, backward, s);
      else launch_v1<kSmallThreads, float>(g, b, P, backward, s);
      break;
    case KernelClass::v1_large:
      if (dual) launch_v1<kLargeThreads, DualF>(g, b, P, backward, s);
      else launch_v1<kLargeThreads, float>(g, b, P, backward, s);
      break;
  }
  ML2O_CUDA_CHECK_LAUNCH("unroll kernel");
  count_launch();
}

}  // namespace ml2o::cuda
