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
//
// Templated on the scalar S of x (float, or Dual<float> for the Hessian-vector product kernels:
// A and b stay float, x carries a tangent). The *_rn helpers below are the round-to-nearest
// operations; for float they are exactly __fadd_rn and friends.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "ml2o/dual.hpp"
#include "ml2o/optimizee.hpp"

namespace ml2o::cuda {

using DualF = Dual<float>;

__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float abs_of(float a) { return fabsf(a); }
__device__ __forceinline__ float sin_of(float a) { return sinf(a); }
__device__ __forceinline__ float cos_of(float a) { return cosf(a); }
__device__ __forceinline__ DualF add_rn(const DualF& a, const DualF& b) {
  return DualF(__fadd_rn(a.v, b.v), __fadd_rn(a.d, b.d));
}
__device__ __forceinline__ DualF sub_rn(const DualF& a, const DualF& b) {
  return DualF(__fsub_rn(a.v, b.v), __fsub_rn(a.d, b.d));
}
__device__ __forceinline__ DualF mul_rn(float a, const DualF& b) {
  return DualF(__fmul_rn(a, b.v), __fmul_rn(a, b.d));
}
__device__ __forceinline__ DualF mul_rn(const DualF& a, const DualF& b) {
  return DualF(__fmul_rn(a.v, b.v), __fadd_rn(__fmul_rn(a.d, b.v), __fmul_rn(a.v, b.d)));
}
__device__ __forceinline__ DualF abs_of(const DualF& a) { return fabs(a); }
__device__ __forceinline__ DualF sin_of(const DualF& a) {
  return DualF(sinf(a.v), __fmul_rn(cosf(a.v), a.d));
}
__device__ __forceinline__ DualF cos_of(const DualF& a) {
  return DualF(cosf(a.v), __fmul_rn(-sinf(a.v), a.d));
}

// Where a thread sits: its block owns instances [n0, n0 + nin); threads [0, nin * d) are active.
struct BlockPlace {
  int64_t n0;
  int nin, nact;
  int tid, li, j;  // thread, instance within the block, coordinate within the instance
  bool active;
};

// blk: the block's index within its item (blockIdx.x for a launch of one item).
__device__ __forceinline__ BlockPlace block_place(int64_t instances, int dim, int ipb, int64_t blk) {
  BlockPlace p;
  p.n0 = blk * ipb;
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
template <class S>
__device__ __forceinline__ S residual_row(const TaskView<float>& t, int64_t n, const S* v, int row,
                                          bool with_b) {
  const int d = t.dim;
  const float* A = t.A + n * d * d + static_cast<int64_t>(row) * d;
  S r = S(with_b ? -t.b[n * d + row] : 0.0f);
  for (int q = 0; q < d; ++q) r = add_rn(r, mul_rn(A[q], v[q]));
  return r;
}

// Column `col` of A_n^T s: acc = 0; acc += A_ij s_i for i ascending.
template <class S>
__device__ __forceinline__ S column_dot(const TaskView<float>& t, int64_t n, const S* s, int col) {
  const int d = t.dim;
  const float* A = t.A + n * d * d + col;
  S acc = S(0.0f);
  for (int i = 0; i < d; ++i) acc = add_rn(acc, mul_rn(A[static_cast<int64_t>(i) * d], s[i]));
  return acc;
}

// d f_n / d x_j. xn: the instance's d values; rn: its residuals (matrix families; after a barrier).
// with_l1 = false gives the smooth part of LASSO (ISTA/FISTA).
template <class S>
__device__ __forceinline__ S coord_gradient(const TaskView<float>& t, int64_t n, int j, const S* xn,
                                            const S* rn, bool with_l1) {
  switch (t.family) {
    case Family::lasso:
    case Family::quadratic: {
      const S acc = column_dot(t, n, rn, j);
      const bool l1 = with_l1 && t.family == Family::lasso;
      return add_rn(acc, l1 ? S(__fmul_rn(t.lam, value_of(sign_of(xn[j])))) : S(0.0f));
    }
    case Family::rosenbrock: {
      const S x0 = xn[0], x1 = xn[1];
      const S q = sub_rn(x1, mul_rn(x0, x0));
      if (j == 0)
        return sub_rn(mul_rn(-2.0f, sub_rn(S(1.0f), x0)), mul_rn(mul_rn(400.0f, x0), q));
      return mul_rn(200.0f, q);
    }
    case Family::rastrigin: {
      const float two_pi = static_cast<float>(kTwoPi);
      const S x = xn[j];
      return add_rn(mul_rn(2.0f, x), mul_rn(__fmul_rn(t.alpha, two_pi), sin_of(mul_rn(two_pi, x))));
    }
  }
  return S(0.0f);
}

// f_n(x), by one thread of the instance, in the reference's order.
template <class S>
__device__ __forceinline__ S block_instance_objective(const TaskView<float>& t, const S* xn,
                                                      const S* rn) {
  const int d = t.dim;
  S f = S(0.0f);
  switch (t.family) {
    case Family::lasso:
    case Family::quadratic: {
      for (int i = 0; i < d; ++i) f = add_rn(f, mul_rn(mul_rn(0.5f, rn[i]), rn[i]));
      if (t.family == Family::lasso) {
        S l1 = S(0.0f);
        for (int q = 0; q < d; ++q) l1 = add_rn(l1, abs_of(xn[q]));
        f = add_rn(f, mul_rn(t.lam, l1));
      }
      break;
    }
    case Family::rosenbrock: {
      const S a = sub_rn(S(1.0f), xn[0]);
      const S q = sub_rn(xn[1], mul_rn(xn[0], xn[0]));
      f = add_rn(mul_rn(a, a), mul_rn(mul_rn(100.0f, q), q));
      break;
    }
    case Family::rastrigin: {
      const float two_pi = static_cast<float>(kTwoPi);
      for (int q = 0; q < d; ++q) {
        const S x = xn[q];
        const S term = add_rn(sub_rn(mul_rn(x, x), mul_rn(t.alpha, cos_of(mul_rn(two_pi, x)))),
                              S(t.alpha));
        f = add_rn(f, term);
      }
      break;
    }
  }
  return f;
}

// (H_n(x) v)_j. xn, vn: the instance's x and v; sn: A_n v (matrix families; after a barrier).
template <class S>
__device__ __forceinline__ S coord_hvp(const TaskView<float>& t, int64_t n, int j, const S* xn,
                                       const S* vn, const S* sn) {
  switch (t.family) {
    case Family::lasso:
    case Family::quadratic:
      return column_dot(t, n, sn, j);
    case Family::rosenbrock: {
      const S x0 = xn[0], x1 = xn[1];
      const S h00 = sub_rn(S(2.0f), mul_rn(400.0f, sub_rn(x1, mul_rn(mul_rn(3.0f, x0), x0))));
      const S h01 = mul_rn(-400.0f, x0);
      if (j == 0) return add_rn(mul_rn(h00, vn[0]), mul_rn(h01, vn[1]));
      return add_rn(mul_rn(h01, vn[0]), mul_rn(200.0f, vn[1]));
    }
    case Family::rastrigin: {
      const float two_pi = static_cast<float>(kTwoPi);
      const float four_pi2 = static_cast<float>(kTwoPi * kTwoPi);
      const S curv = add_rn(S(2.0f), mul_rn(__fmul_rn(t.alpha, four_pi2), cos_of(mul_rn(two_pi, xn[j]))));
      return mul_rn(curv, vn[j]);
    }
  }
  return S(0.0f);
}

}  // namespace ml2o::cuda
