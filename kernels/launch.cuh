// Internal interface between the CUDA backend (cuda_backend.cu) and its kernels: launchers, kernel
// arguments of the baselines and vector ops, and a tracked device buffer (the unroll's geometry,
// arguments and batch plan are in unroll_plan.hpp, plain host code). Not installed; host code sees
// only include/ml2o/cuda_backend.hpp.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda_check.cuh"
#include "ml2o/baselines.hpp"
#include "ml2o/cell.hpp"
#include "ml2o/optimizee.hpp"
#include "unroll_plan.hpp"

namespace ml2o::cuda {

// ---- bookkeeping shared by the .cu files (defined in cuda_backend.cu) ----------------------------
void count_launch();                        // one kernel launch (a CUB call counts as one)
void count_alloc(std::ptrdiff_t bytes);     // +bytes on cudaMalloc, -bytes on cudaFree

// A grow-only device allocation: reused across calls so nothing is allocated inside a loop.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { release(); }
  void ensure(size_t bytes) {
    if (bytes <= bytes_) return;
    release();
    ML2O_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
    bytes_ = bytes;
    count_alloc(static_cast<std::ptrdiff_t>(bytes));
  }
  void release() {
    if (ptr_) {
      cudaFree(ptr_);  // not checked: also runs from destructors during unwinding
      count_alloc(-static_cast<std::ptrdiff_t>(bytes_));
    }
    ptr_ = nullptr;
    bytes_ = 0;
  }
  template <class T> T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// ---- the unroll kernels (geometry, arguments and the batch plan: unroll_plan.hpp) ---------------
// Kernel variant: 1 = one thread per coordinate (unroll_kernels.cuh), 2 = tiled "fully fused"
// (unroll_v2_kernels.cuh; geometries with d > 128 fall back to v1). Chosen by the backend
// (ML2O_CUDA_KERNEL or cuda_set_kernel_variant).
// v2 by default: on an H200 (2026-11-28) it passed every GPU parity test, memcheck and racecheck,
// and ran 1.3x faster than v1 (bench/RESULTS.md). v1 stays selectable (ML2O_CUDA_KERNEL=v1).
constexpr int kDefaultKernelVariant = 2;
int kernel_variant();  // the variant in use (defined in cuda_backend.cu)

// One launch of a plan's group: its forward kernel, or with `backward` its backward kernel, over
// the group's blocks (dual: the Dual<float> HVP instantiation). The first launch of each kernel
// sets its shared-memory limit, so it must not be the first one inside a graph capture.
void launch_unroll_group(const LaunchGroup& g, const BatchArgs& b, int P, bool dual, bool backward,
                         cudaStream_t s);
// items[k].grad[p] = reduced[items[k].grad_row0 + p] for the count items' P rows.
void launch_scatter_rows(const float* reduced, const UnrollArgs* items, int count, int P, cudaStream_t s);

// ---- baselines ----------------------------------------------------------------------------------
struct BaselineArgs {
  BaselineKind kind = BaselineKind::adam;
  TaskView<float> task{};        // device pointers
  const float* x0 = nullptr;     // [C]
  const double* lipschitz = nullptr;  // [N] (ISTA/FISTA only)
  double lam = 0.0;              // the task's lambda in double (ISTA/FISTA threshold lam / L)
  const float* coef = nullptr;   // [steps][3]: bc1, bc2, FISTA extrapolation, rounded on the host
  float lr = 0, mu = 0, b1 = 0, b2 = 0, eps = 0, decay = 0;
  float one_b1 = 0, one_b2 = 0, one_decay = 0;  // 1 - beta1 etc., in double rounded once
  int steps = 0;
  int ipb = 0;
  int64_t blocks = 0;
  double* partial = nullptr;     // [steps + 1][blocks] per-block sums of instance objectives
};
void launch_baseline(const BaselineArgs& a, const Geometry& g, cudaStream_t s);

// ---- vector ops (vector_kernels.cuh) ------------------------------------------------------------
// One Adam update with double moments; c1, c2 = 1 - beta^t computed on the host.
struct AdamArgs {
  float* w;
  const float* g;
  double* m;
  double* v;
  int64_t n;
  double lr, beta1, beta2, eps, c1, c2;
};
void launch_axpy(float* y, float a, const float* x, int64_t n, cudaStream_t s);
void launch_mean(float* out, const float* const* in, int k, int64_t n, cudaStream_t s);
void launch_finite(const float* v, int64_t n, int* any_bad, cudaStream_t s);  // *any_bad = 1 on NaN/inf
void launch_adam(const AdamArgs& a, cudaStream_t s);

// ---- sampler ------------------------------------------------------------------------------------
void launch_sample_task(const TaskSpec& spec, float* A, float* b, float* x0, cudaStream_t s);

}  // namespace ml2o::cuda
