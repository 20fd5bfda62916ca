// The mlp optimizee on the GPU (kernels/mlp.cu): forward and backward of all N instances at once
// with cuBLAS strided-batched GEMMs (one batch entry per instance), and small kernels for the
// minibatch gather, bias, activation and softmax cross-entropy. Same layout, initialisation and
// minibatch draws as the CPU reference (mlp.hpp), in float32. Defined only in CUDA builds
// (ML2O_HAVE_CUDA); UNVERIFIED on a GPU so far (see docs/mlp.md).
#pragma once
#include <cstdint>
#include <memory>

#include "ml2o/mlp.hpp"

namespace ml2o {

class CudaMlp {
 public:
  // Uploads both splits; throws std::runtime_error without a CUDA device.
  explicit CudaMlp(const MlpProblem<float>& problem);
  ~CudaMlp();
  CudaMlp(const CudaMlp&) = delete;
  CudaMlp& operator=(const CudaMlp&) = delete;

  // Device arrays: theta [N, P] in, loss [N] and grad [N, P] (null: loss only) out, at global step
  // k, enqueued on `stream` (a cudaStream_t; null = the default stream). As mlp_batch_loss_grad.
  void loss_grad_device(int64_t k, const float* theta, float* grad, float* loss,
                        void* stream = nullptr);
  // The same with host arrays (copies in and out, then waits).
  void loss_grad(int64_t k, const float* theta, float* grad, float* loss);
  // Full training-split loss and test accuracy of every instance (host arrays), as mlp_evaluate.
  void evaluate(const float* theta, double* train_loss, double* test_accuracy);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ml2o
