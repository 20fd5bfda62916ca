// The baseline kernel (launched from baselines.cu): analytical baselines on the device with
// run_baseline_cpu's semantics (host/baselines.cpp), the whole run of `steps` steps in one
// launch, one thread per coordinate, a block owns whole instances (block_optimizee.cuh). Each
// update is written with explicit round-to-nearest float operations in the host's order (no FMA
// contraction); the step-dependent coefficients come from the host, computed in double and rounded
// once as the CPU does. The objective of each step is summed per block in instance order in
// double; the backend sums the blocks with cub::DeviceSegmentedReduce.
//
// A header so that the CPU emulation test (tests/test_cuda.cpp) can run this code; include it from
// one .cu only (internal linkage).
#pragma once
#include "block_optimizee.cuh"
#include "launch.cuh"

namespace ml2o::cuda {
namespace {

// Shared memory: x[MAXT] | y[MAXT] (FISTA's extrapolated point) | r[MAXT] | obj[MAXT]
template <int MAXT>
__global__ void __launch_bounds__(MAXT) baseline_kernel(const BaselineArgs a) {
  extern __shared__ float smem[];
  float* x_sh = smem;
  float* y_sh = x_sh + MAXT;
  float* r_sh = y_sh + MAXT;
  float* obj_sh = r_sh + MAXT;
  const TaskView<float>& task = a.task;
  TaskView<float> smooth = task;  // LASSO's smooth part 1/2 ||Ax - b||^2
  smooth.family = Family::quadratic;
  const int d = task.dim;
  const BlockPlace pl = block_place(task.instances, d, a.ipb, blockIdx.x);
  const int64_t c = pl.n0 * d + pl.tid;
  const int64_t n = pl.n0 + pl.li;
  const bool matrix = has_matrix(task.family);
  const bool proximal = a.kind == BaselineKind::ista || a.kind == BaselineKind::fista;
  const bool fista = a.kind == BaselineKind::fista;

  float s1 = 0.0f, s2 = 0.0f;  // per-coordinate state: velocity / m, v / s / FISTA's y
  float step = 0.0f, thr = 0.0f;
  bool has_l = false;
  if (pl.active) {
    const float x = a.x0[c];
    x_sh[pl.tid] = x;
    if (fista) s1 = x;  // y_1 = x_0
    y_sh[pl.tid] = s1;
    if (proximal) {
      const double L = a.lipschitz[n];
      has_l = L > 0.0;
      if (has_l) {
        step = static_cast<float>(1.0 / L);
        thr = static_cast<float>(a.lam / L);
      }
    }
  }
  const float* xn = x_sh + pl.li * d;
  const float* yn = y_sh + pl.li * d;
  const float* rn = r_sh + pl.li * d;

  for (int k = 0;; ++k) {
    __syncthreads();  // x (and y) of this step visible
    if (matrix && pl.active) r_sh[pl.tid] = residual_row(task, n, xn, pl.j, true);
    __syncthreads();  // residuals at x visible
    float g = 0.0f;
    if (pl.active) {
      if (pl.j == 0) obj_sh[pl.li] = block_instance_objective(task, xn, rn);
      if (k < a.steps && !fista) {
        if (a.kind == BaselineKind::ista)
          g = coord_gradient(smooth, n, pl.j, xn, rn, false);
        else
          g = coord_gradient(task, n, pl.j, xn, rn, true);
      }
    }
    __syncthreads();  // objectives visible; reads of x and r for this step done
    if (pl.tid == 0) {
      double total = 0.0;
      for (int i = 0; i < pl.nin; ++i) total += static_cast<double>(obj_sh[i]);
      a.partial[static_cast<int64_t>(k) * a.blocks + blockIdx.x] = total;
    }
    if (k == a.steps) break;
    if (fista) {  // the gradient of the smooth part at y (LASSO only)
      if (pl.active) r_sh[pl.tid] = residual_row(task, n, yn, pl.j, true);
      __syncthreads();  // residuals at y visible
      if (pl.active) g = coord_gradient(smooth, n, pl.j, yn, rn, false);
      __syncthreads();  // reads of y and r done
    }
    if (!pl.active) continue;
    const float bc1 = a.coef[3 * k + 0], bc2 = a.coef[3 * k + 1], extrapolate = a.coef[3 * k + 2];
    float x = x_sh[pl.tid];
    switch (a.kind) {
      case BaselineKind::sgd:
        x = __fsub_rn(x, __fmul_rn(a.lr, g));
        break;
      case BaselineKind::momentum:  // heavy ball: v = mu v + g; x -= lr v
        s1 = __fadd_rn(__fmul_rn(a.mu, s1), g);
        x = __fsub_rn(x, __fmul_rn(a.lr, s1));
        break;
      case BaselineKind::adam:
        s1 = __fadd_rn(__fmul_rn(a.b1, s1), __fmul_rn(a.one_b1, g));
        s2 = __fadd_rn(__fmul_rn(a.b2, s2), __fmul_rn(__fmul_rn(a.one_b2, g), g));
        x = __fsub_rn(x, __fdiv_rn(__fmul_rn(a.lr, __fdiv_rn(s1, bc1)),
                                   __fadd_rn(__fsqrt_rn(__fdiv_rn(s2, bc2)), a.eps)));
        break;
      case BaselineKind::rmsprop:
        s1 = __fadd_rn(__fmul_rn(a.decay, s1), __fmul_rn(__fmul_rn(a.one_decay, g), g));
        x = __fsub_rn(x, __fdiv_rn(__fmul_rn(a.lr, g), __fadd_rn(__fsqrt_rn(s1), a.eps)));
        break;
      case BaselineKind::ista:
      case BaselineKind::fista: {
        if (!has_l) {  // A = 0: the minimiser of lam ||x||_1 is 0
          if (fista) s1 = 0.0f;
          x = 0.0f;
          break;
        }
        const float from = fista ? s1 : x;
        const float z = __fsub_rn(from, __fmul_rn(step, g));
        const float p = fabsf(z) > thr ? __fsub_rn(z, copysignf(thr, z)) : 0.0f;
        if (fista) s1 = __fadd_rn(p, __fmul_rn(extrapolate, __fsub_rn(p, x)));
        x = p;
        break;
      }
    }
    x_sh[pl.tid] = x;
    if (fista) y_sh[pl.tid] = s1;
  }
}

}  // namespace
}  // namespace ml2o::cuda
