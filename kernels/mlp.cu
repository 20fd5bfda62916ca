// The mlp optimizee's forward and backward on the GPU for all N instances at once (mlp_cuda.hpp).
//
// Activations are row-major per instance, [N][rows][width], so a layer of every instance is one
// cuBLAS strided-batched GEMM (mlp_gemm.hpp: Z = X W^T, dW = dZ^T X, dX = dZ W), with W, dW strided
// by P inside the [N, P] parameter array and X strided by rows * in, or by 0 when every instance
// reads the same rows (evaluation on a split). Bias, activation, softmax
// cross-entropy and the minibatch gather are small kernels here; the per-instance reductions (bias
// gradient, loss) run in a fixed order, so results repeat bit for bit on one GPU.
//
// Precision: float32, cuBLAS's default math mode (no TF32), no fast math (expf/tanhf as libm within
// float rounding). UNVERIFIED on a GPU when written (no device was available): tests/test_mlp.cpp's
// MlpCuda* tests compare it with the CPU reference and skip without a device.
#include <cublas_v2.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "launch.cuh"
#include "ml2o/cuda_backend.hpp"
#include "ml2o/mlp_cuda.hpp"
#include "ml2o/mlp_gemm.hpp"

#define ML2O_CUBLAS_CHECK(call)                                                                  \
  do {                                                                                           \
    const cublasStatus_t ml2o_st_ = (call);                                                      \
    if (ml2o_st_ != CUBLAS_STATUS_SUCCESS)                                                       \
      throw std::runtime_error(std::string("cuBLAS error: ") + cublasGetStatusString(ml2o_st_) + \
                               " in " #call " at " __FILE__ ":" + std::to_string(__LINE__));     \
  } while (0)

namespace ml2o {
namespace cuda {
namespace {

constexpr int kThreads = 256;     // elementwise kernels (grid-stride loops)
constexpr int kRowThreads = 128;  // one block per instance: loss and accuracy reductions
constexpr int kEvalRows = 256;    // rows per forward pass when evaluating a split

unsigned grid_for(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, 65535));
}

// x0[n][j][f] = train_x[row][f], labels[n][j] = train_y[row], row = mlp_minibatch_row(n, k, j).
__global__ void gather_minibatch_kernel(const float* train_x, const int32_t* train_y,
                                        int64_t train_rows, int F, uint64_t seed, int64_t k, int B,
                                        int64_t N, float* x0, int32_t* labels) {
  const int64_t total = N * B * F;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t nj = i / F, f = i % F;
    const int64_t n = nj / B;
    const int j = static_cast<int>(nj % B);
    const int64_t row = mlp_minibatch_row(seed, n, k, j, B, train_rows);
    x0[i] = train_x[row * F + f];
    if (f == 0) labels[nj] = train_y[row];
  }
}

// z[n][r][o] += b_n[o], then z = f(z) on hidden layers.
__global__ void bias_activation_kernel(float* z, const float* theta, int64_t P, int64_t b_off,
                                       int64_t N, int rows, int out, Activation act, bool hidden) {
  const int64_t total = N * rows * out;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / (int64_t(rows) * out), o = i % out;
    const float v = z[i] + theta[n * P + b_off + o];
    z[i] = hidden ? activation_value(act, v) : v;
  }
}

// dz[i] *= f'(.) from the layer's output y[i].
__global__ void activation_backward_kernel(float* dz, const float* y, int64_t count,
                                           Activation act) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x)
    dz[i] *= activation_slope(act, y[i]);
}

// grad_n[b_off + o] = sum over rows of dz[n][r][o] (in row order).
__global__ void bias_grad_kernel(const float* dz, float* grad, int64_t P, int64_t b_off, int64_t N,
                                 int rows, int out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * out;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / out, o = i % out;
    const float* d = dz + n * rows * out + o;
    float s = 0.0f;
    for (int r = 0; r < rows; ++r) s += d[int64_t(r) * out];
    grad[n * P + b_off + o] = s;
  }
}

// Block-wide sum over kRowThreads values in a fixed tree order; the result is in buf[0].
template <class T> __device__ void block_sum(T* buf) {
  for (int s = kRowThreads / 2; s > 0; s /= 2) {
    __syncthreads();
    if (threadIdx.x < s) buf[threadIdx.x] += buf[threadIdx.x + s];
  }
  __syncthreads();
}

// One block per instance: loss[n] = mean over the B rows of the cross-entropy of softmax(logits),
// and dlogits = its gradient (when not null).
__global__ void softmax_ce_grad_kernel(const float* logits, const int32_t* labels, int B, int C,
                                       float inv_b, float* dlogits, float* loss) {
  __shared__ float part[kRowThreads];
  const int64_t n = blockIdx.x;
  float acc = 0.0f;
  for (int j = threadIdx.x; j < B; j += kRowThreads) {
    const int64_t row = n * B + j;
    const float* z = logits + row * C;
    float zmax = z[0];
    for (int c = 1; c < C; ++c) zmax = fmaxf(zmax, z[c]);
    float sum = 0.0f;
    for (int c = 0; c < C; ++c) sum += expf(z[c] - zmax);
    const float log_sum = logf(sum);
    const int y = labels[row];
    acc += log_sum + zmax - z[y];
    if (dlogits)
      for (int c = 0; c < C; ++c)
        dlogits[row * C + c] = (expf(z[c] - zmax - log_sum) - (c == y ? 1.0f : 0.0f)) * inv_b;
  }
  part[threadIdx.x] = acc;
  block_sum(part);
  if (threadIdx.x == 0) loss[n] = part[0] * inv_b;
}

// One block per instance over `rows` shared rows: adds the summed cross-entropy (double) and the
// number of rows whose argmax (ties to the lower class) is the label.
__global__ void softmax_ce_eval_kernel(const float* logits, const int32_t* labels, int rows, int C,
                                       double* ce_sum, unsigned long long* correct) {
  __shared__ double ce_part[kRowThreads];
  __shared__ unsigned long long hit_part[kRowThreads];
  const int64_t n = blockIdx.x;
  double ce = 0.0;
  unsigned long long hits = 0;
  for (int r = threadIdx.x; r < rows; r += kRowThreads) {
    const float* z = logits + (n * rows + r) * C;
    int best = 0;
    for (int c = 1; c < C; ++c)
      if (z[c] > z[best]) best = c;
    float sum = 0.0f;
    for (int c = 0; c < C; ++c) sum += expf(z[c] - z[best]);
    ce += double(logf(sum) + z[best] - z[labels[r]]);
    hits += best == labels[r];
  }
  ce_part[threadIdx.x] = ce;
  hit_part[threadIdx.x] = hits;
  block_sum(ce_part);
  block_sum(hit_part);
  if (threadIdx.x == 0) {
    ce_sum[n] += ce_part[0];
    correct[n] += hit_part[0];
  }
}

// C = op(A) op(B) for every instance (alpha 1, beta 0) on stream s.
void gemm_batched(cublasHandle_t h, cudaStream_t s, const BatchedGemm& g, const float* A,
                  const float* B, float* C, int64_t batch) {
  const float one = 1.0f, zero = 0.0f;
  ML2O_CUBLAS_CHECK(cublasSetStream(h, s));
  ML2O_CUBLAS_CHECK(cublasSgemmStridedBatched(
      h, g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, g.m, g.n,
      g.k, &one, A, g.lda, g.stride_a, B, g.ldb, g.stride_b, &zero, C, g.ldc, g.stride_c,
      static_cast<int>(batch)));
  count_launch();
}

}  // namespace
}  // namespace cuda

using cuda::DeviceBuffer;

struct CudaMlp::Impl {
  MlpSpec spec;
  MlpLayout m;
  int64_t train_rows = 0, test_rows = 0;
  DeviceBuffer train_x, train_y, test_x, test_y;
  std::vector<DeviceBuffer> acts;  // [L + 1][N][rows][layers[l]]: input, hidden outputs, logits
  DeviceBuffer dz, dz_next, labels;
  DeviceBuffer theta_in, grad_out, loss_out;  // staging for the host-array calls
  DeviceBuffer ce_sum, correct;
  cublasHandle_t blas = nullptr;
  int64_t N() const { return spec.instances; }

  explicit Impl(const MlpProblem<float>& p)
      : spec(p.spec), m(p.layout), train_rows(p.train_rows), test_rows(p.test_rows),
        acts(p.layout.layers.size()) {
    if (!cuda_device_present()) throw std::runtime_error("CudaMlp: no CUDA device is visible");
    upload(train_x, p.train_x.data(), p.train_x.size() * sizeof(float));
    upload(train_y, p.train_y.data(), p.train_y.size() * sizeof(int32_t));
    upload(test_x, p.test_x.data(), p.test_x.size() * sizeof(float));
    upload(test_y, p.test_y.data(), p.test_y.size() * sizeof(int32_t));
    ML2O_CUBLAS_CHECK(cublasCreate(&blas));
    ML2O_CUBLAS_CHECK(cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH));
  }
  ~Impl() {
    if (blas) cublasDestroy(blas);
  }

  static void upload(DeviceBuffer& buf, const void* src, size_t bytes) {
    buf.ensure(bytes);
    ML2O_CUDA_CHECK(cudaMemcpy(buf.as<void>(), src, bytes, cudaMemcpyHostToDevice));
  }

  // Activation buffers for `rows` rows per instance (grow-only).
  void ensure_rows(int rows) {
    const size_t nr = size_t(N()) * rows;
    for (size_t l = 0; l < acts.size(); ++l) acts[l].ensure(nr * m.layers[l] * sizeof(float));
    dz.ensure(nr * m.max_width * sizeof(float));
    dz_next.ensure(nr * m.max_width * sizeof(float));
    labels.ensure(nr * sizeof(int32_t));
  }

  // Logits into acts[L] from the input x0 (instance stride x0_stride; 0 = shared rows).
  void forward(const float* theta, int rows, const float* x0, int64_t x0_stride, cudaStream_t s) {
    const int64_t P = m.params;
    for (int l = 0; l < m.depth(); ++l) {
      const int in = m.layers[l], out = m.layers[l + 1];
      const float* x = l == 0 ? x0 : acts[l].as<float>();
      const int64_t sx = l == 0 ? x0_stride : int64_t(rows) * in;
      float* z = acts[l + 1].as<float>();
      cuda::gemm_batched(blas, s, mlp_forward_gemm(in, out, rows, P, sx), theta + m.w_off[l], x,
                         z, N());
      cuda::bias_activation_kernel<<<cuda::grid_for(N() * rows * out), cuda::kThreads, 0, s>>>(
          z, theta, P, m.b_off[l], N(), rows, out, spec.activation, l + 1 < m.depth());
      ML2O_CUDA_CHECK_LAUNCH("bias_activation_kernel");
      cuda::count_launch();
    }
  }

  // grad from dlogits (in dz) back through every layer; acts[0] is the gathered minibatch.
  void backward(const float* theta, float* grad, int rows, cudaStream_t s) {
    const int64_t P = m.params;
    float* dcur = dz.as<float>();
    float* dprev = dz_next.as<float>();
    for (int l = m.depth() - 1; l >= 0; --l) {
      const int in = m.layers[l], out = m.layers[l + 1];
      cuda::gemm_batched(blas, s, mlp_weight_grad_gemm(in, out, rows, P), acts[l].as<float>(),
                         dcur, grad + m.w_off[l], N());
      cuda::bias_grad_kernel<<<cuda::grid_for(N() * out), cuda::kThreads, 0, s>>>(
          dcur, grad, P, m.b_off[l], N(), rows, out);
      ML2O_CUDA_CHECK_LAUNCH("bias_grad_kernel");
      cuda::count_launch();
      if (l == 0) break;
      cuda::gemm_batched(blas, s, mlp_input_grad_gemm(in, out, rows, P), theta + m.w_off[l],
                         dcur, dprev, N());
      const int64_t count = N() * rows * in;
      cuda::activation_backward_kernel<<<cuda::grid_for(count), cuda::kThreads, 0, s>>>(
          dprev, acts[l].as<float>(), count, spec.activation);
      ML2O_CUDA_CHECK_LAUNCH("activation_backward_kernel");
      cuda::count_launch();
      std::swap(dcur, dprev);
    }
  }

  void loss_grad(int64_t k, const float* theta, float* grad, float* loss, cudaStream_t s) {
    const int B = spec.batch, F = m.layers[0], C = m.layers.back();
    ensure_rows(B);
    float* x0 = acts[0].as<float>();
    cuda::gather_minibatch_kernel<<<cuda::grid_for(N() * B * F), cuda::kThreads, 0, s>>>(
        train_x.as<float>(), train_y.as<int32_t>(), train_rows, F, spec.seed, k, B, N(), x0,
        labels.as<int32_t>());
    ML2O_CUDA_CHECK_LAUNCH("gather_minibatch_kernel");
    cuda::count_launch();
    forward(theta, B, x0, int64_t(B) * F, s);
    cuda::softmax_ce_grad_kernel<<<static_cast<unsigned>(N()), cuda::kRowThreads, 0, s>>>(
        acts.back().as<float>(), labels.as<int32_t>(), B, C, 1.0f / float(B),
        grad ? dz.as<float>() : nullptr, loss);
    ML2O_CUDA_CHECK_LAUNCH("softmax_ce_grad_kernel");
    cuda::count_launch();
    if (grad) backward(theta, grad, B, s);
  }

  // Adds the summed cross-entropy and correct count of every instance over one split.
  void evaluate_split(const float* theta, const DeviceBuffer& x, const DeviceBuffer& y,
                      int64_t rows, double* ce, unsigned long long* hits, cudaStream_t s) {
    const int F = m.layers[0], C = m.layers.back();
    for (int64_t r0 = 0; r0 < rows; r0 += cuda::kEvalRows) {
      const int nr = static_cast<int>(std::min<int64_t>(cuda::kEvalRows, rows - r0));
      forward(theta, nr, x.as<float>() + r0 * F, 0, s);
      cuda::softmax_ce_eval_kernel<<<static_cast<unsigned>(N()), cuda::kRowThreads, 0, s>>>(
          acts.back().as<float>(), y.as<int32_t>() + r0, nr, C, ce, hits);
      ML2O_CUDA_CHECK_LAUNCH("softmax_ce_eval_kernel");
      cuda::count_launch();
    }
  }
};

CudaMlp::CudaMlp(const MlpProblem<float>& problem) : impl_(std::make_unique<Impl>(problem)) {}
CudaMlp::~CudaMlp() = default;

void CudaMlp::loss_grad_device(int64_t k, const float* theta, float* grad, float* loss,
                               void* stream) {
  impl_->loss_grad(k, theta, grad, loss, static_cast<cudaStream_t>(stream));
}

void CudaMlp::loss_grad(int64_t k, const float* theta, float* grad, float* loss) {
  Impl& im = *impl_;
  const size_t np = size_t(im.N()) * im.m.params * sizeof(float);
  const size_t nl = size_t(im.N()) * sizeof(float);
  Impl::upload(im.theta_in, theta, np);
  im.grad_out.ensure(np);
  im.loss_out.ensure(nl);
  im.loss_grad(k, im.theta_in.as<float>(), grad ? im.grad_out.as<float>() : nullptr,
               im.loss_out.as<float>(), nullptr);
  if (grad) ML2O_CUDA_CHECK(cudaMemcpy(grad, im.grad_out.as<void>(), np, cudaMemcpyDeviceToHost));
  ML2O_CUDA_CHECK(cudaMemcpy(loss, im.loss_out.as<void>(), nl, cudaMemcpyDeviceToHost));
}

void CudaMlp::evaluate(const float* theta, double* train_loss, double* test_accuracy) {
  Impl& im = *impl_;
  const int64_t N = im.N();
  Impl::upload(im.theta_in, theta, size_t(N) * im.m.params * sizeof(float));
  im.ensure_rows(cuda::kEvalRows);
  // [train ce, test ce] then [train hits, test hits]
  im.ce_sum.ensure(2 * size_t(N) * sizeof(double));
  im.correct.ensure(2 * size_t(N) * sizeof(unsigned long long));
  ML2O_CUDA_CHECK(cudaMemset(im.ce_sum.as<void>(), 0, 2 * size_t(N) * sizeof(double)));
  ML2O_CUDA_CHECK(cudaMemset(im.correct.as<void>(), 0, 2 * size_t(N) * sizeof(unsigned long long)));
  double* ce = im.ce_sum.as<double>();
  unsigned long long* hits = im.correct.as<unsigned long long>();
  im.evaluate_split(im.theta_in.as<float>(), im.train_x, im.train_y, im.train_rows, ce, hits,
                    nullptr);
  im.evaluate_split(im.theta_in.as<float>(), im.test_x, im.test_y, im.test_rows, ce + N, hits + N,
                    nullptr);
  std::vector<double> ce_h(2 * size_t(N));
  std::vector<unsigned long long> hits_h(2 * size_t(N));
  ML2O_CUDA_CHECK(
      cudaMemcpy(ce_h.data(), ce, ce_h.size() * sizeof(double), cudaMemcpyDeviceToHost));
  ML2O_CUDA_CHECK(cudaMemcpy(hits_h.data(), hits, hits_h.size() * sizeof(unsigned long long),
                             cudaMemcpyDeviceToHost));
  for (int64_t n = 0; n < N; ++n) {
    train_loss[n] = ce_h[n] / double(im.train_rows);
    test_accuracy[n] = double(hits_h[N + n]) / double(im.test_rows);
  }
}

}  // namespace ml2o
