// Analytical baselines: hand-computed steps, descent, LASSO optimality of FISTA's limit, ISTA vs
// FISTA, the Lipschitz constants against a Jacobi eigen-solver, and the argument checks.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <stdexcept>
#include <vector>

#include "ml2o/baselines.hpp"

namespace ml2o {
namespace {

// One-instance d = 2 quadratic f(x) = 1/2 ||Ax - b||^2 with A = diag(1, 2), b = (1, 0), x0 = (0, 1):
// grad f(x) = (x1 - 1, 4 x2), f(x0) = 2.5.
Task<float> tiny_quadratic() {
  Task<float> t;
  t.spec.family = Family::quadratic;
  t.spec.dim = 2;
  t.spec.instances = 1;
  t.A = {1.0f, 0.0f, 0.0f, 2.0f};
  t.b = {1.0f, 0.0f};
  t.x0 = {0.0f, 1.0f};
  return t;
}

struct HandCase {
  BaselineSpec spec;
  std::vector<double> x2;    // iterate after two steps
  std::vector<double> objs;  // f(x0), f(x1), f(x2)
};

void expect_hand_case(const HandCase& c, const char* what) {
  std::vector<float> x;
  const auto objs = run_baseline_cpu(c.spec, tiny_quadratic(), 2, &x);
  ASSERT_EQ(objs.size(), 3u) << what;
  ASSERT_EQ(x.size(), 2u) << what;
  for (int j = 0; j < 2; ++j) EXPECT_NEAR(x[j], c.x2[j], 1e-6) << what << " x[" << j << "]";
  for (int t = 0; t < 3; ++t) EXPECT_NEAR(objs[t], c.objs[t], 2e-6) << what << " f(x" << t << ")";
}

TEST(Baselines, SgdTwoStepsByHand) {
  // g0 = (-1, 4): x1 = (0.1, 0.6), f = 1.125; g1 = (-0.9, 2.4): x2 = (0.19, 0.36), f = 0.58725.
  HandCase c;
  c.spec.kind = BaselineKind::sgd;
  c.spec.lr = 0.1;
  c.x2 = {0.19, 0.36};
  c.objs = {2.5, 1.125, 0.58725};
  expect_hand_case(c, "sgd");
}

TEST(Baselines, MomentumTwoStepsByHand) {
  // Heavy ball, mu = 0.9, lr = 0.1: v1 = g0 = (-1, 4), x1 = (0.1, 0.6);
  // v2 = 0.9 v1 + g1 = (-1.8, 6), x2 = (0.28, 0), f(x2) = 0.5 * 0.72^2 = 0.2592.
  HandCase c;
  c.spec.kind = BaselineKind::momentum;
  c.spec.lr = 0.1;
  c.spec.momentum = 0.9;
  c.x2 = {0.28, 0.0};
  c.objs = {2.5, 1.125, 0.2592};
  expect_hand_case(c, "momentum");
}

TEST(Baselines, AdamTwoStepsByHand) {
  // lr 0.1, beta (0.9, 0.999), eps 1e-8. Step 1: m̂ = g0, v̂ = g0², x1 = x0 - 0.1 sign(g0)
  // = (0.1, 0.9) (up to eps). Step 2: g1 = (-0.9, 3.6), m = (-0.18, 0.72), v = (0.001809, 0.028944),
  // m̂ = m / 0.19, v̂ = v / 0.001999, x2 = x1 - 0.1 m̂ / (sqrt(v̂) + eps).
  HandCase c;
  c.spec.kind = BaselineKind::adam;
  c.spec.lr = 0.1;
  c.x2 = {0.19958777028766189, 0.80041222818152014};
  c.objs = {2.5, 2.0250000017999996, 1.60164933878155};
  expect_hand_case(c, "adam");
}

TEST(Baselines, RmspropTwoStepsByHand) {
  // lr 0.01, decay 0.9, eps 1e-8: s1 = 0.1 g0² = (0.1, 1.6), x1 = x0 - 0.01 g0 / sqrt(s1)
  // = (0.0316228, 0.968377); s2 = 0.9 s1 + 0.1 g1², x2 = x1 - 0.01 g1 / sqrt(s2).
  HandCase c;
  c.spec.kind = BaselineKind::rmsprop;
  c.spec.lr = 0.01;
  c.spec.rms_decay = 0.9;
  c.x2 = {0.054211973754143175, 0.94578802510922344};
  c.objs = {2.5, 2.3443861189283357, 2.236287472175027};
  expect_hand_case(c, "rmsprop");
}

TEST(Baselines, FirstOrderMethodsDecreaseAQuadratic) {
  TaskSpec s;
  s.family = Family::quadratic;
  s.dim = 10;
  s.instances = 16;
  s.sigma = 1.0;
  s.b_lo = -1.0;
  s.seed = 3;
  const auto task = sample_task<float>(s);
  for (BaselineKind k :
       {BaselineKind::sgd, BaselineKind::momentum, BaselineKind::adam, BaselineKind::rmsprop}) {
    BaselineSpec b;
    b.kind = k;
    b.lr = 1e-3;
    const auto objs = run_baseline_cpu(b, task, 200);
    ASSERT_EQ(objs.size(), 201u);
    EXPECT_LT(objs.back(), 0.9 * objs.front()) << baseline_name(k);
    // SGD with lr < 2/L descends at every step.
    if (k == BaselineKind::sgd) {
      for (size_t t = 1; t < objs.size(); ++t) EXPECT_LE(objs[t], objs[t - 1]) << "sgd step " << t;
    }
    for (double v : objs) EXPECT_TRUE(std::isfinite(v));
  }
}

Task<float> small_lasso(double lam) {
  TaskSpec s;
  s.family = Family::lasso;
  s.dim = 8;
  s.instances = 4;
  s.sigma = 1.0;
  s.lam = lam;
  s.seed = 11;
  return sample_task<float>(s);
}

// KKT residual of LASSO at x (double math on the float data): the largest violation over
// coordinates of  |(A^T(Ax-b))_j + lam sign(x_j)| = 0 (x_j != 0)  and  |(A^T(Ax-b))_j| <= lam (x_j = 0).
double kkt_violation(const Task<float>& task, const std::vector<float>& x, int* zeros, int* nonzeros) {
  const int d = task.spec.dim;
  const double lam = task.spec.lam;
  double worst = 0.0;
  for (int64_t n = 0; n < task.spec.instances; ++n) {
    const float* A = task.A.data() + n * d * d;
    const float* b = task.b.data() + n * d;
    const float* xn = x.data() + n * d;
    std::vector<double> r(d);
    for (int i = 0; i < d; ++i) {
      r[i] = -double(b[i]);
      for (int j = 0; j < d; ++j) r[i] += double(A[i * d + j]) * xn[j];
    }
    for (int j = 0; j < d; ++j) {
      double gj = 0.0;
      for (int i = 0; i < d; ++i) gj += double(A[i * d + j]) * r[i];
      if (std::abs(xn[j]) < 1e-7) {
        ++*zeros;
        worst = std::max(worst, std::abs(gj) - lam);
      } else {
        ++*nonzeros;
        worst = std::max(worst, std::abs(gj + lam * (xn[j] > 0 ? 1.0 : -1.0)));
      }
    }
  }
  return worst;
}

TEST(Baselines, FistaReachesTheLassoOptimum) {
  // lam = 0.5 puts the optimum on a mix of zero and non-zero coordinates, so both KKT branches
  // are exercised; lam = the paper's 0.005 checks the (dense) default.
  for (double lam : {0.5, 0.005}) {
    const auto task = small_lasso(lam);
    BaselineSpec b;
    b.kind = BaselineKind::fista;
    std::vector<float> x;
    const auto objs = run_baseline_cpu(b, task, 5000, &x);
    int zeros = 0, nonzeros = 0;
    const double v = kkt_violation(task, x, &zeros, &nonzeros);
    std::cout << "[ measured ] FISTA lam=" << lam << ": KKT violation " << v << " (" << zeros
              << " zero, " << nonzeros << " non-zero coordinates), final objective "
              << objs.back() << "\n";
    // Float32 iterates: the gradient of a float-rounded x is exact only to ~1e-6 * ||A^T A|| ||x||.
    EXPECT_LE(v, 5e-5) << "lam " << lam;
    EXPECT_GT(nonzeros, 0);
    if (lam == 0.5) {
      EXPECT_GT(zeros, 0) << "the check should see both KKT branches";
    }
  }
}

TEST(Baselines, IstaConvergesSlowerThanFista) {
  const auto task = small_lasso(0.05);
  BaselineSpec ista, fista;
  ista.kind = BaselineKind::ista;
  fista.kind = BaselineKind::fista;
  const auto oi = run_baseline_cpu(ista, task, 3000);
  const auto of = run_baseline_cpu(fista, task, 3000);
  double fstar = std::min(*std::min_element(oi.begin(), oi.end()),
                          *std::min_element(of.begin(), of.end()));
  // Both reach the same optimum; on the way FISTA's gap is far smaller.
  EXPECT_NEAR(of.back(), oi.back(), 1e-4 * std::abs(fstar) + 1e-6);
  for (int k : {20, 50, 100}) {
    const double gi = oi[k] - fstar, gf = of[k] - fstar;
    std::cout << "[ measured ] step " << k << ": ISTA gap " << gi << ", FISTA gap " << gf << "\n";
    EXPECT_GT(gi, 2.0 * gf) << "step " << k;
  }
  // ISTA is a descent method.
  for (size_t t = 1; t < oi.size(); ++t) EXPECT_LE(oi[t], oi[t - 1] + 1e-6 * std::abs(oi[t - 1]));
}

// Eigenvalues of a symmetric matrix by cyclic Jacobi rotations (double).
std::vector<double> jacobi_eigenvalues(std::vector<double> M, int d) {
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0.0;
    for (int p = 0; p < d; ++p)
      for (int q = p + 1; q < d; ++q) off += M[p * d + q] * M[p * d + q];
    if (off < 1e-30) break;
    for (int p = 0; p < d; ++p)
      for (int q = p + 1; q < d; ++q) {
        const double apq = M[p * d + q];
        if (apq == 0.0) continue;
        const double theta = (M[q * d + q] - M[p * d + p]) / (2.0 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1.0));
        const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
        for (int k = 0; k < d; ++k) {  // columns p, q
          const double mkp = M[k * d + p], mkq = M[k * d + q];
          M[k * d + p] = c * mkp - s * mkq;
          M[k * d + q] = s * mkp + c * mkq;
        }
        for (int k = 0; k < d; ++k) {  // rows p, q
          const double mpk = M[p * d + k], mqk = M[q * d + k];
          M[p * d + k] = c * mpk - s * mqk;
          M[q * d + k] = s * mpk + c * mqk;
        }
      }
  }
  std::vector<double> ev(d);
  for (int i = 0; i < d; ++i) ev[i] = M[i * d + i];
  return ev;
}

double largest_eig_AtA(const float* A, int d) {
  std::vector<double> M(d * d, 0.0);
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j)
      for (int r = 0; r < d; ++r) M[i * d + j] += double(A[r * d + i]) * double(A[r * d + j]);
  const auto ev = jacobi_eigenvalues(M, d);
  return *std::max_element(ev.begin(), ev.end());
}

TEST(Baselines, LipschitzConstantsMatchJacobi) {
  double worst = 0.0;
  for (int d : {1, 2, 3, 5, 8, 10, 12}) {
    for (double sigma : {0.1, 1.0, 100.0}) {
      TaskSpec s;
      s.family = Family::lasso;
      s.dim = d;
      s.instances = 16;
      s.sigma = sigma;
      s.seed = 100 + d;
      const auto task = sample_task<float>(s);
      const auto L = lipschitz_constants(task);
      ASSERT_EQ(L.size(), 16u);
      for (int64_t n = 0; n < 16; ++n) {
        const double want = largest_eig_AtA(task.A.data() + n * d * d, d);
        const double err = std::abs(L[n] - want) / want;
        worst = std::max(worst, err);
        EXPECT_LE(err, 1e-10) << "d " << d << " sigma " << sigma << " instance " << n;
      }
    }
  }
  std::cout << "[ measured ] lipschitz_constants vs Jacobi: max relative error " << worst << "\n";
}

TEST(Baselines, LipschitzConstantsOfDegenerateMatrices) {
  Task<float> t;
  t.spec.family = Family::lasso;
  t.spec.dim = 3;
  t.spec.instances = 4;
  t.A = {3, 0, 0, 0, 3, 0, 0, 0, 3,      // 3 I: a triple top eigenvalue 9
         2, 0, 0, 0, -2, 0, 0, 0, 1,     // a double top eigenvalue 4
         0, 0, 0, 0, 0, 0, 0, 0, 0,      // zero
         0, 0, 0, 0, 0, 0, 0, 0, 1e-3f};  // rank one, tiny
  t.b.assign(12, 0.0f);
  t.x0.assign(12, 0.0f);
  const auto L = lipschitz_constants(t);
  EXPECT_NEAR(L[0], 9.0, 1e-12);
  EXPECT_NEAR(L[1], 4.0, 1e-12);
  EXPECT_EQ(L[2], 0.0);
  EXPECT_NEAR(L[3], double(1e-3f) * double(1e-3f), 1e-20);
  // ISTA on the zero matrix goes to the minimiser of lam ||x||_1, x = 0, without NaN.
  t.x0 = {1, -1, 0.5f, 1, -1, 0.5f, 1, -1, 0.5f, 1, -1, 0.5f};
  BaselineSpec b;
  b.kind = BaselineKind::fista;
  std::vector<float> x;
  for (double v : run_baseline_cpu(b, t, 5, &x)) EXPECT_TRUE(std::isfinite(v));
  for (int j = 6; j < 9; ++j) EXPECT_EQ(x[j], 0.0f);
}

TEST(Baselines, ProximalMethodsAreForLassoOnly) {
  for (Family f : {Family::quadratic, Family::rosenbrock, Family::rastrigin}) {
    TaskSpec s;
    s.family = f;
    s.dim = f == Family::rosenbrock ? 2 : 4;
    s.instances = 2;
    const auto task = sample_task<float>(s);
    for (BaselineKind k : {BaselineKind::ista, BaselineKind::fista}) {
      BaselineSpec b;
      b.kind = k;
      try {
        run_baseline_cpu(b, task, 3);
        ADD_FAILURE() << baseline_name(k) << " on " << family_name(f) << " did not throw";
      } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find(family_name(f)), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(baseline_name(k)), std::string::npos) << e.what();
      }
    }
  }
  TaskSpec s;
  s.family = Family::rosenbrock;
  s.dim = 2;
  EXPECT_THROW(lipschitz_constants(sample_task<float>(s)), std::invalid_argument);
  BaselineSpec b;
  EXPECT_THROW(run_baseline_cpu(b, sample_task<float>(s), -1), std::invalid_argument);
}

TEST(Baselines, NamesRoundTrip) {
  for (BaselineKind k : {BaselineKind::sgd, BaselineKind::momentum, BaselineKind::adam,
                         BaselineKind::rmsprop, BaselineKind::ista, BaselineKind::fista}) {
    BaselineKind got = BaselineKind::sgd;
    ASSERT_TRUE(parse_baseline(baseline_name(k), &got)) << baseline_name(k);
    EXPECT_EQ(got, k);
    EXPECT_NE(std::string(kBaselineNames).find(baseline_name(k)), std::string::npos);
  }
  BaselineKind got;
  EXPECT_FALSE(parse_baseline("Adam", &got));
  EXPECT_FALSE(parse_baseline("lbfgs", &got));
  EXPECT_FALSE(parse_baseline("", &got));
}

TEST(Baselines, ZeroStepsAndDeterminismAcrossThreadCounts) {
  TaskSpec s;
  s.family = Family::lasso;
  s.instances = 300;
  s.seed = 5;
  const auto task = sample_task<float>(s);
  BaselineSpec b;
  b.kind = BaselineKind::adam;
  const auto zero = run_baseline_cpu(b, task, 0);
  ASSERT_EQ(zero.size(), 1u);
  EXPECT_DOUBLE_EQ(zero[0], mean_objective(view_of(task), task.x0.data()));
  for (BaselineKind k : {BaselineKind::adam, BaselineKind::fista}) {
    b.kind = k;
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    std::vector<float> x1, x2;
    const auto one = run_baseline_cpu(b, task, 50, &x1);
    omp_set_num_threads(std::max(2, saved));
    const auto many = run_baseline_cpu(b, task, 50, &x2);
    omp_set_num_threads(saved);
    EXPECT_EQ(one, many) << baseline_name(k);  // bit-identical
    EXPECT_EQ(x1, x2) << baseline_name(k);
  }
}

TEST(Baselines, DivergenceIsReportedNotHidden) {
  TaskSpec s;
  s.family = Family::rosenbrock;
  s.dim = 2;
  s.instances = 8;
  s.x0_scale = 1.0;
  const auto task = sample_task<float>(s);
  BaselineSpec b;
  b.kind = BaselineKind::sgd;
  b.lr = 1.0;  // far beyond 2/L
  const auto objs = run_baseline_cpu(b, task, 30);
  ASSERT_EQ(objs.size(), 31u);
  EXPECT_FALSE(std::isfinite(objs.back()));
}

}  // namespace
}  // namespace ml2o
