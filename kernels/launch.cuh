// Internal interface between the CUDA backend (cuda_backend.cu) and its kernels: block geometry,
// kernel arguments, launchers, and a tracked device buffer. Not installed; host code sees only
// include/ml2o/cuda_backend.hpp.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda_check.cuh"
#include "ml2o/baselines.hpp"
#include "ml2o/cell.hpp"
#include "ml2o/optimizee.hpp"

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

// ---- block geometry -----------------------------------------------------------------------------
// One thread per coordinate; a block owns `ipb` whole instances (the optimizee gradient couples an
// instance's d coordinates and is computed in the block through shared memory). Everything here
// is a function of (N, d) only, never of the device, so the reduction order, and the result, is
// the same on any GPU.
constexpr int kMaxDim = 512;        // largest d: one instance must fit in one block
constexpr int kSmallThreads = 128;  // target block size for d <= 128
constexpr int kLargeThreads = 512;  // block size limit for 128 < d <= 512

struct Geometry {
  int d = 0;
  int ipb = 0;          // instances per block
  int threads = 0;      // blockDim.x: ipb * d rounded up to a warp
  int64_t blocks = 0;   // ceil(N / ipb)
  bool large = false;   // threads > kSmallThreads: the 512-thread kernel instantiation
};

Geometry make_geometry(int64_t instances, int dim);  // throws std::runtime_error for d > kMaxDim

// ---- the unroll kernels -------------------------------------------------------------------------
// BPTT tape, one record per coordinate-step, field-major [T][kTapeFields][C] so that a warp's
// accesses are coalesced: the gradient input g, the iterate x_t, and the coordinate's recurrent
// state before the step. The backward kernel recomputes the step's activations from it with
// optimizer_step_forward (recompute instead of storing StepTape's 387 floats).
constexpr int kTapeG = 0, kTapeX = 1, kTapeM = 2, kTapeV = 3;
constexpr int kTapeH1 = 4, kTapeC1 = kTapeH1 + kHidden, kTapeH2 = kTapeC1 + kHidden,
              kTapeC2 = kTapeH2 + kHidden;
constexpr int kTapeFields = kTapeC2 + kHidden;  // 84 floats = 336 bytes per coordinate-step

struct UnrollArgs {
  OptimizerHyper hyper;
  const float* w = nullptr;      // [P] weights
  int P = 0;
  TaskView<float> task{};        // device pointers
  float* x = nullptr;            // [C] iterate, advanced in place
  CoordState<float>* coord = nullptr;  // [C] recurrent state, advanced in place
  int64_t k0 = 1;                // global step of the first update
  int T = 0;
  int ipb = 0;
  int64_t blocks = 0;
  float* tape = nullptr;         // [T][kTapeFields][C], null for forward-only
  float* gT = nullptr;           // [C] gradient at x_T (seeds the adjoint), null for forward-only
  float* partial = nullptr;      // [rows][blocks]: weight-gradient rows 0..P-1, loss rows after
  int64_t loss_row0 = 0;         // first loss row (P with a backward pass, else 0)
  float inv_n = 0.0f;            // 1 / N (float, as the CPU reference rounds it)
  bool second = false;           // GradMode::second_derivatives
};

// Kernel variant: 1 = one thread per coordinate (unroll_kernels.cuh), 2 = tiled "fully fused"
// (unroll_v2_kernels.cuh; geometries with d > 128 fall back to v1). Chosen by the backend
// (ML2O_CUDA_KERNEL or cuda_set_kernel_variant).
// v2 by default: on an H200 (2026-11-28) it passed every GPU parity test, memcheck and racecheck,
// and ran 1.3x faster than v1 (bench/RESULTS.md). v1 stays selectable (ML2O_CUDA_KERNEL=v1).
constexpr int kDefaultKernelVariant = 2;
int kernel_variant();                     // the variant in use (defined in cuda_backend.cu)
bool uses_v2(const Geometry& g, int variant);  // whether this launch runs the v2 kernels

size_t forward_smem_bytes(const Geometry& g, int P, int variant);
size_t backward_smem_bytes(const Geometry& g, int P, int variant);
void launch_unroll_forward(const UnrollArgs& a, const Geometry& g, cudaStream_t s, int variant);
void launch_unroll_backward(const UnrollArgs& a, const Geometry& g, cudaStream_t s, int variant);

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
void launch_finite(const float* v, int64_t n, int* all_ok, cudaStream_t s);
void launch_adam(const AdamArgs& a, cudaStream_t s);

// ---- sampler ------------------------------------------------------------------------------------
void launch_sample_task(const TaskSpec& spec, float* A, float* b, float* x0, cudaStream_t s);

}  // namespace ml2o::cuda
