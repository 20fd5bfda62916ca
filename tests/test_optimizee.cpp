// Optimizee families: objective, gradient and Hessian-vector product against finite differences
// and closed forms, and the task sampler (determinism, counter-based draws, distributions).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>
#include <vector>

#include "ml2o/optimizee.hpp"

namespace ml2o {
namespace {

constexpr Family kFamilies[] = {Family::lasso, Family::quadratic, Family::rosenbrock,
                                Family::rastrigin};

TaskSpec spec_for(Family f, int64_t N, int d, uint64_t seed) {
  TaskSpec s;
  s.family = f;
  s.dim = f == Family::rosenbrock ? 2 : d;
  s.instances = N;
  s.seed = seed;
  s.lam = 0.1;  // large enough for the l1 term to matter in the checks
  if (f == Family::quadratic) s.b_lo = -1.0;
  if (f == Family::rosenbrock) s.x0_scale = 1.0;
  if (f == Family::rastrigin) s.x0_scale = 3.0;
  return s;
}

// A random point with every |x_j| >= 0.1 (away from LASSO's kink).
std::vector<double> random_point(int d, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> mag(0.1, 1.5);
  std::vector<double> x(d);
  for (double& v : x) v = (rng() & 1 ? 1.0 : -1.0) * mag(rng);
  return x;
}

TEST(Optimizee, GradientMatchesFiniteDifferences) {
  std::mt19937_64 rng(1);
  for (Family f : kFamilies) {
    const auto task = sample_task<double>(spec_for(f, 3, 5, 7));
    const auto view = view_of(task);
    const int d = view.dim;
    double worst = 0.0;
    for (int64_t n = 0; n < 3; ++n)
      for (int rep = 0; rep < 4; ++rep) {
        auto x = random_point(d, rng);
        std::vector<double> g(d), scratch(d);
        instance_gradient(view, n, x.data(), g.data(), scratch.data());
        double gmax = 1.0;
        for (double v : g) gmax = std::max(gmax, std::abs(v));
        for (int j = 0; j < d; ++j) {
          const double h = 1e-4, keep = x[j];
          auto f_at = [&](double off) {
            x[j] = keep + off;
            const double v = instance_objective(view, n, x.data());
            x[j] = keep;
            return v;
          };
          const double fd = (8 * (f_at(h) - f_at(-h)) - (f_at(2 * h) - f_at(-2 * h))) / (12 * h);
          worst = std::max(worst, std::abs(fd - g[j]) / gmax);
        }
      }
    EXPECT_LE(worst, 1e-9) << family_name(f);
  }
}

TEST(Optimizee, HessianVectorProductMatchesFiniteDifferences) {
  std::mt19937_64 rng(2);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (Family f : kFamilies) {
    const auto task = sample_task<double>(spec_for(f, 3, 5, 8));
    const auto view = view_of(task);
    const int d = view.dim;
    double worst = 0.0, asym = 0.0;
    for (int64_t n = 0; n < 3; ++n)
      for (int rep = 0; rep < 4; ++rep) {
        const auto x = random_point(d, rng);
        std::vector<double> v(d), u(d), hv(d), hu(d), scratch(d);
        for (int j = 0; j < d; ++j) {
          v[j] = normal(rng);
          u[j] = normal(rng);
        }
        instance_hvp(view, n, x.data(), v.data(), hv.data(), scratch.data());
        instance_hvp(view, n, x.data(), u.data(), hu.data(), scratch.data());
        // FD of the gradient along v (the step keeps every x_j on its side of 0).
        const double h = 1e-5;
        auto g_at = [&](double off) {
          std::vector<double> xs(x), g(d), s(d);
          for (int j = 0; j < d; ++j) xs[j] += off * v[j];
          instance_gradient(view, n, xs.data(), g.data(), s.data());
          return g;
        };
        const auto gp1 = g_at(h), gm1 = g_at(-h), gp2 = g_at(2 * h), gm2 = g_at(-2 * h);
        double scale = 1.0, uhv = 0.0, vhu = 0.0;
        for (int j = 0; j < d; ++j) scale = std::max(scale, std::abs(hv[j]));
        for (int j = 0; j < d; ++j) {
          const double fd = (8 * (gp1[j] - gm1[j]) - (gp2[j] - gm2[j])) / (12 * h);
          worst = std::max(worst, std::abs(fd - hv[j]) / scale);
          uhv += u[j] * hv[j];
          vhu += v[j] * hu[j];
        }
        asym = std::max(asym, std::abs(uhv - vhu) / std::max(1.0, std::abs(uhv)));
      }
    EXPECT_LE(worst, 1e-8) << family_name(f);
    EXPECT_LE(asym, 1e-12) << family_name(f) << ": the Hessian must be symmetric";
  }
}

TEST(Optimizee, ClosedForms) {
  // LASSO / Quadratic: f = 1/2 ||Ax - b||^2 (+ lam ||x||_1), gradient A^T(Ax - b) (+ lam sign x).
  Task<double> t;
  t.spec.family = Family::lasso;
  t.spec.dim = 2;
  t.spec.instances = 1;
  t.spec.lam = 0.5;
  t.A = {1, 2, 3, 4};
  t.b = {1, -1};
  const double x[2] = {0.5, -2.0};
  // Ax - b = (0.5 - 4 - 1, 1.5 - 8 + 1) = (-4.5, -5.5); f = (20.25 + 30.25) / 2 + 0.5 * 2.5.
  EXPECT_DOUBLE_EQ(instance_objective(view_of(t), 0, x), 25.25 + 1.25);
  double g[2], s[2];
  instance_gradient(view_of(t), 0, x, g, s);
  // A^T r = (1 * -4.5 + 3 * -5.5, 2 * -4.5 + 4 * -5.5) = (-21, -31); + 0.5 (1, -1).
  EXPECT_DOUBLE_EQ(g[0], -21.0 + 0.5);
  EXPECT_DOUBLE_EQ(g[1], -31.0 - 0.5);
  // The subgradient of |x| at 0 is 0 (docs/method.md section 1).
  const double zero[2] = {0.0, 0.0};
  instance_gradient(view_of(t), 0, zero, g, s);
  EXPECT_DOUBLE_EQ(g[0], -(1 * 1 + 3 * -1));  // A^T(-b)
  EXPECT_DOUBLE_EQ(g[1], -(2 * 1 + 4 * -1));
  EXPECT_DOUBLE_EQ(instance_objective(view_of(t), 0, zero), 1.0);
  t.spec.family = Family::quadratic;
  EXPECT_DOUBLE_EQ(instance_objective(view_of(t), 0, x), 25.25);
  double hv[2];
  const double v[2] = {1.0, 0.0};
  instance_hvp(view_of(t), 0, x, v, hv, s);  // A^T A e_1 = (10, 14)
  EXPECT_DOUBLE_EQ(hv[0], 10.0);
  EXPECT_DOUBLE_EQ(hv[1], 14.0);

  // Rosenbrock: minimum 0 at (1, 1); f(0, 0) = 1, gradient (-2, 0).
  Task<double> r;
  r.spec.family = Family::rosenbrock;
  r.spec.dim = 2;
  r.spec.instances = 1;
  const double one[2] = {1.0, 1.0};
  EXPECT_EQ(instance_objective(view_of(r), 0, one), 0.0);
  instance_gradient(view_of(r), 0, one, g, s);
  EXPECT_EQ(g[0], 0.0);
  EXPECT_EQ(g[1], 0.0);
  EXPECT_EQ(instance_objective(view_of(r), 0, zero), 1.0);
  instance_gradient(view_of(r), 0, zero, g, s);
  EXPECT_EQ(g[0], -2.0);
  EXPECT_EQ(g[1], 0.0);
  // Hessian at (1, 1): [[802, -400], [-400, 200]].
  instance_hvp(view_of(r), 0, one, v, hv, s);
  EXPECT_DOUBLE_EQ(hv[0], 802.0);
  EXPECT_DOUBLE_EQ(hv[1], -400.0);

  // Rastrigin: sum x^2 - alpha cos(2 pi x) + alpha d; 0 at the origin, alpha per task.
  Task<double> q;
  q.spec.family = Family::rastrigin;
  q.spec.dim = 2;
  q.spec.instances = 1;
  q.spec.alpha = 5.0;
  EXPECT_NEAR(instance_objective(view_of(q), 0, zero), 0.0, 1e-12);
  const double half[2] = {0.5, 0.25};  // 0.25 + 5 + 5  +  0.0625 - 0 + 5
  EXPECT_NEAR(instance_objective(view_of(q), 0, half), 0.25 + 10.0 + 0.0625 + 5.0, 1e-12);
  instance_hvp(view_of(q), 0, zero, v, hv, s);  // 2 + alpha 4 pi^2
  EXPECT_NEAR(hv[0], 2.0 + 5.0 * kTwoPi * kTwoPi, 1e-9);
  EXPECT_EQ(hv[1], 0.0);
}

TEST(Optimizee, BatchHelpersMatchPerInstanceCalls) {
  for (Family f : kFamilies) {
    const auto task = sample_task<float>(spec_for(f, 37, 6, 3));
    const auto view = view_of(task);
    const int d = view.dim;
    double total = 0.0;
    std::vector<float> g(task.x0.size()), gi(d), s(d);
    for (int64_t n = 0; n < 37; ++n) total += instance_objective(view, n, task.x0.data() + n * d);
    EXPECT_EQ(mean_objective(view, task.x0.data()), total / 37.0) << family_name(f);
    batch_gradient(view, task.x0.data(), g.data());
    for (int64_t n = 0; n < 37; ++n) {
      instance_gradient(view, n, task.x0.data() + n * d, gi.data(), s.data());
      for (int j = 0; j < d; ++j) ASSERT_EQ(g[n * d + j], gi[j]) << family_name(f);
    }
  }
}

TEST(Optimizee, SamplingIsDeterministicPerSeedAndDiffersAcrossSeeds) {
  for (Family f : kFamilies) {
    const auto a = sample_task<float>(spec_for(f, 16, 10, 42));
    const auto b = sample_task<float>(spec_for(f, 16, 10, 42));
    const auto c = sample_task<float>(spec_for(f, 16, 10, 43));
    EXPECT_EQ(a.A, b.A);
    EXPECT_EQ(a.b, b.b);
    EXPECT_EQ(a.x0, b.x0);
    EXPECT_NE(a.x0, c.x0) << family_name(f);
    const bool matrix = f == Family::lasso || f == Family::quadratic;
    EXPECT_EQ(a.A.empty(), !matrix);
    if (matrix) {
      EXPECT_NE(a.A, c.A);
      EXPECT_NE(a.b, c.b);
      // Instances differ from each other.
      EXPECT_FALSE(std::equal(a.A.begin(), a.A.begin() + 100, a.A.begin() + 100));
    }
    // The double task holds the float draws exactly (both backends use the float values).
    const auto dbl = sample_task<double>(spec_for(f, 16, 10, 42));
    for (size_t i = 0; i < a.x0.size(); ++i) ASSERT_EQ(dbl.x0[i], double(a.x0[i]));
    for (size_t i = 0; i < a.A.size(); ++i) ASSERT_EQ(dbl.A[i], double(a.A[i]));
  }
}

TEST(Optimizee, AnInstanceDoesNotDependOnTheBatchSize) {
  for (Family f : kFamilies) {
    const auto small = sample_task<float>(spec_for(f, 5, 10, 9));
    const auto large = sample_task<float>(spec_for(f, 50, 10, 9));
    const int d = small.spec.dim;
    for (int64_t n = 0; n < 5; ++n) {
      for (int j = 0; j < d; ++j) ASSERT_EQ(small.x0[n * d + j], large.x0[n * d + j]) << family_name(f);
      if (!small.A.empty()) {
        for (int e = 0; e < d * d; ++e) ASSERT_EQ(small.A[n * d * d + e], large.A[n * d * d + e]);
        for (int j = 0; j < d; ++j) ASSERT_EQ(small.b[n * d + j], large.b[n * d + j]);
      }
    }
  }
}

struct Moments {
  double mean = 0, std = 0, within_one_std = 0;
  size_t n = 0;
};
Moments moments(const std::vector<float>& v) {
  Moments m;
  m.n = v.size();
  for (float x : v) m.mean += x;
  m.mean /= double(m.n);
  for (float x : v) m.std += (x - m.mean) * (x - m.mean);
  m.std = std::sqrt(m.std / double(m.n - 1));
  for (float x : v) m.within_one_std += std::abs(x - m.mean) < m.std;
  m.within_one_std /= double(m.n);
  return m;
}

// Mean and std of a normal sample within 4.5 standard errors; the N(0,1) mass within one std
// (0.6827) within 4.5 standard errors of a proportion.
void expect_normal(const std::vector<float>& v, double sigma, const char* what) {
  const Moments m = moments(v);
  const double n = double(m.n);
  EXPECT_NEAR(m.mean, 0.0, 4.5 * sigma / std::sqrt(n)) << what;
  EXPECT_NEAR(m.std, sigma, 4.5 * sigma / std::sqrt(2.0 * n)) << what;
  EXPECT_NEAR(m.within_one_std, 0.6827, 4.5 * std::sqrt(0.6827 * 0.3173 / n)) << what;
}

TEST(Optimizee, DrawnDistributionsAreRight) {
  for (double sigma : {0.1, 1.0, 100.0}) {
    TaskSpec s = spec_for(Family::lasso, 64, 10, 123);
    s.sigma = sigma;
    s.x0_scale = 0.01;
    const auto t = sample_task<float>(s);
    ASSERT_EQ(t.A.size(), 6400u);
    expect_normal(t.A, sigma, "A");
    expect_normal(t.x0, 0.01, "lasso x0");
    // b ~ U(0, 1): in range, mean 1/2 and std 1/sqrt(12) within 4.5 standard errors.
    const Moments mb = moments(t.b);
    for (float v : t.b) ASSERT_TRUE(v >= 0.0f && v <= 1.0f);
    EXPECT_NEAR(mb.mean, 0.5, 4.5 * std::sqrt(1.0 / 12.0 / 640.0));
    EXPECT_NEAR(mb.std, std::sqrt(1.0 / 12.0), 0.03);
  }
  // Quadratic: b ~ U(-1, 1).
  {
    const auto t = sample_task<float>(spec_for(Family::quadratic, 64, 10, 5));
    const Moments mb = moments(t.b);
    for (float v : t.b) ASSERT_TRUE(v >= -1.0f && v <= 1.0f);
    EXPECT_NEAR(mb.mean, 0.0, 4.5 * std::sqrt(1.0 / 3.0 / 640.0));
    EXPECT_LT(*std::min_element(t.b.begin(), t.b.end()), -0.9f);
    EXPECT_GT(*std::max_element(t.b.begin(), t.b.end()), 0.9f);
  }
  // Rosenbrock: x0 ~ N(0, I) (x0_scale 1).
  expect_normal(sample_task<float>(spec_for(Family::rosenbrock, 2048, 2, 6)).x0, 1.0, "rosenbrock x0");
  // Rastrigin: x0 ~ U(-3, 3) (x0_scale 3): inside, mean 0, variance 3.
  {
    const auto t = sample_task<float>(spec_for(Family::rastrigin, 64, 10, 7));
    for (float v : t.x0) ASSERT_TRUE(v > -3.0f && v < 3.0f);
    const Moments m = moments(t.x0);
    EXPECT_NEAR(m.mean, 0.0, 4.5 * std::sqrt(3.0 / 640.0));
    EXPECT_NEAR(m.std * m.std, 3.0, 4.5 * std::sqrt(7.2 / 640.0));
    EXPECT_TRUE(t.A.empty() && t.b.empty());
  }
}

TEST(Optimizee, NamesAndArgumentChecks) {
  for (Family f : kFamilies) {
    Family got = Family::lasso;
    ASSERT_TRUE(parse_family(family_name(f), &got));
    EXPECT_EQ(got, f);
  }
  Family got;
  EXPECT_FALSE(parse_family("Lasso", &got));
  EXPECT_FALSE(parse_family("", &got));
  TaskSpec s;
  s.family = Family::rosenbrock;
  s.dim = 3;
  EXPECT_THROW(sample_task<float>(s), std::invalid_argument);
}

}  // namespace
}  // namespace ml2o
