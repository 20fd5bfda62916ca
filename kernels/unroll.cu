// Launchers of the unroll kernels (unroll_kernels.cuh) and the block geometry.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "launch.cuh"
#include "unroll_kernels.cuh"
#include "unroll_v2_kernels.cuh"

namespace ml2o::cuda {

Geometry make_geometry(int64_t instances, int dim) {
  if (dim < 1 || dim > kMaxDim)
    throw std::runtime_error("cuda backend: dimension d = " + std::to_string(dim) +
                             " is not supported (1 <= d <= " + std::to_string(kMaxDim) +
                             ": one instance's coordinates must fit in one thread block)");
  if (instances < 1)
    throw std::runtime_error("cuda backend: a task needs at least one instance");
  Geometry g;
  g.d = dim;
  g.ipb = dim <= kSmallThreads ? std::max(1, kSmallThreads / dim) : 1;
  g.threads = (g.ipb * dim + 31) / 32 * 32;
  g.blocks = (instances + g.ipb - 1) / g.ipb;
  g.large = g.threads > kSmallThreads;
  if (g.blocks > 0x7fffffffLL)
    throw std::runtime_error("cuda backend: too many instances for one launch");
  return g;
}

namespace {

template <class Kernel>
void prepare(Kernel kernel, size_t smem) {
  int dev = 0, optin = 0;
  ML2O_CUDA_CHECK(cudaGetDevice(&dev));
  ML2O_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  if (smem > static_cast<size_t>(optin))
    throw std::runtime_error("cuda backend: a kernel needs " + std::to_string(smem) +
                             " bytes of shared memory per block, the device allows " +
                             std::to_string(optin));
  ML2O_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
}

}  // namespace

bool uses_v2(const Geometry& g, int variant) { return variant == 2 && !g.large; }

size_t forward_smem_bytes(const Geometry& g, int P, int variant) {
  if (uses_v2(g, variant)) return sizeof(float) * kV2ForwardFloats;
  const int maxt = g.large ? kLargeThreads : kSmallThreads;
  return sizeof(float) * (static_cast<size_t>(P) + 3 * static_cast<size_t>(maxt));
}

size_t backward_smem_bytes(const Geometry& g, int P, int variant) {
  if (uses_v2(g, variant)) return sizeof(float) * kV2BackwardFloats;
  const int maxt = g.large ? kLargeThreads : kSmallThreads;
  return sizeof(float) * (2 * static_cast<size_t>(P) + kStageRows * kStageStride +
                          3 * static_cast<size_t>(maxt));
}

void launch_unroll_forward(const UnrollArgs& a, const Geometry& g, cudaStream_t s, int variant) {
  const size_t smem = forward_smem_bytes(g, a.P, variant);
  const dim3 grid(static_cast<unsigned>(g.blocks)), block(static_cast<unsigned>(g.threads));
  if (uses_v2(g, variant)) {
    prepare(unroll_forward_v2_kernel, smem);
    unroll_forward_v2_kernel<<<grid, dim3(kV2Threads), smem, s>>>(a);
  } else if (g.large) {
    prepare(unroll_forward_kernel<kLargeThreads>, smem);
    unroll_forward_kernel<kLargeThreads><<<grid, block, smem, s>>>(a);
  } else {
    prepare(unroll_forward_kernel<kSmallThreads>, smem);
    unroll_forward_kernel<kSmallThreads><<<grid, block, smem, s>>>(a);
  }
  ML2O_CUDA_CHECK_LAUNCH("unroll_forward_kernel");
  count_launch();
}

void launch_unroll_backward(const UnrollArgs& a, const Geometry& g, cudaStream_t s, int variant) {
  const size_t smem = backward_smem_bytes(g, a.P, variant);
  const dim3 grid(static_cast<unsigned>(g.blocks)), block(static_cast<unsigned>(g.threads));
  if (uses_v2(g, variant)) {
    prepare(unroll_backward_v2_kernel, smem);
    unroll_backward_v2_kernel<<<grid, dim3(kV2Threads), smem, s>>>(a);
  } else if (g.large) {
    prepare(unroll_backward_kernel<kLargeThreads>, smem);
    unroll_backward_kernel<kLargeThreads><<<grid, block, smem, s>>>(a);
  } else {
    prepare(unroll_backward_kernel<kSmallThreads>, smem);
    unroll_backward_kernel<kSmallThreads><<<grid, block, smem, s>>>(a);
  }
  ML2O_CUDA_CHECK_LAUNCH("unroll_backward_kernel");
  count_launch();
}

}  // namespace ml2o::cuda
