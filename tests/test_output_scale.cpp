// optimizer.output_scale: RNNprop's update is output_scale x tanh(.). A scale four times the default
// (a power of two, so exact in binary) must make the one-step update, and the adjoint it feeds
// back, exactly four times larger, and reach every place the update is computed.
#include <gtest/gtest.h>

#include <random>

#include "ml2o/cell.hpp"
#include "ml2o/config.hpp"
#include "ml2o/lopt.hpp"
#include "ml2o/optimizee.hpp"
#include "ml2o/unroll.hpp"

namespace ml2o {
namespace {

template <class S> void expect_one_step_scales_exactly() {
  OptimizerHyper base;  // rnnprop, default scale
  ASSERT_EQ(base.output_scale, 0.01);
  OptimizerHyper big = base;
  big.output_scale = 4 * base.output_scale;
  const LearnedOptimizer opt = init_optimizer(base, 11);
  std::vector<S> w(opt.weights.begin(), opt.weights.end());
  std::mt19937_64 rng(5);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (S& v : w) v += S(0.1 * normal(rng));
  for (double g : {0.3, -2.0, 1e-4}) {
    CoordState<S> st_a{}, st_b{};
    st_a.m = st_b.m = S(0.2);
    st_a.v = st_b.v = S(0.5);
    StepTape<S> tp_a, tp_b;
    S da = S(0), db = S(0);
    for (int64_t k = 1; k <= 3; ++k) {  // a few steps, so the recurrent state is not zero
      da = optimizer_step_forward(base, w.data(), S(g), k, st_a, tp_a);
      db = optimizer_step_forward(big, w.data(), S(g), k, st_b, tp_b);
    }
    ASSERT_NE(da, S(0));
    EXPECT_EQ(db, S(4) * da) << "g = " << g;
    EXPECT_EQ(tp_a.out, tp_b.out);  // the network itself is unchanged
    CoordAdjoint<S> adj_a{}, adj_b{};
    StepGrads<S> sg_a, sg_b;
    optimizer_step_backward(base, w.data(), tp_a, S(1), false, adj_a, sg_a);
    optimizer_step_backward(big, w.data(), tp_b, S(1), false, adj_b, sg_b);
    EXPECT_EQ(sg_b.dout, S(4) * sg_a.dout);
  }
}

TEST(OutputScale, OneStepUpdateScalesByExactlyTheFactor) {
  expect_one_step_scales_exactly<float>();
  expect_one_step_scales_exactly<double>();
}

TEST(OutputScale, TheCpuUnrollUsesIt) {
  OptimizerHyper base, big;
  big.output_scale = 4 * base.output_scale;
  const std::vector<double> w = [&] {
    const auto o = init_optimizer(base, 3);
    return std::vector<double>(o.weights.begin(), o.weights.end());
  }();
  TaskSpec spec;
  spec.family = Family::lasso;
  spec.dim = 4;
  spec.instances = 3;
  spec.seed = 9;
  const Task<double> task = cast_task<double>(sample_task<float>(spec));
  Trajectory<double> a = start_trajectory(task.x0), b = a;
  unroll_cpu(base, w, view_of(task), a, 1, GradMode::none);
  unroll_cpu(big, w, view_of(task), b, 1, GradMode::none);
  for (size_t i = 0; i < task.x0.size(); ++i)
    EXPECT_NEAR(b.x[i] - task.x0[i], 4 * (a.x[i] - task.x0[i]), 1e-15) << i;
}

TEST(OutputScale, ConfigKeyDefaultsToThePapersValue) {
  const std::string base =
      "[eval.task]\nfamily = \"lasso\"\n[arms]\ndirect_transfer = false\ntransfer_learning = false\n"
      "ml2o = false\n";
  EXPECT_EQ(parse_config(base, "a.toml").optimizer.output_scale, 0.01);
  EXPECT_EQ(parse_config("[optimizer]\noutput_scale = 0.1\n" + base, "b.toml").optimizer.output_scale, 0.1);
  EXPECT_THROW(parse_config("[optimizer]\noutput_scale = 0\n" + base, "c.toml"), ConfigError);
}

}  // namespace
}  // namespace ml2o
