// The three strided-batched GEMMs of the mlp's forward and backward on the GPU (kernels/mlp.cu),
// as plain arguments: mlp.cu passes them to cublasSgemmStridedBatched, and tests/test_mlp.cpp
// replays them with a reference column-major GEMM on the CPU, so the transposes, leading
// dimensions and strides are checked without a GPU.
//
// cuBLAS is column-major: a row-major [r, c] array is, read column-major, its transpose [c, r] with
// leading dimension c. Per instance (one batch entry each):
//   forward      Z[rows, out] = X[rows, in] W[out, in]^T  ->  Z^T = (W^T)^T X^T
//   weight grad  dW[out, in]  = dZ[rows, out]^T X         ->  dW^T = X^T (dZ^T)^T
//   input grad   dX[rows, in] = dZ W                      ->  dX^T = W^T dZ^T
#pragma once
#include <cstdint>

namespace ml2o {

// C = op(A) op(B), column-major, m x n = (m x k)(k x n); entry i of the batch adds i * stride.
struct BatchedGemm {
  bool trans_a = false, trans_b = false;
  int m = 0, n = 0, k = 0;
  int lda = 0, ldb = 0, ldc = 0;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
};

// A = W (stride P), B = X (stride x_stride: rows * in, or 0 for rows shared by every instance),
// C = Z (stride rows * out).
inline BatchedGemm mlp_forward_gemm(int in, int out, int rows, int64_t P, int64_t x_stride) {
  return {true, false, out, rows, in, in, in, out, P, x_stride, int64_t(rows) * out};
}
// A = X (stride rows * in), B = dZ (stride rows * out), C = dW (stride P).
inline BatchedGemm mlp_weight_grad_gemm(int in, int out, int rows, int64_t P) {
  return {false, true, in, out, rows, in, out, in, int64_t(rows) * in, int64_t(rows) * out, P};
}
// A = W (stride P), B = dZ (stride rows * out), C = dX (stride rows * in).
inline BatchedGemm mlp_input_grad_gemm(int in, int out, int rows, int64_t P) {
  return {false, false, in, rows, out, in, out, in, P, int64_t(rows) * out, int64_t(rows) * in};
}

}  // namespace ml2o
