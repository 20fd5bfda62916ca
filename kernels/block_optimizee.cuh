// The optimizee inside a thread block: one thread per coordinate, the block's whole instances'
// values in shared memory, A and b read from global memory (L1/L2 resident across steps).
//
// These are instance_objective / instance_gradient / instance_hvp of optimizee.hpp split across the
// d threads of an instance (a row of A x per thread, then a column of A^T r per thread). Each term
// is written with the reference's summation order and with explicit round-to-nearest operations
// (__fmul_rn / __fadd_rn: no FMA contraction), so for LASSO, Quadratic and Rosenbrock a gradient
// at the same x has the CPU's bits; Rastrigin's sin/cos are CUDA's (within 2 ulp of libm).
//
// Barriers are the caller's: residual_row writes r_sh, and everything reading r_sh must come after
// a __syncthreads().
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "ml2o/optimizee.hpp"

namespace ml2o::cuda {

// Where a thread sits: its block owns instances [n0, n0 + nin); threads [0, nin * d) are active.
struct BlockPlace {
  int64_t n0;
  int nin, nact;
  int tid, li, j;  // thread, instance within the block, coordinate within the instance
  bool active;
};

__device__ __forceinline__ BlockPlace block_place(int64_t instances, int dim, int ipb) {
  BlockPlace p;
  p.n0 = static_cast<int64_t>(blockIdx.x) * ipb;
  const int64_t left = instances - p.n0;
  p.nin = static_cast<int>(left < ipb ? left : ipb);
  p.nact = p.nin * dim;
  p.tid = static_cast<int>(threadIdx.x);
  p.active = p.tid < p.nact;
  p.li = p.active ? p.tid / dim : 0;
  p.j = p.active ? p.tid % dim : 0;
  return p;
}

__device__ __forceinline__ bool has_matrix(Family f) {
  return f == Family::lasso || f == Family::quadratic;
}

// Row `row` of A_n v, minus b_n[row] when b is given (the residual r = A x - b), as the reference
// accumulates it: r = -b_i; r += A_ij v_j for j ascending.
__device__ __forceinline__ float residual_row(const TaskView<float>& t, int64_t n, const float* v,
                                              int row, bool with_b) {
  const int d = t.dim;
  const float* A = t.A + n * d * d + static_cast<int64_t>(row) * d;
  float r = with_b ? -t.b[n * d + row] : 0.0f;
  for (int q = 0; q < d; ++q) r = __fadd_rn(r, __fmul_rn(A[q], v[q]));
  return r;
}

// Column `col` of A_n^T s: acc = 0; acc += A_ij s_i for i ascending.
__device__ __forceinline__ float column_dot(const TaskView<float>& t, int64_t n, const float* s,
                                           int col) {
  const int d = t.dim;
  const float* A = t.A + n * d * d + col;
  float acc = 0.0f;
  for (int i = 0; i < d; ++i) acc = __fadd_rn(acc, __fmul_rn(A[static_cast<int64_t>(i) * d], s[i]));
  return acc;
}

// d f_n / d x_j. xn: the instance's d values; rn: its residuals (matrix families; after a barrier).
// with_l1 = false gives the smooth part of LASSO (ISTA/FISTA).
__device__ __forceinline__ float coord_gradient(const TaskView<float>& t, int64_t n, int j,
                                                const float* xn, const float* rn, bool with_l1) {
  switch (t.family) {
    case Family::lasso:
    case Family::quadratic: {
      const float acc = column_dot(t, n, rn, j);
      const bool l1 = with_l1 && t.family == Family::lasso;
      return __fadd_rn(acc, l1 ? __fmul_rn(t.lam, sign_of(xn[j])) : 0.0f);
    }
    case Family::rosenbrock: {
      const float x0 = xn[0], x1 = xn[1];
      const float q = __fsub_rn(x1, __fmul_rn(x0, x0));
      if (j == 0)
        return __fsub_rn(__fmul_rn(-2.0f, __fsub_rn(1.0f, x0)), __fmul_rn(__fmul_rn(400.0f, x0), q));
      return __fmul_rn(200.0f, q);
    }
    case Family::rastrigin: {
      const float two_pi = static_cast<float>(kTwoPi);
      const float x = xn[j];
      return __fadd_rn(__fmul_rn(2.0f, x),
                       __fmul_rn(__fmul_rn(t.alpha, two_pi), sinf(__fmul_rn(two_pi, x))));
    }
  }
  return 0.0f;
}

// f_n(x), by one thread of the instance, in the reference's order.
__device__ __forceinline__ float block_instance_objective(const TaskView<float>& t, const float* xn,
                                                          const float* rn) {
  const int d = t.dim;
  float f = 0.0f;
  switch (t.family) {
    case Family::lasso:
    case Family::quadratic: {
      for (int i = 0; i < d; ++i) f = __fadd_rn(f, __fmul_rn(__fmul_rn(0.5f, rn[i]), rn[i]));
      if (t.family == Family::lasso) {
        float l1 = 0.0f;
        for (int q = 0; q < d; ++q) l1 = __fadd_rn(l1, fabsf(xn[q]));
        f = __fadd_rn(f, __fmul_rn(t.lam, l1));
      }
      break;
    }
    case Family::rosenbrock: {
      const float a = __fsub_rn(1.0f, xn[0]);
      const float q = __fsub_rn(xn[1], __fmul_rn(xn[0], xn[0]));
      f = __fadd_rn(__fmul_rn(a, a), __fmul_rn(__fmul_rn(100.0f, q), q));
      break;
    }
    case Family::rastrigin: {
      const float two_pi = static_cast<float>(kTwoPi);
      for (int q = 0; q < d; ++q) {
        const float x = xn[q];
        const float term = __fadd_rn(
            __fsub_rn(__fmul_rn(x, x), __fmul_rn(t.alpha, cosf(__fmul_rn(two_pi, x)))), t.alpha);
        f = __fadd_rn(f, term);
      }
      break;
    }
  }
  return f;
}

// (H_n(x) v)_j. xn, vn: the instance's x and v; sn: A_n v (matrix families; after a barrier).
__device__ __forceinline__ float coord_hvp(const TaskView<float>& t, int64_t n, int j,
                                           const float* xn, const float* vn, const float* sn) {
  switch (t.family) {
    case Family::lasso:
    case Family::quadratic:
      return column_dot(t, n, sn, j);
    case Family::rosenbrock: {
      const float x0 = xn[0], x1 = xn[1];
      const float h00 =
          __fsub_rn(2.0f, __fmul_rn(400.0f, __fsub_rn(x1, __fmul_rn(__fmul_rn(3.0f, x0), x0))));
      const float h01 = __fmul_rn(-400.0f, x0);
      if (j == 0) return __fadd_rn(__fmul_rn(h00, vn[0]), __fmul_rn(h01, vn[1]));
      return __fadd_rn(__fmul_rn(h01, vn[0]), __fmul_rn(200.0f, vn[1]));
    }
    case Family::rastrigin: {
      const float two_pi = static_cast<float>(kTwoPi);
      const float four_pi2 = static_cast<float>(kTwoPi * kTwoPi);
      const float curv =
          __fadd_rn(2.0f, __fmul_rn(__fmul_rn(t.alpha, four_pi2), cosf(__fmul_rn(two_pi, xn[j]))));
      return __fmul_rn(curv, vn[j]);
    }
  }
  return 0.0f;
}

}  // namespace ml2o::cuda
