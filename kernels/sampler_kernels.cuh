// The task sampler's kernels (launched from sampler.cu): the same counter-based draws as
// sample_task<float> (host/optimizee.cpp), one thread per element. The arithmetic is done in double with explicit
// round-to-nearest operations where the host multiplies then adds (nvcc would otherwise fuse them
// into one FMA and round once), then rounded to float once, as the host does.
//
// A header so that the CPU emulation test (tests/test_cuda.cpp) can run this code; include it from
// one .cu only (internal linkage).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "ml2o/rng.hpp"

namespace ml2o::cuda {
namespace {

struct SampleArgs {
  uint64_t seed;
  int64_t instances;
  int dim;
  double sigma, b_lo, b_hi, x0_scale;
  bool rastrigin;
};

constexpr int kSampleThreads = 256;

// A[n][e] = float(sigma * N(0,1)), e < d * d.
__global__ void sample_matrix_kernel(const SampleArgs s, float* A) {
  const int64_t dd = static_cast<int64_t>(s.dim) * s.dim;
  const int64_t total = s.instances * dd;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = i / dd, e = i % dd;
    A[i] = static_cast<float>(
        __dmul_rn(s.sigma, normal01(s.seed, Stream::matrix_a, static_cast<uint64_t>(n),
                                    static_cast<uint64_t>(e))));
  }
}

// b[n][j] = float(b_lo + (b_hi - b_lo) * U(0,1)).
__global__ void sample_vector_kernel(const SampleArgs s, float* b) {
  const int64_t total = s.instances * s.dim;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = i / s.dim, j = i % s.dim;
    const double u = uniform01(s.seed, Stream::vector_b, static_cast<uint64_t>(n), static_cast<uint64_t>(j));
    b[i] = static_cast<float>(__dadd_rn(s.b_lo, __dmul_rn(__dsub_rn(s.b_hi, s.b_lo), u)));
  }
}

// x0[n][j] = float(scale * N(0,1)), Rastrigin: float(scale * (2 U(0,1) - 1)).
__global__ void sample_start_kernel(const SampleArgs s, float* x0) {
  const int64_t total = s.instances * s.dim;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t n = static_cast<uint64_t>(i / s.dim), j = static_cast<uint64_t>(i % s.dim);
    double v;
    if (s.rastrigin)
      v = __dmul_rn(s.x0_scale,
                    __dsub_rn(__dmul_rn(2.0, uniform01(s.seed, Stream::start_x, n, j)), 1.0));
    else
      v = __dmul_rn(s.x0_scale, normal01(s.seed, Stream::start_x, n, j));
    x0[i] = static_cast<float>(v);
  }
}

}  // namespace
}  // namespace ml2o::cuda
