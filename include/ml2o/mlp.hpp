// The mlp optimizee (docs/mlp.md): N small classifiers (fully connected layers, one activation,
// softmax cross-entropy) trained on a shared dataset; instance n's coordinates are the flat
// parameter vector of its network. Its initial weights and the minibatch it sees at each global
// step k are counter-based draws, so the CPU reference (here) and the CUDA implementation
// (mlp_cuda.hpp) use the same values without sharing any state.
//
// Parameter layout of one instance, P = sum_l (out_l * in_l + out_l) values, layer after layer:
//   [ W_0 [out_0, in_0] row-major | b_0 [out_0] | W_1 [out_1, in_1] | b_1 [out_1] | ... ]
// with in_0 = layers[0] (the features), out_l = in_{l+1} = layers[l+1], out_{L-1} = the classes.
// Instance n occupies [n P, (n + 1) P) of a batch's parameter array.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ml2o/dataset.hpp"
#include "ml2o/hd.hpp"
#include "ml2o/rng.hpp"

namespace ml2o {

enum class Activation : int { sigmoid = 0, relu = 1, tanh = 2 };
const char* activation_name(Activation a);
bool parse_activation(const std::string& name, Activation* out);
constexpr const char* kActivationNames = "sigmoid, relu, tanh";

// What defines an mlp task apart from its data.
struct MlpSpec {
  std::vector<int> layers = {64, 20, 10};  // widths: input features, hidden layers, classes
  Activation activation = Activation::sigmoid;  // of every hidden layer (the last is softmax)
  int batch = 32;                               // minibatch size (rows drawn with replacement)
  int64_t instances = 1;
  uint64_t seed = 0;                            // initial weights and minibatches
};

// Offsets of each layer's W and b inside an instance's parameter vector (layout above).
struct MlpLayout {
  std::vector<int> layers;
  std::vector<int64_t> w_off, b_off;  // [L], L = layers.size() - 1 weight layers
  int64_t params = 0;                 // P
  int max_width = 0;                  // widest layer, input included
  int depth() const { return static_cast<int>(layers.size()) - 1; }
};
// Throws std::invalid_argument unless there are >= 2 widths, all >= 1, with P < 2^31.
MlpLayout mlp_layout(const std::vector<int>& layers);

// The data an mlp task trains on, in the scalar of the computation (float values promoted exactly
// to double for the oracle).
template <class S> struct MlpProblem {
  MlpSpec spec;
  MlpLayout layout;
  int64_t train_rows = 0, test_rows = 0;
  std::vector<S> train_x, test_x;  // [rows, layers[0]], standardised
  std::vector<int32_t> train_y, test_y;
};
// Checks the spec against the split (layers[0] = features, layers.back() = classes, batch >= 1,
// instances >= 1; std::invalid_argument naming what differs) and copies the data.
template <class S> MlpProblem<S> make_mlp_problem(const MlpSpec& spec, const DataSplit& split);

// Initial parameters of every instance, [N, P]: W_l entries ~ N(0, s^2) with s = sqrt(2 / (in +
// out)) (Glorot) for sigmoid and tanh, s = sqrt(2 / in) (He) for relu; biases 0. Each entry is
// normal01(seed, Stream::mlp_init, n, offset in the instance's vector), rounded to float once.
template <class S> std::vector<S> mlp_init(const MlpSpec& spec);

// The training-split row used as sample j of instance n's minibatch at global step k: uniform
// over the rows, with replacement, from the 32-bit Philox word of (seed, minibatch, n, k * batch +
// j) by multiply-shift (a bias below rows / 2^32).
ML2O_HD int64_t mlp_minibatch_row(uint64_t seed, int64_t n, int64_t k, int j, int batch,
                                  int64_t rows) {
  const Philox r = draw_bits(seed, Stream::minibatch, static_cast<uint64_t>(n),
                             static_cast<uint64_t>(k) * static_cast<uint64_t>(batch) +
                                 static_cast<uint64_t>(j));
  const uint64_t scaled = static_cast<uint64_t>(r.out[0]) * static_cast<uint64_t>(rows);
  return static_cast<int64_t>(scaled >> 32);
}

// The activation and its derivative written in terms of its output y = f(z) (all three allow it;
// relu's derivative at 0 is taken as 0).
template <class S> ML2O_HD S activation_value(Activation a, S z) {
  switch (a) {
    case Activation::sigmoid: return S(1) / (S(1) + exp(-z));
    case Activation::relu: return z > S(0) ? z : S(0);
    case Activation::tanh: return tanh(z);
  }
  return z;
}
template <class S> ML2O_HD S activation_slope(Activation a, S y) {
  switch (a) {
    case Activation::sigmoid: return y * (S(1) - y);
    case Activation::relu: return y > S(0) ? S(1) : S(0);
    case Activation::tanh: return S(1) - y * y;
  }
  return S(1);
}

// Buffers for one instance's forward and backward over up to `rows` samples.
template <class S> struct MlpWorkspace {
  MlpWorkspace(const MlpLayout& layout, int rows);
  int rows;
  std::vector<std::vector<S>> acts;  // [L + 1][rows, layers[l]]: input, hidden outputs, logits
  std::vector<S> dz, dz_next;        // [rows, max_width]: the current layer's pre-activation grad
  std::vector<int32_t> labels;       // [rows]
};

// Mean cross-entropy over the minibatch of (instance n, step k), and its gradient [P] when grad is
// not null. theta is instance n's parameter vector [P].
template <class S>
S mlp_instance_loss_grad(const MlpProblem<S>& p, int64_t n, int64_t k, const S* theta, S* grad,
                         MlpWorkspace<S>& ws);

// All instances at step k: loss [N] and grad [N, P] (grad may be null); theta is [N, P].
template <class S>
void mlp_batch_loss_grad(const MlpProblem<S>& p, int64_t k, const S* theta, S* grad, S* loss);

// Reporting: mean cross-entropy over the whole training split and accuracy on the test split
// (argmax of the logits, ties to the lower class) of every instance, accumulated in double.
template <class S>
void mlp_evaluate(const MlpProblem<S>& p, const S* theta, double* train_loss,
                  double* test_accuracy);

// ---- the layers (CPU reference, one function each; shapes row-major) ---------------------------
// out[B, O] = inp[B, I] W[O, I]^T + bias[O]
template <class S>
void linear_forward(S* out, const S* inp, const S* W, const S* bias, int B, int I, int O);
// dW[O, I] = dout^T inp, dbias[O] = sum_b dout[b, :], dinp[B, I] = dout[B, O] W (skipped if null)
template <class S>
void linear_backward(S* dinp, S* dW, S* dbias, const S* dout, const S* inp, const S* W, int B,
                     int I, int O);
// y[n] = f(z[n]) (in place allowed); dz[n] = dy[n] f'(z[n]) from the output y
template <class S> void activation_forward(S* y, const S* z, int64_t count, Activation a);
template <class S>
void activation_backward(S* dz, const S* dy, const S* y, int64_t count, Activation a);
// Mean over B rows of -log softmax(logits[b])[labels[b]]; dlogits[B, C] = its gradient if not null.
template <class S>
S softmax_cross_entropy(S* dlogits, const S* logits, const int32_t* labels, int B, int C);

}  // namespace ml2o
