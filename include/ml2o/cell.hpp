// Per-coordinate math of the learned optimizers (docs/method.md section 2), shared by the CPU reference and
// the CUDA kernels. Row-vector convention: y = x @ W + b, W row-major [in, out]. An LSTM's W has
// rows [input; h] and columns the gates (i, j, f, o), kHidden each.
#pragma once
#include <cmath>
#include <cstdint>

#include "ml2o/hd.hpp"

namespace ml2o {

constexpr int kHidden = 20;
constexpr int kGates = 4 * kHidden;

enum class Arch : int { rnnprop = 0, dmlstm = 1 };

// Offsets of each tensor in the flat weight vector.
struct RnnpropLayout {
  static constexpr int in_features = 2;
  static constexpr int W_in = 0, b_in = W_in + in_features * kHidden;
  static constexpr int W1 = b_in + kHidden, b1 = W1 + 2 * kHidden * kGates;
  static constexpr int W2 = b1 + kGates, b2 = W2 + 2 * kHidden * kGates;
  static constexpr int W_out = b2 + kGates, b_out = W_out + kHidden;
  static constexpr int size = b_out + 1;  // 6641
};
struct DmlstmLayout {
  static constexpr int in_features = 2;
  static constexpr int W1 = 0, b1 = W1 + (in_features + kHidden) * kGates;
  static constexpr int W2 = b1 + kGates, b2 = W2 + 2 * kHidden * kGates;
  static constexpr int W_out = b2 + kGates, b_out = W_out + kHidden;
  static constexpr int size = b_out + 1;  // 5141
};
static_assert(RnnpropLayout::size == 6641, "RNNprop has 6,641 parameters (docs/method.md section 2)");

// RNNprop's fixed constants (docs/method.md, "RNNprop").
constexpr double kRnnpropBeta = 0.95;
constexpr double kRnnpropEps = 1e-8;
constexpr double kRnnpropDefaultScale = 0.01;  // the paper's 0.01 x tanh output

// Settings of the optimizer that are not weights.
struct OptimizerHyper {
  Arch arch = Arch::rnnprop;
  double dm_p = 10.0;      // DM-LSTM log-and-sign preprocessing parameter
  double dm_scale = 0.1;   // DM-LSTM output scale
  // RNNprop's update is output_scale x tanh(.): the largest step a coordinate can take. A config
  // setting (optimizer.output_scale); params files do not record it, the config supplies it.
  double output_scale = kRnnpropDefaultScale;
};

template <class S> ML2O_HD S sigmoid(S x) { return S(1) / (S(1) + exp(-x)); }

// Recurrent state of one coordinate.
template <class S> struct CoordState {
  S m, v;  // RNNprop moments (unused by DM-LSTM)
  S h1[kHidden], c1[kHidden], h2[kHidden], c2[kHidden];
};

// What the backward pass of one step needs (the BPTT tape of one coordinate-step).
template <class S> struct StepTape {
  S g, m, v;          // gradient and the updated moments
  S bc;               // bias correction 1 - beta^k
  S u[2];             // features fed to the network
  S zpre[kHidden];    // RNNprop input layer pre-activation (ELU input)
  S z[kHidden];       // input of LSTM1 (RNNprop: ELU output)
  S h1p[kHidden], c1p[kHidden], act1[kGates], c1[kHidden], tc1[kHidden], h1[kHidden];
  S h2p[kHidden], c2p[kHidden], act2[kGates], c2[kHidden], tc2[kHidden], h2[kHidden];
  S out;              // RNNprop: tanh(pre); DM-LSTM: pre
};

// Adjoints carried backwards between steps of one coordinate.
template <class S> struct CoordAdjoint {
  S m, v;
  S h1[kHidden], c1[kHidden], h2[kHidden], c2[kHidden];
};

// Gate pre-activation gradients of one step: with the tape's inputs they give the weight gradient
// as outer products (accumulate_weight_grad), which each backend reduces in its own fixed order.
template <class S> struct StepGrads {
  S dout;             // d pre-activation of the output layer
  S dgates2[kGates], dgates1[kGates];
  S dzpre[kHidden];   // RNNprop only
};

// gates = [input; h] @ W + b, then the cell. act holds (sigmoid i, tanh j, sigmoid(f + 1), sigmoid o);
// tanh_c = tanh(c_new) is kept for the backward pass (tanh is the costliest call here).
template <class S>
ML2O_HD void lstm_cell_forward(const S* W, const S* b, int in_dim, const S* input, const S* h_prev,
                               const S* c_prev, S* act, S* c_new, S* tanh_c, S* h_new) {
  S gates[kGates];
  for (int col = 0; col < kGates; ++col) gates[col] = b[col];
  for (int r = 0; r < in_dim; ++r) {
    const S a = input[r];
    for (int col = 0; col < kGates; ++col) gates[col] += a * W[r * kGates + col];
  }
  for (int r = 0; r < kHidden; ++r) {
    const S a = h_prev[r];
    const S* row = W + (in_dim + r) * kGates;
    for (int col = 0; col < kGates; ++col) gates[col] += a * row[col];
  }
  for (int u = 0; u < kHidden; ++u) {
    const S si = sigmoid(gates[u]);
    const S tj = tanh(gates[kHidden + u]);
    const S sf = sigmoid(gates[2 * kHidden + u] + S(1));  // forget bias 1.0
    const S so = sigmoid(gates[3 * kHidden + u]);
    act[u] = si;
    act[kHidden + u] = tj;
    act[2 * kHidden + u] = sf;
    act[3 * kHidden + u] = so;
    c_new[u] = sf * c_prev[u] + si * tj;
    tanh_c[u] = tanh(c_new[u]);
    h_new[u] = tanh_c[u] * so;
  }
}

// Given the adjoints dh, dc of (h_new, c_new): dgates and the adjoint of c_prev.
template <class S>
ML2O_HD void lstm_cell_backward_gates(const S* act, const S* c_prev, const S* tanh_c, const S* dh,
                                      const S* dc, S* dgates, S* dc_prev) {
  for (int u = 0; u < kHidden; ++u) {
    const S si = act[u], tj = act[kHidden + u], sf = act[2 * kHidden + u], so = act[3 * kHidden + u];
    const S tc = tanh_c[u];
    const S dcu = dc[u] + dh[u] * so * (S(1) - tc * tc);
    dgates[u] = dcu * tj * si * (S(1) - si);
    dgates[kHidden + u] = dcu * si * (S(1) - tj * tj);
    dgates[2 * kHidden + u] = dcu * c_prev[u] * sf * (S(1) - sf);
    dgates[3 * kHidden + u] = dh[u] * tc * so * (S(1) - so);
    dc_prev[u] = dcu * sf;
  }
}

// d[input; h_prev] = W @ dgates (rows of W dotted with dgates). Eight partial sums in a fixed
// order let the compiler vectorise the dot products without reassociating anything.
template <class S>
ML2O_HD void lstm_cell_backward_inputs(const S* W, int in_dim, const S* dgates, S* d_input,
                                       S* dh_prev) {
  constexpr int kLanes = 8;
  static_assert(kGates % kLanes == 0, "gate count must split into lanes");
  for (int r = 0; r < in_dim + kHidden; ++r) {
    const S* row = W + r * kGates;
    S lane[kLanes];
    for (int l = 0; l < kLanes; ++l) lane[l] = S(0);
    for (int col = 0; col < kGates; col += kLanes)
      for (int l = 0; l < kLanes; ++l) lane[l] += row[col + l] * dgates[col + l];
    const S acc = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    if (r < in_dim) {
      if (d_input) d_input[r] = acc;
    } else {
      dh_prev[r - in_dim] = acc;
    }
  }
}

// RNNprop features and moment update (in place on st.m, st.v); k is the true global step (>= 1).
template <class S> ML2O_HD void rnnprop_features(S g, int64_t k, S& m, S& v, S& bc, S* u) {
  m = S(kRnnpropBeta) * m + S(1 - kRnnpropBeta) * g;
  v = S(kRnnpropBeta) * v + S(1 - kRnnpropBeta) * g * g;
  bc = S(1) - S(pow(kRnnpropBeta, static_cast<double>(k)));
  const S s = sqrt(v / bc) + S(kRnnpropEps);
  u[0] = (m / bc) / s;
  u[1] = g / s;
}

// DM-LSTM log-and-sign preprocessing of g with parameter p.
template <class S> ML2O_HD void dmlstm_features(S g, S p, S* u) {
  const S ag = fabs(g);
  if (ag >= exp(-p)) {
    u[0] = log(ag) / p;
    u[1] = S((g > S(0)) - (g < S(0)));
  } else {
    u[0] = S(-1);
    u[1] = exp(p) * g;
  }
}

// One step of the learned optimizer for one coordinate: returns the update delta (x += delta),
// advances the state, and fills the tape when one is given.
template <class S>
ML2O_HD S optimizer_step_forward(const OptimizerHyper& hyper, const S* w, S g, int64_t k,
                                 CoordState<S>& st, StepTape<S>& tp) {
  tp.g = g;
  int in_dim;
  const S *W1, *b1, *W2, *b2, *Wo, *bo;
  if (hyper.arch == Arch::rnnprop) {
    using L = RnnpropLayout;
    rnnprop_features(g, k, st.m, st.v, tp.bc, tp.u);
    tp.m = st.m;
    tp.v = st.v;
    for (int h = 0; h < kHidden; ++h) {
      const S pre = w[L::b_in + h] + tp.u[0] * w[L::W_in + h] + tp.u[1] * w[L::W_in + kHidden + h];
      tp.zpre[h] = pre;
      tp.z[h] = pre > S(0) ? pre : exp(pre) - S(1);  // ELU
    }
    in_dim = kHidden;
    W1 = w + L::W1; b1 = w + L::b1; W2 = w + L::W2; b2 = w + L::b2;
    Wo = w + L::W_out; bo = w + L::b_out;
  } else {
    using L = DmlstmLayout;
    dmlstm_features(g, S(hyper.dm_p), tp.u);
    tp.m = tp.v = tp.bc = S(0);
    tp.z[0] = tp.u[0];
    tp.z[1] = tp.u[1];
    in_dim = 2;
    W1 = w + L::W1; b1 = w + L::b1; W2 = w + L::W2; b2 = w + L::b2;
    Wo = w + L::W_out; bo = w + L::b_out;
  }
  for (int h = 0; h < kHidden; ++h) {
    tp.h1p[h] = st.h1[h]; tp.c1p[h] = st.c1[h];
    tp.h2p[h] = st.h2[h]; tp.c2p[h] = st.c2[h];
  }
  lstm_cell_forward(W1, b1, in_dim, tp.z, tp.h1p, tp.c1p, tp.act1, tp.c1, tp.tc1, tp.h1);
  lstm_cell_forward(W2, b2, kHidden, tp.h1, tp.h2p, tp.c2p, tp.act2, tp.c2, tp.tc2, tp.h2);
  S pre = bo[0];
  for (int h = 0; h < kHidden; ++h) pre += tp.h2[h] * Wo[h];
  for (int h = 0; h < kHidden; ++h) {
    st.h1[h] = tp.h1[h]; st.c1[h] = tp.c1[h];
    st.h2[h] = tp.h2[h]; st.c2[h] = tp.c2[h];
  }
  if (hyper.arch == Arch::rnnprop) {
    tp.out = tanh(pre);
    return S(hyper.output_scale) * tp.out;
  }
  tp.out = pre;
  return S(hyper.dm_scale) * pre;
}

// Backward of one step for one coordinate. d_delta is the adjoint of this step's update; adj holds
// the adjoints of the state after the step and is replaced by those of the state before it.
// Returns the adjoint of the gradient input g (0 unless second derivatives are wanted).
template <class S>
ML2O_HD S optimizer_step_backward(const OptimizerHyper& hyper, const S* w, const StepTape<S>& tp,
                                  S d_delta, bool want_dg, CoordAdjoint<S>& adj, StepGrads<S>& sg) {
  int in_dim;
  const S *W1, *W2, *Wo;
  if (hyper.arch == Arch::rnnprop) {
    using L = RnnpropLayout;
    in_dim = kHidden;
    W1 = w + L::W1; W2 = w + L::W2; Wo = w + L::W_out;
    sg.dout = d_delta * S(hyper.output_scale) * (S(1) - tp.out * tp.out);
  } else {
    using L = DmlstmLayout;
    in_dim = 2;
    W1 = w + L::W1; W2 = w + L::W2; Wo = w + L::W_out;
    sg.dout = d_delta * S(hyper.dm_scale);
  }
  S dh[kHidden], dc_prev[kHidden], d_in[kHidden];
  for (int h = 0; h < kHidden; ++h) dh[h] = adj.h2[h] + Wo[h] * sg.dout;
  lstm_cell_backward_gates(tp.act2, tp.c2p, tp.tc2, dh, adj.c2, sg.dgates2, dc_prev);
  for (int h = 0; h < kHidden; ++h) adj.c2[h] = dc_prev[h];
  lstm_cell_backward_inputs(W2, kHidden, sg.dgates2, d_in, adj.h2);
  for (int h = 0; h < kHidden; ++h) dh[h] = adj.h1[h] + d_in[h];
  lstm_cell_backward_gates(tp.act1, tp.c1p, tp.tc1, dh, adj.c1, sg.dgates1, dc_prev);
  for (int h = 0; h < kHidden; ++h) adj.c1[h] = dc_prev[h];
  lstm_cell_backward_inputs(W1, in_dim, sg.dgates1, d_in, adj.h1);

  if (hyper.arch == Arch::dmlstm) {
    if (!want_dg) return S(0);
    const S p = S(hyper.dm_p);
    const S ag = fabs(tp.g);
    // sign() has zero derivative; only the first feature (or the small-g branch) depends on g.
    return ag >= exp(-p) ? d_in[0] / (p * tp.g) : d_in[1] * exp(p);
  }
  using L = RnnpropLayout;
  S du0 = S(0), du1 = S(0);
  for (int h = 0; h < kHidden; ++h) {
    const S dz = d_in[h] * (tp.zpre[h] > S(0) ? S(1) : tp.z[h] + S(1));
    sg.dzpre[h] = dz;
    du0 += w[L::W_in + h] * dz;
    du1 += w[L::W_in + kHidden + h] * dz;
  }
  if (!want_dg) return S(0);
  // u0 = (m/bc)/s, u1 = g/s, s = sqrt(v/bc) + eps; m, v are this step's updated moments.
  const S bc = tp.bc;
  const S root = sqrt(tp.v / bc);
  const S s = root + S(kRnnpropEps);
  const S ds = -(du0 * (tp.m / bc) + du1 * tp.g) / (s * s);
  const S dv_total = adj.v + (root > S(0) ? ds / (S(2) * root * bc) : S(0));
  const S dm_total = adj.m + du0 / (bc * s);
  S dg = du1 / s + S(1 - kRnnpropBeta) * dm_total + S(2 * (1 - kRnnpropBeta)) * tp.g * dv_total;
  adj.m = S(kRnnpropBeta) * dm_total;
  adj.v = S(kRnnpropBeta) * dv_total;
  return dg;
}

// dW += [input; h_prev] (x) dgates for the step, into a gradient laid out like the weights.
template <class S>
ML2O_HD void accumulate_weight_grad(const OptimizerHyper& hyper, const StepTape<S>& tp,
                                    const StepGrads<S>& sg, S* dw) {
  int in_dim, oW1, ob1, oW2, ob2, oWo, obo;
  if (hyper.arch == Arch::rnnprop) {
    using L = RnnpropLayout;
    for (int h = 0; h < kHidden; ++h) {
      dw[L::W_in + h] += tp.u[0] * sg.dzpre[h];
      dw[L::W_in + kHidden + h] += tp.u[1] * sg.dzpre[h];
      dw[L::b_in + h] += sg.dzpre[h];
    }
    in_dim = kHidden; oW1 = L::W1; ob1 = L::b1; oW2 = L::W2; ob2 = L::b2; oWo = L::W_out; obo = L::b_out;
  } else {
    using L = DmlstmLayout;
    in_dim = 2; oW1 = L::W1; ob1 = L::b1; oW2 = L::W2; ob2 = L::b2; oWo = L::W_out; obo = L::b_out;
  }
  for (int h = 0; h < kHidden; ++h) dw[oWo + h] += tp.h2[h] * sg.dout;
  dw[obo] += sg.dout;
  auto outer = [](const S* input, int n_in, const S* hp, const S* dg, S* W, S* b) {
    for (int r = 0; r < n_in + kHidden; ++r) {
      const S a = r < n_in ? input[r] : hp[r - n_in];
      S* row = W + r * kGates;
      for (int col = 0; col < kGates; ++col) row[col] += a * dg[col];
    }
    for (int col = 0; col < kGates; ++col) b[col] += dg[col];
  };
  outer(tp.z, in_dim, tp.h1p, sg.dgates1, dw + oW1, dw + ob1);
  outer(tp.h1, kHidden, tp.h2p, sg.dgates2, dw + oW2, dw + ob2);
}

}  // namespace ml2o
