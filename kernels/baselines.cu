// Launcher of the baseline kernel (baseline_kernel.cuh).
#include "baseline_kernel.cuh"
#include "launch.cuh"

namespace ml2o::cuda {

void launch_baseline(const BaselineArgs& a, const Geometry& g, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>(g.blocks)), block(static_cast<unsigned>(g.threads));
  if (g.large) {
    const size_t smem = 4 * sizeof(float) * kLargeThreads;
    baseline_kernel<kLargeThreads><<<grid, block, smem, s>>>(a);
  } else {
    const size_t smem = 4 * sizeof(float) * kSmallThreads;
    baseline_kernel<kSmallThreads><<<grid, block, smem, s>>>(a);
  }
  ML2O_CUDA_CHECK_LAUNCH("baseline_kernel");
  count_launch();
}

}  // namespace ml2o::cuda
