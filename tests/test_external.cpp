// Learned steps, unrolls and adaptation on an external objective (the Python binding's engine
// side) against the engine's own: a LASSO instance given as a callback must give the engine's
// trajectory, meta-gradient and adapted weights bit for bit.
#include <cstdlib>
#include <gtest/gtest.h>

#include "ml2o/backend.hpp"
#include "ml2o/external.hpp"
#include "ml2o/unroll.hpp"

namespace ml2o {
namespace {

Task<float> one_lasso(int dim, uint64_t seed) {
  TaskSpec s;
  s.family = Family::lasso;
  s.dim = dim;
  s.instances = 1;  // one instance: the engine's mean objective is the instance's objective
  s.seed = seed;
  return sample_task<float>(s);
}

ExternalObjective objective_of(const Task<float>& task) {
  return [&task](const std::vector<float>& x, std::vector<float>& g) {
    const TaskView<float> v = view_of(task);
    std::vector<float> scratch(x.size());
    instance_gradient(v, 0, x.data(), g.data(), scratch.data());
    return instance_objective(v, 0, x.data());
  };
}

TEST(External, LearnedStepsFollowTheEnginesTrajectory) {
  const Task<float> task = one_lasso(6, 11);
  const LearnedOptimizer opt = init_optimizer(OptimizerHyper{}, 5);
  Trajectory<float> ref = start_trajectory(task.x0);
  const auto r = unroll_cpu(opt.hyper, opt.weights, view_of(task), ref, 15, GradMode::none);
  ExternalTrajectory ext = start_external(task.x0);
  const ExternalUnroll u = unroll_external(opt, ext, 15, objective_of(task), false);
  EXPECT_EQ(ext.x, ref.x);
  EXPECT_EQ(ext.k, ref.k);
  ASSERT_EQ(u.step_loss.size(), r.step_loss.size());
  for (size_t t = 0; t < u.step_loss.size(); ++t) EXPECT_EQ(u.step_loss[t], r.step_loss[t]) << t;
  EXPECT_TRUE(u.grad.empty());
}

TEST(External, MetaGradientEqualsTheEnginesWithTheGradientConstant) {
  for (Arch arch : {Arch::rnnprop, Arch::dmlstm}) {
    const Task<float> task = one_lasso(5, 3);
    OptimizerHyper h;
    h.arch = arch;
    const LearnedOptimizer opt = init_optimizer(h, 9);
    Trajectory<float> ref = start_trajectory(task.x0);
    const auto r = unroll_cpu(h, opt.weights, view_of(task), ref, 8, GradMode::gradient_constant);
    ExternalTrajectory ext = start_external(task.x0);
    const ExternalUnroll u = unroll_external(opt, ext, 8, objective_of(task), true);
    EXPECT_EQ(u.meta_loss, r.meta_loss) << arch_name(arch);
    EXPECT_EQ(u.grad, r.grad) << arch_name(arch);
  }
}

TEST(External, AdaptationEqualsTheEnginesAdapt) {
  const Task<float> task = one_lasso(4, 21);
  const LearnedOptimizer start = init_optimizer(OptimizerHyper{}, 2);
  const AdaptPlan plan{AdamHyper{1e-3, 0.9, 0.999, 1e-8}, 5, 10, GradMode::gradient_constant};
  // The external unroll is the scalar reference's arithmetic: compare with the backend on it.
  ::setenv("ML2O_CPU_UNROLL", "reference", 1);
  auto be = make_cpu_backend();
  ::unsetenv("ML2O_CPU_UNROLL");
  const auto bt = be->upload(task);
  const AdaptResult ref = adapt(*be, plan, start, {bt.get()}, 5).front();
  const AdaptResult got = adapt_external(plan, start, task.x0, objective_of(task), 5);
  EXPECT_EQ(got.opt.weights, ref.opt.weights);
  EXPECT_EQ(got.skipped, ref.skipped);
  EXPECT_NE(got.opt.weights, start.weights);
}

TEST(External, BadInputsAreRefusedWithTheirReason) {
  const Task<float> task = one_lasso(3, 1);
  LearnedOptimizer opt = init_optimizer(OptimizerHyper{}, 1);
  ExternalTrajectory ext = start_external(task.x0);
  AdaptPlan plan;
  plan.mode = GradMode::second_derivatives;
  EXPECT_THROW(adapt_external(plan, opt, task.x0, objective_of(task), 1), std::invalid_argument);
  const ExternalObjective short_grad = [](const std::vector<float>&, std::vector<float>& g) {
    g.resize(1);
    return 0.0f;
  };
  try {
    unroll_external(opt, ext, 2, short_grad, false);
    FAIL() << "a gradient of the wrong size was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("the gradient has 1 values for 3 parameters"), std::string::npos);
  }
  opt.weights.pop_back();
  EXPECT_THROW(unroll_external(opt, ext, 2, objective_of(task), false), std::invalid_argument);
}

}  // namespace
}  // namespace ml2o
