// The mlp optimizee's CPU reference: plain loops, one function per layer (the oracle for the
// CUDA implementation in kernels/mlp.cu).
#include "ml2o/mlp.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace ml2o {

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::sigmoid: return "sigmoid";
    case Activation::relu: return "relu";
    case Activation::tanh: return "tanh";
  }
  return "?";
}

bool parse_activation(const std::string& name, Activation* out) {
  for (Activation a : {Activation::sigmoid, Activation::relu, Activation::tanh})
    if (name == activation_name(a)) {
      *out = a;
      return true;
    }
  return false;
}

MlpLayout mlp_layout(const std::vector<int>& layers) {
  if (layers.size() < 2)
    throw std::invalid_argument("mlp: layers needs at least two widths (inputs and classes)");
  MlpLayout m;
  m.layers = layers;
  for (size_t l = 0; l + 1 < layers.size(); ++l) {
    const int in = layers[l], out = layers[l + 1];
    if (in < 1 || out < 1) throw std::invalid_argument("mlp: every layer width must be >= 1");
    m.w_off.push_back(m.params);
    m.params += int64_t(out) * in;
    m.b_off.push_back(m.params);
    m.params += out;
    if (m.params >= (int64_t(1) << 31))
      throw std::invalid_argument("mlp: more than 2^31 parameters per network");
  }
  m.max_width = *std::max_element(layers.begin(), layers.end());
  return m;
}

template <class S> MlpProblem<S> make_mlp_problem(const MlpSpec& spec, const DataSplit& split) {
  MlpProblem<S> p;
  p.spec = spec;
  p.layout = mlp_layout(spec.layers);
  const Dataset& tr = split.train;
  if (spec.layers.front() != tr.features)
    throw std::invalid_argument("mlp: layers[0] = " + std::to_string(spec.layers.front()) +
                                " but the dataset has " + std::to_string(tr.features) +
                                " features");
  if (spec.layers.back() != tr.classes)
    throw std::invalid_argument("mlp: the last layer has " + std::to_string(spec.layers.back()) +
                                " outputs but the dataset has " + std::to_string(tr.classes) +
                                " classes");
  if (spec.batch < 1) throw std::invalid_argument("mlp: batch must be >= 1");
  if (spec.instances < 1) throw std::invalid_argument("mlp: instances must be >= 1");
  p.train_rows = tr.rows;
  p.test_rows = split.test.rows;
  p.train_x.assign(tr.x.begin(), tr.x.end());
  p.test_x.assign(split.test.x.begin(), split.test.x.end());
  p.train_y = tr.y;
  p.test_y = split.test.y;
  return p;
}

template <class S> std::vector<S> mlp_init(const MlpSpec& spec) {
  const MlpLayout m = mlp_layout(spec.layers);
  const int64_t P = m.params;
  std::vector<S> theta(size_t(spec.instances * P), S(0));
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < spec.instances; ++n)
    for (int l = 0; l < m.depth(); ++l) {
      const int in = m.layers[l], out = m.layers[l + 1];
      const double s = spec.activation == Activation::relu ? std::sqrt(2.0 / in)
                                                           : std::sqrt(2.0 / (in + out));
      for (int64_t e = m.w_off[l]; e < m.w_off[l] + int64_t(out) * in; ++e)
        theta[n * P + e] =
            static_cast<S>(static_cast<float>(s * normal01(spec.seed, Stream::mlp_init, n, e)));
    }
  return theta;
}

// ---- layers -------------------------------------------------------------------------------------

template <class S>
void linear_forward(S* out, const S* inp, const S* W, const S* bias, int B, int I, int O) {
  for (int b = 0; b < B; ++b)
    for (int o = 0; o < O; ++o) {
      S acc = bias[o];
      for (int i = 0; i < I; ++i) acc += inp[b * I + i] * W[o * I + i];
      out[b * O + o] = acc;
    }
}

template <class S>
void linear_backward(S* dinp, S* dW, S* dbias, const S* dout, const S* inp, const S* W, int B,
                     int I, int O) {
  // Rows outer (contiguous reads); each sum still runs over b in order from 0.
  std::fill(dW, dW + int64_t(O) * I, S(0));
  std::fill(dbias, dbias + O, S(0));
  for (int b = 0; b < B; ++b)
    for (int o = 0; o < O; ++o) {
      const S d = dout[b * O + o];
      dbias[o] += d;
      for (int i = 0; i < I; ++i) dW[o * I + i] += d * inp[b * I + i];
    }
  if (!dinp) return;
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < I; ++i) {
      S acc = S(0);
      for (int o = 0; o < O; ++o) acc += dout[b * O + o] * W[o * I + i];
      dinp[b * I + i] = acc;
    }
}

template <class S> void activation_forward(S* y, const S* z, int64_t count, Activation a) {
  for (int64_t i = 0; i < count; ++i) y[i] = activation_value(a, z[i]);
}

template <class S>
void activation_backward(S* dz, const S* dy, const S* y, int64_t count, Activation a) {
  for (int64_t i = 0; i < count; ++i) dz[i] = dy[i] * activation_slope(a, y[i]);
}

template <class S>
S softmax_cross_entropy(S* dlogits, const S* logits, const int32_t* labels, int B, int C) {
  S total = S(0);
  const S inv_b = S(1) / S(B);
  for (int b = 0; b < B; ++b) {
    const S* z = logits + b * C;
    S zmax = z[0];
    for (int c = 1; c < C; ++c) zmax = std::max(zmax, z[c]);
    S sum = S(0);
    for (int c = 0; c < C; ++c) sum += exp(z[c] - zmax);
    const S log_sum = log(sum);
    total += log_sum + zmax - z[labels[b]];
    if (!dlogits) continue;
    for (int c = 0; c < C; ++c) {
      const S prob = exp(z[c] - zmax - log_sum);
      dlogits[b * C + c] = (prob - (c == labels[b] ? S(1) : S(0))) * inv_b;
    }
  }
  return total * inv_b;
}

// ---- one network --------------------------------------------------------------------------------

template <class S>
MlpWorkspace<S>::MlpWorkspace(const MlpLayout& m, int r)
    : rows(r),
      acts(m.layers.size()),
      dz(size_t(r) * m.max_width),
      dz_next(size_t(r) * m.max_width),
      labels(size_t(r)) {
  for (size_t l = 0; l < m.layers.size(); ++l) acts[l].resize(size_t(r) * m.layers[l]);
}

namespace {

// Forward of B rows already in ws.acts[0]: hidden outputs into acts[1..L-1], logits into acts[L].
template <class S>
void forward(const MlpLayout& m, Activation act, const S* theta, int B, MlpWorkspace<S>& ws) {
  const int L = m.depth();
  for (int l = 0; l < L; ++l) {
    const int in = m.layers[l], out = m.layers[l + 1];
    S* z = ws.acts[l + 1].data();
    linear_forward(z, ws.acts[l].data(), theta + m.w_off[l], theta + m.b_off[l], B, in, out);
    if (l + 1 < L) activation_forward(z, z, int64_t(B) * out, act);
  }
}

// Backward from dlogits (in ws.dz) to grad [P].
template <class S>
void backward(const MlpLayout& m, Activation act, const S* theta, int B, MlpWorkspace<S>& ws,
              S* grad) {
  for (int l = m.depth() - 1; l >= 0; --l) {
    const int in = m.layers[l], out = m.layers[l + 1];
    S* dinp = l > 0 ? ws.dz_next.data() : nullptr;  // no gradient for the input features
    linear_backward(dinp, grad + m.w_off[l], grad + m.b_off[l], ws.dz.data(), ws.acts[l].data(),
                    theta + m.w_off[l], B, in, out);
    if (l == 0) break;
    activation_backward(ws.dz.data(), ws.dz_next.data(), ws.acts[l].data(), int64_t(B) * in, act);
  }
}

// Copies rows [r0, r0 + B) of a split into the input buffer.
template <class S>
void load_rows(const std::vector<S>& x, int features, int64_t r0, int B, MlpWorkspace<S>& ws) {
  std::copy(x.begin() + r0 * features, x.begin() + (r0 + B) * features, ws.acts[0].begin());
}

}  // namespace

template <class S>
S mlp_instance_loss_grad(const MlpProblem<S>& p, int64_t n, int64_t k, const S* theta, S* grad,
                         MlpWorkspace<S>& ws) {
  const MlpLayout& m = p.layout;
  const int B = p.spec.batch, F = m.layers[0];
  if (ws.rows < B) throw std::invalid_argument("mlp: workspace smaller than the minibatch");
  int32_t* labels = ws.labels.data();
  for (int j = 0; j < B; ++j) {
    const int64_t r = mlp_minibatch_row(p.spec.seed, n, k, j, B, p.train_rows);
    std::copy(p.train_x.begin() + r * F, p.train_x.begin() + (r + 1) * F,
              ws.acts[0].begin() + int64_t(j) * F);
    labels[j] = p.train_y[r];
  }
  forward(m, p.spec.activation, theta, B, ws);
  const S loss = softmax_cross_entropy(grad ? ws.dz.data() : nullptr, ws.acts.back().data(),
                                       labels, B, m.layers.back());
  if (grad) backward(m, p.spec.activation, theta, B, ws, grad);
  return loss;
}

template <class S>
void mlp_batch_loss_grad(const MlpProblem<S>& p, int64_t k, const S* theta, S* grad, S* loss) {
  const int64_t P = p.layout.params;
  // Threads only when the step's work (multiply-adds, roughly) outweighs a fork/join.
  const bool parallel = p.spec.instances > 1 && p.spec.instances * P * p.spec.batch >= (1 << 20);
#pragma omp parallel if (parallel)
  {
    MlpWorkspace<S> ws(p.layout, p.spec.batch);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < p.spec.instances; ++n)
      loss[n] = mlp_instance_loss_grad(p, n, k, theta + n * P, grad ? grad + n * P : nullptr, ws);
  }
}

template <class S>
void mlp_evaluate(const MlpProblem<S>& p, const S* theta, double* train_loss,
                  double* test_accuracy) {
  constexpr int kRows = 256;  // rows per forward pass
  const MlpLayout& m = p.layout;
  const int F = m.layers[0], C = m.layers.back();
  const int64_t P = m.params;
#pragma omp parallel
  {
    MlpWorkspace<S> ws(m, kRows);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < p.spec.instances; ++n) {
      const S* th = theta + n * P;
      double ce = 0.0;
      for (int64_t r0 = 0; r0 < p.train_rows; r0 += kRows) {
        const int B = static_cast<int>(std::min<int64_t>(kRows, p.train_rows - r0));
        load_rows(p.train_x, F, r0, B, ws);
        forward(m, p.spec.activation, th, B, ws);
        ce += double(softmax_cross_entropy<S>(nullptr, ws.acts.back().data(),
                                              p.train_y.data() + r0, B, C)) * B;
      }
      train_loss[n] = ce / double(p.train_rows);
      int64_t correct = 0;
      for (int64_t r0 = 0; r0 < p.test_rows; r0 += kRows) {
        const int B = static_cast<int>(std::min<int64_t>(kRows, p.test_rows - r0));
        load_rows(p.test_x, F, r0, B, ws);
        forward(m, p.spec.activation, th, B, ws);
        for (int b = 0; b < B; ++b) {
          const S* z = ws.acts.back().data() + int64_t(b) * C;
          correct += (std::max_element(z, z + C) - z) == p.test_y[r0 + b];
        }
      }
      test_accuracy[n] = double(correct) / double(p.test_rows);
    }
  }
}

#define ML2O_MLP_INSTANTIATE(S)                                                                    \
  template struct MlpWorkspace<S>;                                                                 \
  template MlpProblem<S> make_mlp_problem<S>(const MlpSpec&, const DataSplit&);                    \
  template std::vector<S> mlp_init<S>(const MlpSpec&);                                             \
  template void linear_forward<S>(S*, const S*, const S*, const S*, int, int, int);                \
  template void linear_backward<S>(S*, S*, S*, const S*, const S*, const S*, int, int, int);       \
  template void activation_forward<S>(S*, const S*, int64_t, Activation);                          \
  template void activation_backward<S>(S*, const S*, const S*, int64_t, Activation);               \
  template S softmax_cross_entropy<S>(S*, const S*, const int32_t*, int, int);                     \
  template S mlp_instance_loss_grad<S>(const MlpProblem<S>&, int64_t, int64_t, const S*, S*,       \
                                       MlpWorkspace<S>&);                                          \
  template void mlp_batch_loss_grad<S>(const MlpProblem<S>&, int64_t, const S*, S*, S*);          \
  template void mlp_evaluate<S>(const MlpProblem<S>&, const S*, double*, double*);

ML2O_MLP_INSTANTIATE(float)
ML2O_MLP_INSTANTIATE(double)
#undef ML2O_MLP_INSTANTIATE

}  // namespace ml2o
