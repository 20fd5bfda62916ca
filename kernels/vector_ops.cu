// Launchers of the vector kernels (vector_kernels.cuh).
#include "launch.cuh"
#include "vector_kernels.cuh"

namespace ml2o::cuda {

namespace {
constexpr int kVectorThreads = 256;
unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kVectorThreads - 1) / kVectorThreads); }
}  // namespace

void launch_axpy(float* y, float a, const float* x, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  axpy_kernel<<<blocks_for(n), kVectorThreads, 0, s>>>(y, a, x, n);
  ML2O_CUDA_CHECK_LAUNCH("axpy_kernel");
  count_launch();
}

void launch_mean(float* out, const float* const* in, int k, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  mean_kernel<<<blocks_for(n), kVectorThreads, 0, s>>>(out, in, k, n);
  ML2O_CUDA_CHECK_LAUNCH("mean_kernel");
  count_launch();
}

void launch_finite(const float* v, int64_t n, int* all_ok, cudaStream_t s) {
  if (n == 0) return;
  finite_kernel<<<blocks_for(n), kVectorThreads, 0, s>>>(v, n, all_ok);
  ML2O_CUDA_CHECK_LAUNCH("finite_kernel");
  count_launch();
}

void launch_adam(const AdamArgs& a, cudaStream_t s) {
  if (a.n == 0) return;
  adam_kernel<<<blocks_for(a.n), kVectorThreads, 0, s>>>(a);
  ML2O_CUDA_CHECK_LAUNCH("adam_kernel");
  count_launch();
}

}  // namespace ml2o::cuda
