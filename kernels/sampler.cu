// Launcher of the task sampler's kernels (sampler_kernels.cuh).
#include "launch.cuh"
#include "sampler_kernels.cuh"

namespace ml2o::cuda {
namespace {

unsigned grid_for(int64_t total) {
  const int64_t blocks = (total + kSampleThreads - 1) / kSampleThreads;
  return static_cast<unsigned>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}

}  // namespace

void launch_sample_task(const TaskSpec& spec, float* A, float* b, float* x0, cudaStream_t stream) {
  SampleArgs s;
  s.seed = spec.seed;
  s.instances = spec.instances;
  s.dim = spec.dim;
  s.sigma = spec.sigma;
  s.b_lo = spec.b_lo;
  s.b_hi = spec.b_hi;
  s.x0_scale = spec.x0_scale;
  s.rastrigin = spec.family == Family::rastrigin;
  const int64_t nd = spec.instances * spec.dim;
  if (A) {
    sample_matrix_kernel<<<grid_for(nd * spec.dim), kSampleThreads, 0, stream>>>(s, A);
    ML2O_CUDA_CHECK_LAUNCH("sample_matrix_kernel");
    count_launch();
  }
  if (b) {
    sample_vector_kernel<<<grid_for(nd), kSampleThreads, 0, stream>>>(s, b);
    ML2O_CUDA_CHECK_LAUNCH("sample_vector_kernel");
    count_launch();
  }
  sample_start_kernel<<<grid_for(nd), kSampleThreads, 0, stream>>>(s, x0);
  ML2O_CUDA_CHECK_LAUNCH("sample_start_kernel");
  count_launch();
}

}  // namespace ml2o::cuda
