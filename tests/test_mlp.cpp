// The mlp optimizee's CPU reference (mlp.hpp): parameter layout, initialisation, counter-based
// minibatches, the forward pass against a naive per-row computation, the gradient against central
// finite differences (double) and float against double, full-split evaluation, and SGD on the real
// digits data as a sanity check of the whole.
//
// Tolerances, from measured errors (printed by each test):
// - finite differences in double, h = 1e-5, error max_i |fd_i - g_i| / max_i |g_i| over every
//   parameter: measured 6e-11..1.5e-10 over the three activations and three depths; tolerance
//   1e-8.
// - float against double at the same (float) point on digits, [64, 20, 10], batch 32: gradient
//   ||g_f - g_d|| / ||g_d|| measured 1.2e-7..1.5e-7, tolerance 1e-5; loss relative error measured
//   1.3e-7..2.5e-7, tolerance 5e-6.
// - the GPU (float32, cuBLAS) against the double oracle: its error must be of the float CPU
//   reference's size, e_gpu <= max(1e-5, 20 e_f), as in test_cuda.cpp. UNVERIFIED: written without
//   a device; the MlpCuda* tests skip with the reason when none is visible.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <random>
#include <stdexcept>
#include <vector>

#include "ml2o/backend.hpp"
#include "ml2o/dataset.hpp"
#include "ml2o/mlp.hpp"
#include "ml2o/mlp_gemm.hpp"
#ifdef ML2O_HAVE_CUDA
#include "ml2o/mlp_cuda.hpp"
#endif

namespace ml2o {
namespace {

constexpr Activation kActivations[] = {Activation::sigmoid, Activation::relu, Activation::tanh};

// A random classification table: rows x features normal, labels from a random linear map.
Dataset random_dataset(int64_t rows, int features, int classes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> map(size_t(features) * classes);
  for (double& v : map) v = normal(rng);
  Dataset d;
  d.source = "random";
  d.rows = rows;
  d.features = features;
  d.classes = classes;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<double> x(features);
    for (double& v : x) v = normal(rng) * 3.0 + 1.0;
    d.x.insert(d.x.end(), x.begin(), x.end());
    int best = 0;
    double best_score = -1e300;
    for (int c = 0; c < classes; ++c) {
      double s = 0;
      for (int j = 0; j < features; ++j) s += map[size_t(c) * features + j] * x[j];
      if (s > best_score) best_score = s, best = c;
    }
    d.y.push_back(best);
  }
  return d;
}

MlpSpec spec_of(std::vector<int> layers, Activation a, int batch, int64_t N, uint64_t seed) {
  MlpSpec s;
  s.layers = std::move(layers);
  s.activation = a;
  s.batch = batch;
  s.instances = N;
  s.seed = seed;
  return s;
}

// Logits of one input row, long-hand in double from the documented layout.
std::vector<double> naive_logits(const MlpLayout& m, Activation a, const double* theta,
                                 std::vector<double> h) {
  int64_t off = 0;
  for (int l = 0; l < m.depth(); ++l) {
    const int in = m.layers[l], out = m.layers[l + 1];
    const double* W = theta + off;
    const double* b = W + int64_t(out) * in;
    off += int64_t(out) * in + out;
    std::vector<double> z(out);
    for (int o = 0; o < out; ++o) {
      z[o] = b[o];
      for (int i = 0; i < in; ++i) z[o] += W[int64_t(o) * in + i] * h[i];
      if (l + 1 < m.depth()) {
        if (a == Activation::sigmoid) z[o] = 1.0 / (1.0 + std::exp(-z[o]));
        if (a == Activation::relu) z[o] = std::max(z[o], 0.0);
        if (a == Activation::tanh) z[o] = std::tanh(z[o]);
      }
    }
    h = z;
  }
  return h;
}
double naive_ce(const std::vector<double>& z, int label) {
  double m = *std::max_element(z.begin(), z.end()), s = 0;
  for (double v : z) s += std::exp(v - m);
  return std::log(s) + m - z[label];
}

// Parameters away from the initialisation's structure (zero biases): init + 0.3 N(0, 1).
std::vector<double> perturbed(std::vector<double> theta, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 0.3);
  for (double& v : theta) v += normal(rng);
  return theta;
}

TEST(Mlp, LayoutAndValidation) {
  const MlpLayout m = mlp_layout({64, 20, 10});
  EXPECT_EQ(m.params, 64 * 20 + 20 + 20 * 10 + 10);
  EXPECT_EQ(m.w_off, (std::vector<int64_t>{0, 1300}));
  EXPECT_EQ(m.b_off, (std::vector<int64_t>{1280, 1500}));
  EXPECT_EQ(m.max_width, 64);
  EXPECT_EQ(m.depth(), 2);
  EXPECT_THROW(mlp_layout({64}), std::invalid_argument);
  EXPECT_THROW(mlp_layout({64, 0, 10}), std::invalid_argument);
  EXPECT_THROW(mlp_layout({1 << 16, 1 << 16}), std::invalid_argument);
  const DataSplit s = split_dataset(random_dataset(40, 5, 3, 1), 0.25, 1);
  EXPECT_THROW(make_mlp_problem<double>(spec_of({4, 3}, Activation::relu, 4, 1, 0), s),
               std::invalid_argument);
  EXPECT_THROW(make_mlp_problem<double>(spec_of({5, 4}, Activation::relu, 4, 1, 0), s),
               std::invalid_argument);
  EXPECT_THROW(make_mlp_problem<double>(spec_of({5, 3}, Activation::relu, 0, 1, 0), s),
               std::invalid_argument);
  Activation a;
  for (Activation b : kActivations) {
    EXPECT_TRUE(parse_activation(activation_name(b), &a));
    EXPECT_EQ(a, b);
  }
  EXPECT_FALSE(parse_activation("gelu", &a));
}

TEST(Mlp, InitialisationIsSeededAndScaled) {
  for (Activation act : kActivations) {
    const MlpSpec spec = spec_of({64, 20, 10}, act, 8, 200, 9);
    const auto theta = mlp_init<double>(spec);
    const auto theta_f = mlp_init<float>(spec);
    const MlpLayout m = mlp_layout(spec.layers);
    ASSERT_EQ(theta.size(), size_t(200 * m.params));
    for (size_t i = 0; i < theta.size(); ++i) ASSERT_EQ(theta[i], double(theta_f[i])) << i;
    // Instance n's weights do not depend on how many instances are drawn.
    MlpSpec fewer = spec;
    fewer.instances = 3;
    const auto prefix = mlp_init<double>(fewer);
    EXPECT_TRUE(std::equal(prefix.begin(), prefix.end(), theta.begin()));
    // Biases 0; W_l's standard deviation Glorot (sigmoid, tanh) or He (relu), within 3%.
    for (int l = 0; l < m.depth(); ++l) {
      const int in = m.layers[l], out = m.layers[l + 1];
      double ss = 0.0;
      int64_t count = 0;
      for (int64_t n = 0; n < spec.instances; ++n) {
        for (int64_t e = 0; e < int64_t(out) * in; ++e, ++count)
          ss += std::pow(theta[n * m.params + m.w_off[l] + e], 2);
        for (int o = 0; o < out; ++o) ASSERT_EQ(theta[n * m.params + m.b_off[l] + o], 0.0);
      }
      const double want =
          act == Activation::relu ? std::sqrt(2.0 / in) : std::sqrt(2.0 / (in + out));
      EXPECT_NEAR(std::sqrt(ss / double(count)), want, 0.03 * want)
          << activation_name(act) << " layer " << l;
    }
  }
  MlpSpec other = spec_of({64, 20, 10}, Activation::tanh, 8, 2, 10);
  EXPECT_NE(mlp_init<double>(other),
            mlp_init<double>(spec_of({64, 20, 10}, Activation::tanh, 8, 2, 9)));
}

TEST(Mlp, MinibatchDrawsAreCounterBased) {
  const int64_t rows = 10;
  const int B = 16;
  std::vector<int64_t> count(rows, 0);
  for (int64_t n = 0; n < 50; ++n)
    for (int64_t k = 1; k <= 125; ++k)
      for (int j = 0; j < B; ++j) {
        const int64_t r = mlp_minibatch_row(3, n, k, j, B, rows);
        ASSERT_TRUE(r >= 0 && r < rows);
        ++count[r];
      }
  // 100,000 draws over 10 rows: each count within 3% of 10,000 (about 10 standard deviations).
  for (int64_t r = 0; r < rows; ++r) EXPECT_NEAR(count[r], 10000, 300) << r;
  // Different instances, steps and seeds see different minibatches.
  auto batch_of = [&](uint64_t seed, int64_t n, int64_t k) {
    std::vector<int64_t> b;
    for (int j = 0; j < B; ++j) b.push_back(mlp_minibatch_row(seed, n, k, j, B, 1000));
    return b;
  };
  EXPECT_EQ(batch_of(3, 1, 5), batch_of(3, 1, 5));
  EXPECT_NE(batch_of(3, 1, 5), batch_of(3, 2, 5));
  EXPECT_NE(batch_of(3, 1, 5), batch_of(3, 1, 6));
  EXPECT_NE(batch_of(3, 1, 5), batch_of(4, 1, 5));
}

// The loss of instance n at step k is the mean cross-entropy over the rows mlp_minibatch_row
// names, computed here long-hand.
TEST(Mlp, LossMatchesNaiveForwardOnTheDrawnRows) {
  const DataSplit split = split_dataset(random_dataset(300, 6, 4, 2), 0.2, 2);
  for (Activation act : kActivations) {
    const MlpSpec spec = spec_of({6, 5, 7, 4}, act, 9, 3, 11);
    const auto p = make_mlp_problem<double>(spec, split);
    const auto theta = perturbed(mlp_init<double>(spec), 5);
    std::vector<double> loss(3);
    mlp_batch_loss_grad<double>(p, 17, theta.data(), nullptr, loss.data());
    for (int64_t n = 0; n < 3; ++n) {
      double want = 0.0;
      for (int j = 0; j < spec.batch; ++j) {
        const int64_t r = mlp_minibatch_row(spec.seed, n, 17, j, spec.batch, p.train_rows);
        const std::vector<double> x(p.train_x.begin() + r * 6, p.train_x.begin() + (r + 1) * 6);
        want += naive_ce(naive_logits(p.layout, act, theta.data() + n * p.layout.params, x),
                         p.train_y[r]);
      }
      want /= spec.batch;
      EXPECT_NEAR(loss[n], want, 1e-12 * std::max(1.0, want)) << activation_name(act) << " n" << n;
    }
  }
}

TEST(Mlp, GradientMatchesFiniteDifferences) {
  const DataSplit split = split_dataset(random_dataset(200, 6, 4, 3), 0.2, 3);
  const std::vector<std::vector<int>> shapes = {{6, 4}, {6, 5, 4}, {6, 8, 3, 4}};
  double worst_all = 0.0;
  for (Activation act : kActivations)
    for (const auto& layers : shapes) {
      const MlpSpec spec = spec_of(layers, act, 7, 2, 21);
      const auto p = make_mlp_problem<double>(spec, split);
      const int64_t P = p.layout.params;
      auto theta = perturbed(mlp_init<double>(spec), 6);
      MlpWorkspace<double> ws(p.layout, spec.batch);
      double worst = 0.0;
      for (int64_t n = 0; n < 2; ++n) {
        double* th = theta.data() + n * P;
        std::vector<double> g(P);
        mlp_instance_loss_grad(p, n, 4, th, g.data(), ws);
        double gmax = 0.0;
        for (double v : g) gmax = std::max(gmax, std::abs(v));
        ASSERT_GT(gmax, 0.0);
        for (int64_t i = 0; i < P; ++i) {
          const double h = 1e-5, keep = th[i];
          th[i] = keep + h;
          const double up = mlp_instance_loss_grad<double>(p, n, 4, th, nullptr, ws);
          th[i] = keep - h;
          const double down = mlp_instance_loss_grad<double>(p, n, 4, th, nullptr, ws);
          th[i] = keep;
          worst = std::max(worst, std::abs((up - down) / (2 * h) - g[i]) / gmax);
        }
      }
      std::cout << "[ fd ] " << activation_name(act) << " layers " << layers.size()
                << " P " << P << ": max |fd - g| / max |g| = " << worst << "\n";
      EXPECT_LE(worst, 1e-8) << activation_name(act) << " depth " << layers.size() - 1;
      worst_all = std::max(worst_all, worst);
    }
  std::cout << "[ fd ] worst over all cases: " << worst_all << "\n";
}

TEST(Mlp, FloatGradientMatchesDouble) {
  const DataSplit split = split_dataset(load_digits(), 0.25, 4);
  for (Activation act : kActivations) {
    const MlpSpec spec = spec_of({64, 20, 10}, act, 32, 8, 31);
    const auto pf = make_mlp_problem<float>(spec, split);
    const auto pd = make_mlp_problem<double>(spec, split);
    const auto theta_f = mlp_init<float>(spec);
    const std::vector<double> theta_d(theta_f.begin(), theta_f.end());
    const size_t NP = theta_f.size();
    std::vector<float> gf(NP), lf(8);
    std::vector<double> gd(NP), ld(8);
    mlp_batch_loss_grad<float>(pf, 3, theta_f.data(), gf.data(), lf.data());
    mlp_batch_loss_grad<double>(pd, 3, theta_d.data(), gd.data(), ld.data());
    double num = 0, den = 0, lerr = 0;
    for (size_t i = 0; i < NP; ++i) num += std::pow(gf[i] - gd[i], 2), den += gd[i] * gd[i];
    for (int n = 0; n < 8; ++n) lerr = std::max(lerr, std::abs(lf[n] - ld[n]) / ld[n]);
    const double err = std::sqrt(num / den);
    std::cout << "[ float ] " << activation_name(act) << ": gradient error " << err
              << ", loss error " << lerr << "\n";
    EXPECT_LE(err, 1e-5) << activation_name(act);
    EXPECT_LE(lerr, 5e-6) << activation_name(act);
  }
}

// Instance n's loss and gradient at step k depend on (seed, n, k) only: not on how many instances
// the batch holds, which other instances are computed, or in what order.
TEST(Mlp, InstancesAreIndependentOfTheBatch) {
  const DataSplit split = split_dataset(random_dataset(100, 5, 3, 4), 0.2, 4);
  const MlpSpec spec = spec_of({5, 6, 3}, Activation::tanh, 5, 6, 41);
  const auto p6 = make_mlp_problem<float>(spec, split);
  const auto theta = mlp_init<float>(spec);
  const int64_t P = p6.layout.params;
  std::vector<float> g(theta.size()), loss(6);
  mlp_batch_loss_grad<float>(p6, 8, theta.data(), g.data(), loss.data());
  MlpSpec one = spec;
  one.instances = 1;
  const auto p1 = make_mlp_problem<float>(one, split);
  MlpWorkspace<float> ws(p1.layout, 64);  // a larger workspace than needed
  for (int64_t n : {5, 2, 0}) {
    std::vector<float> gn(P);
    const float ln = mlp_instance_loss_grad(p1, n, 8, theta.data() + n * P, gn.data(), ws);
    EXPECT_EQ(ln, loss[n]) << n;
    EXPECT_TRUE(std::equal(gn.begin(), gn.end(), g.begin() + n * P)) << n;
  }
  // The same parameters at another step see another minibatch.
  std::vector<float> loss9(6);
  mlp_batch_loss_grad<float>(p6, 9, theta.data(), nullptr, loss9.data());
  EXPECT_NE(loss9, loss);
}

TEST(Mlp, EvaluateMatchesNaiveFullSplit) {
  // 600 training rows: more than one 256-row pass.
  const DataSplit split = split_dataset(random_dataset(750, 6, 4, 5), 0.2, 5);
  const MlpSpec spec = spec_of({6, 5, 4}, Activation::sigmoid, 4, 2, 51);
  const auto p = make_mlp_problem<double>(spec, split);
  ASSERT_EQ(p.train_rows, 600);
  const auto theta = perturbed(mlp_init<double>(spec), 7);
  std::vector<double> train_loss(2), acc(2);
  mlp_evaluate<double>(p, theta.data(), train_loss.data(), acc.data());
  for (int64_t n = 0; n < 2; ++n) {
    const double* th = theta.data() + n * p.layout.params;
    double ce = 0;
    for (int64_t r = 0; r < p.train_rows; ++r)
      ce += naive_ce(naive_logits(p.layout, spec.activation, th,
                                  {p.train_x.begin() + r * 6, p.train_x.begin() + (r + 1) * 6}),
                     p.train_y[r]);
    int64_t correct = 0;
    for (int64_t r = 0; r < p.test_rows; ++r) {
      const auto z = naive_logits(p.layout, spec.activation, th,
                                  {p.test_x.begin() + r * 6, p.test_x.begin() + (r + 1) * 6});
      correct += std::max_element(z.begin(), z.end()) - z.begin() == p.test_y[r];
    }
    EXPECT_NEAR(train_loss[n], ce / 600.0, 1e-12) << n;
    EXPECT_EQ(acc[n], double(correct) / double(p.test_rows)) << n;
  }
}

// Plain SGD on one digits classifier: the full training loss falls and the test accuracy rises far
// above chance (0.1). A sanity check of data, forward, backward and minibatches together.
TEST(Mlp, SgdTrainsADigitsClassifier) {
  const DataSplit split = split_dataset(load_digits(), 0.25, 6);
  for (Activation act : kActivations) {
    const MlpSpec spec = spec_of({64, 20, 10}, act, 32, 2, 61);
    const auto p = make_mlp_problem<float>(spec, split);
    auto theta = mlp_init<float>(spec);
    std::vector<float> g(theta.size()), loss(2);
    std::vector<double> loss0(2), acc0(2), loss1(2), acc1(2);
    mlp_evaluate<float>(p, theta.data(), loss0.data(), acc0.data());
    const float lr = 0.1f;
    for (int64_t k = 1; k <= 300; ++k) {
      mlp_batch_loss_grad<float>(p, k, theta.data(), g.data(), loss.data());
      for (size_t i = 0; i < theta.size(); ++i) theta[i] -= lr * g[i];
    }
    mlp_evaluate<float>(p, theta.data(), loss1.data(), acc1.data());
    for (int n = 0; n < 2; ++n) {
      std::cout << "[ sgd ] " << activation_name(act) << " instance " << n << ": train loss "
                << loss0[n] << " -> " << loss1[n] << ", test accuracy " << acc0[n] << " -> "
                << acc1[n] << "\n";
      EXPECT_LT(loss1[n], 0.5 * loss0[n]) << activation_name(act);
      EXPECT_GT(acc1[n], 0.8) << activation_name(act);
    }
  }
}

// ---- the GPU's GEMM plan, replayed on the CPU -----------------------------------------------------

// A column-major strided-batched GEMM with the cuBLAS argument conventions, C_e = op(A_e) op(B_e);
// every access is bounds-checked against the arrays (an operand starts at its offset).
struct Operand {
  std::vector<double>* v;
  int64_t offset;
  double& at(int64_t i) const { return v->at(size_t(offset + i)); }
};
void gemm_reference(const BatchedGemm& g, Operand A, Operand B, Operand C, int64_t batch) {
  for (int64_t e = 0; e < batch; ++e)
    for (int j = 0; j < g.n; ++j)
      for (int i = 0; i < g.m; ++i) {
        double acc = 0.0;
        for (int p = 0; p < g.k; ++p) {
          const double a = A.at(e * g.stride_a + (g.trans_a ? p + int64_t(i) * g.lda
                                                            : i + int64_t(p) * g.lda));
          const double b = B.at(e * g.stride_b + (g.trans_b ? j + int64_t(p) * g.ldb
                                                            : p + int64_t(j) * g.ldb));
          acc += a * b;
        }
        C.at(e * g.stride_c + i + int64_t(j) * g.ldc) = acc;
      }
}

// kernels/mlp.cu's sequence (gather, then per layer the GEMMs of mlp_gemm.hpp and the elementwise
// kernels' math) on the CPU in double, against mlp_batch_loss_grad: checks the transposes,
// leading dimensions and strides the GPU uses, without a GPU.
TEST(Mlp, GpuGemmPlanReplaysTheCpuReference) {
  const DataSplit split = split_dataset(random_dataset(120, 7, 4, 12), 0.25, 12);
  for (Activation act : kActivations) {
    const MlpSpec spec = spec_of({7, 6, 5, 4}, act, 3, 4, 91);
    const auto p = make_mlp_problem<double>(spec, split);
    const MlpLayout& m = p.layout;
    const int64_t N = spec.instances, P = m.params, k = 5;
    const int B = spec.batch, F = m.layers[0], C = m.layers.back(), L = m.depth();
    auto theta = perturbed(mlp_init<double>(spec), 13);
    std::vector<double> want_g(theta.size()), want_l(N);
    mlp_batch_loss_grad<double>(p, k, theta.data(), want_g.data(), want_l.data());

    std::vector<std::vector<double>> acts(L + 1);
    for (int l = 0; l <= L; ++l) acts[l].assign(size_t(N) * B * m.layers[l], NAN);
    std::vector<int32_t> labels(size_t(N) * B);
    for (int64_t n = 0; n < N; ++n)  // gather_minibatch_kernel
      for (int j = 0; j < B; ++j) {
        const int64_t r = mlp_minibatch_row(spec.seed, n, k, j, B, p.train_rows);
        for (int f = 0; f < F; ++f) acts[0][size_t((n * B + j) * F + f)] = p.train_x[r * F + f];
        labels[size_t(n * B + j)] = p.train_y[r];
      }
    for (int l = 0; l < L; ++l) {
      const int in = m.layers[l], out = m.layers[l + 1];
      gemm_reference(mlp_forward_gemm(in, out, B, P, int64_t(B) * in), {&theta, m.w_off[l]},
                     {&acts[l], 0}, {&acts[l + 1], 0}, N);
      for (size_t i = 0; i < acts[l + 1].size(); ++i) {  // bias_activation_kernel
        const int64_t n = int64_t(i) / (int64_t(B) * out), o = int64_t(i) % out;
        const double v = acts[l + 1][i] + theta[size_t(n * P + m.b_off[l] + o)];
        acts[l + 1][i] = l + 1 < L ? activation_value(act, v) : v;
      }
    }
    std::vector<double> dz(size_t(N) * B * m.max_width, NAN), dprev = dz, grad(theta.size(), NAN);
    std::vector<double> loss(N);
    for (int64_t n = 0; n < N; ++n)  // softmax_ce_grad_kernel
      loss[n] = softmax_cross_entropy<double>(dz.data() + n * B * C, acts[L].data() + n * B * C,
                                              labels.data() + n * B, B, C);
    for (int l = L - 1; l >= 0; --l) {
      const int in = m.layers[l], out = m.layers[l + 1];
      gemm_reference(mlp_weight_grad_gemm(in, out, B, P), {&acts[l], 0}, {&dz, 0},
                     {&grad, m.w_off[l]}, N);
      for (int64_t n = 0; n < N; ++n)  // bias_grad_kernel
        for (int o = 0; o < out; ++o) {
          double s = 0.0;
          for (int r = 0; r < B; ++r) s += dz[size_t((n * B + r) * out + o)];
          grad[size_t(n * P + m.b_off[l] + o)] = s;
        }
      if (l == 0) break;
      gemm_reference(mlp_input_grad_gemm(in, out, B, P), {&theta, m.w_off[l]}, {&dz, 0},
                     {&dprev, 0}, N);
      for (int64_t i = 0; i < N * B * in; ++i)  // activation_backward_kernel
        dprev[size_t(i)] *= activation_slope(act, acts[l][size_t(i)]);
      std::swap(dz, dprev);
    }
    double gerr = 0.0, gmax = 0.0;
    for (size_t i = 0; i < grad.size(); ++i) {
      gerr = std::max(gerr, std::abs(grad[i] - want_g[i]));
      gmax = std::max(gmax, std::abs(want_g[i]));
    }
    EXPECT_LE(gerr, 1e-12 * gmax) << activation_name(act);
    for (int64_t n = 0; n < N; ++n) EXPECT_NEAR(loss[n], want_l[n], 1e-12) << activation_name(act);

    // Evaluation: the test rows shared by every instance (x stride 0).
    const int R = static_cast<int>(p.test_rows);
    std::vector<double> x(p.test_x.begin(), p.test_x.end()), h, z;
    for (int l = 0; l < L; ++l) {
      const int in = m.layers[l], out = m.layers[l + 1];
      z.assign(size_t(N) * R * out, NAN);
      gemm_reference(mlp_forward_gemm(in, out, R, P, l == 0 ? 0 : int64_t(R) * in),
                     {&theta, m.w_off[l]}, {l == 0 ? &x : &h, 0}, {&z, 0}, N);
      for (size_t i = 0; i < z.size(); ++i) {
        const int64_t n = int64_t(i) / (int64_t(R) * out), o = int64_t(i) % out;
        z[i] += theta[size_t(n * P + m.b_off[l] + o)];
        if (l + 1 < L) z[i] = activation_value(act, z[i]);
      }
      h = z;
    }
    double zerr = 0.0;
    for (int64_t n = 0; n < N; ++n)
      for (int r = 0; r < R; ++r) {
        const auto want = naive_logits(m, act, theta.data() + n * P,
                                       {p.test_x.begin() + r * F, p.test_x.begin() + (r + 1) * F});
        for (int c = 0; c < C; ++c)
          zerr = std::max(zerr, std::abs(h[size_t((n * R + r) * C + c)] - want[c]));
      }
    EXPECT_LE(zerr, 1e-12) << activation_name(act);
  }
}

// ---- the CUDA implementation against the CPU reference ------------------------------------------
#ifdef ML2O_HAVE_CUDA
#define ML2O_REQUIRE_CUDA()                                                          \
  do {                                                                               \
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device: the mlp GPU tests need a visible GPU"; \
  } while (0)
#else
#define ML2O_REQUIRE_CUDA() \
  GTEST_SKIP() << "no CUDA device: this build has no CUDA support (ML2O_CUDA off or no nvcc)"
#endif

template <class A, class B> double nerr(const A& a, const B& ref) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += std::pow(double(a[i]) - double(ref[i]), 2);
    den += double(ref[i]) * double(ref[i]);
  }
  return std::sqrt(num / den);
}
template <class A> bool all_finite(const A& a) {
  return std::all_of(a.begin(), a.end(), [](auto v) { return std::isfinite(double(v)); });
}

// Loss and gradient of every instance at a few steps: GPU (float) and CPU float against the CPU
// double oracle; the loss-only call agrees with the full one; a second call repeats bit for bit.
void check_cuda_loss_grad(const std::vector<int>& layers, int batch, int64_t N) {
#ifdef ML2O_HAVE_CUDA
  const DataSplit split =
      split_dataset(random_dataset(400, layers.front(), layers.back(), 8), 0.25, 8);
  for (Activation act : kActivations) {
    const MlpSpec spec = spec_of(layers, act, batch, N, 71);
    const auto pf = make_mlp_problem<float>(spec, split);
    const auto pd = make_mlp_problem<double>(spec, split);
    const auto theta_d0 = perturbed(mlp_init<double>(spec), 9);
    const std::vector<float> theta(theta_d0.begin(), theta_d0.end());
    const std::vector<double> theta_d(theta.begin(), theta.end());
    CudaMlp gpu(pf);
    for (int64_t k : {1, 2, 1000}) {
      const size_t NP = theta.size();
      std::vector<double> gd(NP), ld(N);
      std::vector<float> gf(NP), lf(N), gg(NP), lg(N), gg2(NP), lg2(N), lonly(N);
      mlp_batch_loss_grad<double>(pd, k, theta_d.data(), gd.data(), ld.data());
      mlp_batch_loss_grad<float>(pf, k, theta.data(), gf.data(), lf.data());
      gpu.loss_grad(k, theta.data(), gg.data(), lg.data());
      gpu.loss_grad(k, theta.data(), gg2.data(), lg2.data());
      gpu.loss_grad(k, theta.data(), nullptr, lonly.data());
      ASSERT_TRUE(all_finite(gg) && all_finite(lg)) << activation_name(act);
      const double eg = nerr(gg, gd), ef = nerr(gf, gd), el = nerr(lg, ld), elf = nerr(lf, ld);
      std::cout << "[ cuda ] " << activation_name(act) << " depth " << layers.size() - 1 << " B "
                << batch << " N " << N << " k " << k << ": gradient " << eg << " (cpu float " << ef
                << "), loss " << el << " (cpu float " << elf << ")\n";
      EXPECT_LE(eg, std::max(1e-5, 20 * ef)) << activation_name(act) << " k " << k;
      EXPECT_LE(el, std::max(1e-5, 20 * elf)) << activation_name(act) << " k " << k;
      EXPECT_EQ(gg2, gg) << "not bit-identical run to run";
      EXPECT_EQ(lg2, lg);
      EXPECT_EQ(lonly, lg) << "the loss-only call differs";
    }
  }
#else
  (void)layers, (void)batch, (void)N;
#endif
}

TEST(MlpCudaSmall, LossAndGradientMatchCpu) {
  ML2O_REQUIRE_CUDA();
  check_cuda_loss_grad({6, 5, 3}, 7, 3);
}

TEST(MlpCuda, LossAndGradientMatchCpu) {
  ML2O_REQUIRE_CUDA();
  check_cuda_loss_grad({64, 20, 10}, 32, 37);
  check_cuda_loss_grad({30, 40, 16, 5}, 13, 9);
}

TEST(MlpCuda, EvaluateMatchesCpu) {
  ML2O_REQUIRE_CUDA();
#ifdef ML2O_HAVE_CUDA
  // 600 training rows: three passes of 256.
  const DataSplit split = split_dataset(random_dataset(750, 12, 4, 10), 0.2, 10);
  for (Activation act : kActivations) {
    const MlpSpec spec = spec_of({12, 9, 4}, act, 8, 5, 81);
    const auto pf = make_mlp_problem<float>(spec, split);
    const auto pd = make_mlp_problem<double>(spec, split);
    const auto theta_d0 = perturbed(mlp_init<double>(spec), 11);
    const std::vector<float> theta(theta_d0.begin(), theta_d0.end());
    const std::vector<double> theta_d(theta.begin(), theta.end());
    std::vector<double> loss_d(5), acc_d(5), loss_g(5), acc_g(5);
    mlp_evaluate<double>(pd, theta_d.data(), loss_d.data(), acc_d.data());
    CudaMlp gpu(pf);
    gpu.evaluate(theta.data(), loss_g.data(), acc_g.data());
    for (int n = 0; n < 5; ++n) {
      EXPECT_NEAR(loss_g[n], loss_d[n], 1e-5 * loss_d[n]) << activation_name(act) << " n" << n;
      // A test row whose two largest logits are within float rounding may flip: allow one.
      EXPECT_NEAR(acc_g[n], acc_d[n], 1.0 / double(pf.test_rows) + 1e-12)
          << activation_name(act) << " n" << n;
    }
  }
#endif
}

}  // namespace
}  // namespace ml2o
