// M-L2O meta-gradients: the reference vectors (first and second order) and finite differences of
// the whole inner-step-then-query objective.
#include <gtest/gtest.h>

#include <cmath>

#include "ml2o/meta.hpp"
#include "ml2o/rng.hpp"
#include "vectors.hpp"

namespace ml2o {
namespace {

using testing::load_vector_case;
using testing::max_rel_error;

auto cpu_unroll(const OptimizerHyper& hyper, const TaskView<double>& view) {
  return [&hyper, view](const std::vector<double>& w, Trajectory<double>& tr, int T, GradMode mode) {
    return unroll_cpu(hyper, w, view, tr, T, mode);
  };
}

class Ml2oVectors : public ::testing::TestWithParam<std::string> {};

TEST_P(Ml2oVectors, FirstAndSecondOrderMatchAutodiff) {
  const auto c = load_vector_case(GetParam());
  Ml2oConfig mc;
  mc.inner_lr = c.j.at("inner_lr").get<double>();
  mc.inner_steps = c.j.at("inner_steps").get<int>();
  const auto& e = c.j.at("expected");
  for (MetaGradient order : {MetaGradient::first_order, MetaGradient::second_order}) {
    mc.meta_gradient = order;
    auto traj = c.start;
    auto hvp = [&](const std::vector<double>& w, const Trajectory<double>& tr, int T,
                   const std::vector<double>& v) {
      return hvp_dual(c.hyper, w, c.task, tr, T, v, GradMode::gradient_constant);
    };
    const auto r = ml2o_task_gradient(c.w, traj, c.T, mc, GradMode::gradient_constant,
                                      cpu_unroll(c.hyper, view_of(c.task)), hvp);
    const double ws = e.at("support_meta_loss").get<double>(), wq = e.at("query_meta_loss").get<double>();
    EXPECT_NEAR(r.support_loss, ws, 1e-9 * std::abs(ws));
    EXPECT_NEAR(r.query_loss, wq, 1e-9 * std::abs(wq));
    const char* key = order == MetaGradient::first_order ? "first_order" : "second_order";
    double worst = 0;
    const auto want = c.flat_grad(e.at(key));
    for (const TensorInfo& t : tensor_table(c.hyper.arch)) {
      std::vector<double> got(r.meta_grad.begin() + t.offset, r.meta_grad.begin() + t.offset + t.size());
      std::vector<double> ref(want.begin() + t.offset, want.begin() + t.offset + t.size());
      EXPECT_LE(max_rel_error(got, ref), 1e-9) << key << " tensor " << t.name;
      worst = std::max(worst, max_rel_error(got, ref));
    }
    std::cout << GetParam() << " " << key << ": worst tensor meta-gradient error " << worst << "\n";
    // The support segment is committed: the trajectory advanced T steps.
    EXPECT_EQ(traj.k, c.k0 + c.T);
  }
  // The two orders differ measurably (so the comparison above can tell them apart).
  const auto fo = c.flat_grad(e.at("first_order")), so = c.flat_grad(e.at("second_order"));
  EXPECT_GT(max_rel_error(fo, so), 1e-9);
}

INSTANTIATE_TEST_SUITE_P(ReferenceCases, Ml2oVectors,
                         ::testing::Values("ml2o_lasso_N2_d4_T5", "ml2o_lasso_N2_d4_T5_alpha0.1"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (ch == '.') ch = '_';
                           return s;
                         });

// J(w) = L_query(adapted(w)) from the support's end state computed at the base weights (held
// constant: truncation). Uses true gradients (second derivatives), so plain finite differences of
// J are the exact reference for the second-order meta-gradient.
struct FdCase {
  Arch arch;
  Family family;
  int inner_steps;
  double inner_lr;
};

class Ml2oFiniteDifferences : public ::testing::TestWithParam<FdCase> {};

TEST_P(Ml2oFiniteDifferences, SecondOrderMatchesCentralDifferences) {
  const FdCase fc = GetParam();
  OptimizerHyper hyper;
  hyper.arch = fc.arch;
  TaskSpec spec;
  spec.family = fc.family;
  spec.dim = fc.family == Family::rosenbrock ? 2 : 3;
  spec.instances = 2;
  spec.sigma = 1.0;
  spec.x0_scale = fc.family == Family::rosenbrock ? 1.0 : 0.5;
  spec.seed = 11;
  const Task<double> task = sample_task<double>(spec);
  const auto view = view_of(task);
  const auto opt = init_optimizer(hyper, 5);
  const std::vector<double> w(opt.weights.begin(), opt.weights.end());
  const int T = 4;
  const GradMode mode = GradMode::second_derivatives;
  Ml2oConfig mc{fc.inner_steps, fc.inner_lr, MetaGradient::second_order};

  const Trajectory<double> start = start_trajectory(task.x0);
  auto unroll = cpu_unroll(hyper, view);
  auto hvp = [&](const std::vector<double>& wa, const Trajectory<double>& tr, int n, const std::vector<double>& v) {
    return hvp_dual(hyper, wa, task, tr, n, v, mode);
  };
  Trajectory<double> committed = start;
  const auto r = ml2o_task_gradient(w, committed, T, mc, mode, unroll, hvp);

  auto J = [&](const std::vector<double>& wp) {
    std::vector<double> a = wp;
    for (int i = 0; i < fc.inner_steps; ++i) {
      Trajectory<double> seg = start;
      const auto s = unroll_cpu(hyper, a, view, seg, T, mode);
      for (size_t p = 0; p < a.size(); ++p) a[p] -= fc.inner_lr * s.grad[p];
    }
    Trajectory<double> q = committed;
    return unroll_cpu(hyper, a, view, q, T, GradMode::none).meta_loss;
  };

  // Random directions and single coordinates of every tensor.
  std::vector<std::vector<double>> dirs;
  uint64_t counter = 0;
  for (int k = 0; k < 3; ++k) {
    std::vector<double> u(w.size());
    for (auto& x : u) x = normal01(99, Stream::minibatch, k, counter++);
    dirs.push_back(u);
  }
  for (const TensorInfo& t : tensor_table(hyper.arch)) {
    std::vector<double> u(w.size(), 0.0);
    u[t.offset + t.size() / 2] = 1.0;
    dirs.push_back(u);
  }
  double worst = 0;
  for (const auto& u : dirs) {
    // Central differences with one Richardson step (error O(h^4)).
    auto central = [&](double h) {
      std::vector<double> wp = w, wm = w;
      for (size_t p = 0; p < w.size(); ++p) {
        wp[p] += h * u[p];
        wm[p] -= h * u[p];
      }
      return (J(wp) - J(wm)) / (2 * h);
    };
    const double h = 1e-4;
    const double fd = (4 * central(h / 2) - central(h)) / 3;
    double norm = 0;
    for (double x : u) norm += x * x;
    double an = 0, scale = 0;
    for (size_t p = 0; p < w.size(); ++p) {
      an += r.meta_grad[p] * u[p];
      scale += r.meta_grad[p] * r.meta_grad[p];
    }
    const double err = std::abs(fd - an) / std::max(std::abs(an), 1e-3 * std::sqrt(scale * norm));
    worst = std::max(worst, err);
  }
  RecordProperty("max_relative_error", std::to_string(worst));
  std::cout << "second-order M-L2O vs finite differences: max relative error " << worst << "\n";
  EXPECT_LE(worst, 1e-6);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, Ml2oFiniteDifferences,
    ::testing::Values(FdCase{Arch::rnnprop, Family::lasso, 1, 0.1},
                      FdCase{Arch::rnnprop, Family::rosenbrock, 1, 0.05},
                      FdCase{Arch::rnnprop, Family::quadratic, 2, 0.1},
                      FdCase{Arch::dmlstm, Family::quadratic, 1, 0.1}),
    [](const auto& info) {
      return std::string(arch_name(info.param.arch)) + "_" + family_name(info.param.family) +
             "_inner" + std::to_string(info.param.inner_steps);
    });

}  // namespace
}  // namespace ml2o
