// Elementwise kernels on weight-sized vectors: the small math of a meta-step (inner SGD step,
// mean over tasks, finiteness, Adam) done where the vectors live. Each thread owns one element;
// the arithmetic is rounded operation by operation (no FMA contraction) so the results are
// bit-identical to the host reference (adam_update, CpuBackend). Kernel bodies are in this header
// so the KernelEmulation tests run them on the CPU.
#pragma once
#include <cstdint>

#include "launch.cuh"

namespace ml2o::cuda {
namespace {  // internal linkage: included by vector_ops.cu and the emulation tests only

// y[p] += a * x[p]
__global__ void axpy_kernel(float* y, float a, const float* x, int64_t n) {
  const int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p < n) y[p] = __fadd_rn(y[p], __fmul_rn(a, x[p]));
}

// out[p] = ((0 + in[0][p] / k) + in[1][p] / k) + ... in item order.
__global__ void mean_kernel(float* out, const float* const* in, int k, int64_t n) {
  const int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= n) return;
  const float kf = float(k);
  float acc = 0.0f;
  for (int i = 0; i < k; ++i) acc = __fadd_rn(acc, in[i][p] / kf);
  out[p] = acc;
}

// *all_ok stays 1 unless some element is NaN or infinite (every writer stores the same 0).
__global__ void finite_kernel(const float* v, int64_t n, int* all_ok) {
  const int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p < n && !isfinite(v[p])) *all_ok = 0;
}

__global__ void adam_kernel(AdamArgs a) {
  const int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= a.n) return;
  const double g = a.g[p];
  a.m[p] = __dadd_rn(__dmul_rn(a.beta1, a.m[p]), __dmul_rn(1.0 - a.beta1, g));
  a.v[p] = __dadd_rn(__dmul_rn(a.beta2, a.v[p]), __dmul_rn(__dmul_rn(1.0 - a.beta2, g), g));
  const double step = __dmul_rn(a.lr, a.m[p] / a.c1) / __dadd_rn(sqrt(a.v[p] / a.c2), a.eps);
  a.w[p] = static_cast<float>(__dsub_rn(double(a.w[p]), step));
}

}  // namespace
}  // namespace ml2o::cuda
