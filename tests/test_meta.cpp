// Trainer, adaptation and checkpoint state: the pieces under `ml2o run`, on tiny problems.
#include <gtest/gtest.h>

#include <cmath>

#include "../host/cpu/fast_unroll.hpp"
#include "ml2o/io.hpp"
#include "ml2o/meta.hpp"
#include "ml2o/protocol.hpp"

namespace ml2o {
namespace {

struct TinyConfig {
  OptimizerHyper optimizer;
  TrainConfig train;
  Ml2oConfig ml2o;
  AdaptConfig adapt;
  EvalConfig eval;
};

TinyConfig tiny_config() {
  TinyConfig cfg;
  TaskSpec t;
  t.family = Family::lasso;
  t.dim = 3;
  t.instances = 4;
  t.sigma = 1.0;
  t.seed = 3;
  cfg.train.tasks = {t};
  cfg.train.curriculum = {20, 40, 60};
  cfg.train.max_epochs = 6;
  cfg.train.eval_every = 1;
  cfg.train.eval_batches = 1;
  cfg.train.patience = 2;
  cfg.adapt.trajectory = 40;
  cfg.eval.task = t;
  return cfg;
}

TEST(Adam, MatchesTheClosedFormFirstStep) {
  std::vector<float> w = {1.0f, -2.0f};
  AdamState st;
  adam_update(w, {0.5f, -4.0f}, st, AdamHyper{0.1, 0.9, 0.999, 1e-8});
  // After one step the bias-corrected update is lr * g / (|g| + eps) = lr * sign(g).
  EXPECT_NEAR(w[0], 0.9f, 1e-6);
  EXPECT_NEAR(w[1], -1.9f, 1e-6);
  EXPECT_EQ(st.t, 1);
}

TEST(Trainer, CheckpointRoundTripIsExact) {
  auto cfg = tiny_config();
  auto backend = make_cpu_backend();
  TrainerState st = make_trainer(Method::ml2o, cfg.optimizer, 1);
  int steps = 0;
  TrainHooks hooks;
  hooks.after_step = [&](const TrainerState&) {  // stop mid-training
    return ++steps < 4 ? StepAction::go_on : StepAction::save_and_stop;
  };
  EXPECT_FALSE(train(cfg.train, cfg.ml2o, *backend, st, hooks));
  ASSERT_FALSE(st.trajs.empty());
  const std::string bytes = trainer_to_bytes(st, 42);
  const CheckpointExpect expect{42, Method::ml2o, cfg.optimizer, &cfg.train};
  const TrainerState back = trainer_from_bytes(bytes, "mem", expect);
  EXPECT_EQ(trainer_to_bytes(back, 42), bytes);
  EXPECT_EQ(back.opt.weights, st.opt.weights);
  EXPECT_EQ(back.unroll_in_epoch, st.unroll_in_epoch);
  // Another config's hash, a flipped byte, a truncation: clear errors.
  EXPECT_THROW(trainer_from_bytes(bytes, "mem", CheckpointExpect{43, Method::ml2o, cfg.optimizer, &cfg.train}),
               FormatError);
  std::string bad = bytes;
  bad[bad.size() / 2] ^= 1;
  try {
    trainer_from_bytes(bad, "ck.ckpt", expect);
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("ck.ckpt: checksum mismatch"), std::string::npos) << e.what();
  }
  EXPECT_THROW(trainer_from_bytes(bytes.substr(0, bytes.size() - 9), "mem", expect), FormatError);
}

// The trainer's batched M-L2O meta-step (backend vectors) against the host reference template
// ml2o_task_gradient per task, averaged and applied with adam_update: bit-identical on the CPU.
TEST(Trainer, Ml2oStepEqualsTheReferenceTemplate) {
  for (MetaGradient order : {MetaGradient::first_order, MetaGradient::second_order}) {
    auto cfg = tiny_config();
    TaskSpec t2 = cfg.train.tasks[0];
    t2.sigma = 0.5;
    t2.seed = 4;
    cfg.train.tasks.push_back(t2);
    cfg.ml2o = Ml2oConfig{2, 0.01, order};
    auto backend = make_cpu_backend();
    TrainerState st = make_trainer(Method::ml2o, cfg.optimizer, 1);
    st.has_best = true;  // no stage-0 evaluation: the first thing done is a meta-step
    st.best_weights = st.opt.weights;
    const std::vector<float> w0 = st.opt.weights;
    TrainHooks hooks;
    hooks.after_step = [](const TrainerState&) { return StepAction::save_and_stop; };
    ASSERT_FALSE(train(cfg.train, cfg.ml2o, *backend, st, hooks));

    std::vector<float> grad(w0.size(), 0.0f);
    const GradMode mode = cfg.train.grad_mode;
    for (size_t i = 0; i < cfg.train.tasks.size(); ++i) {
      const Task<float> task = sample_task<float>(training_batch_spec(cfg.train.tasks[i], 0, i, 0));
      Trajectory<float> traj = start_trajectory(task.x0);
      // the CPU backend's unroll (its fast path; tests/test_cpu_fast.cpp checks it against unroll_cpu)
      cpu_fast::Workspace ws;
      auto unroll_fn = [&](const std::vector<float>& w, Trajectory<float>& tr, int n, GradMode m) {
        return cpu_fast::unroll(cfg.optimizer, w, view_of(task), tr, n, m, ws);
      };
      auto hvp_fn = [&](const std::vector<float>& w, const Trajectory<float>& tr, int n,
                        const std::vector<float>& v) {
        return hvp_dual(cfg.optimizer, w, task, tr, n, v, mode);
      };
      const auto r = ml2o_task_gradient(w0, traj, cfg.train.unroll, cfg.ml2o, mode, unroll_fn, hvp_fn);
      for (size_t p = 0; p < grad.size(); ++p) grad[p] += r.meta_grad[p] / float(cfg.train.tasks.size());
      ASSERT_EQ(st.trajs[i].x, traj.x) << "task " << i;  // the support segment's end is committed
    }
    std::vector<float> want = w0;
    AdamState adam;
    adam_update(want, grad, adam, AdamHyper{cfg.train.lr, cfg.train.beta1, cfg.train.beta2, cfg.train.eps});
    EXPECT_EQ(st.opt.weights, want) << meta_gradient_name(order);
    EXPECT_EQ(st.adam.m, adam.m);
  }
}

TEST(Trainer, StoppedAndContinuedEqualsUninterrupted) {
  auto cfg = tiny_config();
  auto backend = make_cpu_backend();
  TrainerState full = make_trainer(Method::l2o, cfg.optimizer, 1);
  ASSERT_TRUE(train(cfg.train, cfg.ml2o, *backend, full, {}));
  for (int stop_after : {1, 3, 7}) {
    TrainerState st = make_trainer(Method::l2o, cfg.optimizer, 1);
    int n = 0;
    TrainHooks hooks;
    hooks.after_step = [&](const TrainerState&) {
      return ++n < stop_after ? StepAction::go_on : StepAction::save_and_stop;
    };
    ASSERT_FALSE(train(cfg.train, cfg.ml2o, *backend, st, hooks));
    TrainerState resumed = trainer_from_bytes(trainer_to_bytes(st, 1), "mem",
                                              CheckpointExpect{1, Method::l2o, cfg.optimizer, &cfg.train});
    ASSERT_TRUE(train(cfg.train, cfg.ml2o, *backend, resumed, {}));
    EXPECT_EQ(resumed.opt.weights, full.opt.weights) << "stopped after " << stop_after;
    EXPECT_EQ(resumed.eval_history, full.eval_history);
  }
}

TEST(Trainer, CurriculumEvaluatesAndRestoresTheBestWeights) {
  auto cfg = tiny_config();
  auto backend = make_cpu_backend();
  TrainerState st = make_trainer(Method::l2o, cfg.optimizer, 1);
  ASSERT_TRUE(train(cfg.train, cfg.ml2o, *backend, st, {}));
  EXPECT_TRUE(st.finished);
  EXPECT_LE(st.epoch, cfg.train.max_epochs);
  // One baseline evaluation per stage entered plus one per epoch (eval_every = 1).
  EXPECT_EQ(st.eval_history.size(), size_t(st.epoch + st.stage + 1));
  EXPECT_EQ(st.opt.weights, st.best_weights);
  EXPECT_EQ(st.loss_history.size(), size_t(st.epoch));
  for (double l : st.loss_history) EXPECT_TRUE(std::isfinite(l));
}

TEST(Trainer, NonFiniteStepsAreSkippedCountedAndStopTheRun) {
  auto cfg = tiny_config();
  cfg.train.tasks[0].sigma = 1e30;  // objectives overflow float32: every step is non-finite
  cfg.train.max_skipped = 3;
  cfg.train.eval_every = 100;  // no early stop before the skips accumulate
  auto backend = make_cpu_backend();
  TrainerState st = make_trainer(Method::l2o, cfg.optimizer, 1);
  const auto w0 = st.opt.weights;
  st.has_best = true;  // skip the stage baseline so the first thing done is a meta-step
  st.best_weights = w0;
  try {
    train(cfg.train, cfg.ml2o, *backend, st, {});
    FAIL() << "expected DivergenceError";
  } catch (const DivergenceError& e) {
    EXPECT_NE(std::string(e.what()).find("consecutive"), std::string::npos);
  }
  EXPECT_EQ(st.skipped_steps, 4);
  EXPECT_EQ(st.opt.weights, w0);  // never overwritten with non-finite values
  EXPECT_TRUE(all_finite(st.opt.weights));
}

TEST(Adapt, ZeroStepsKeepTheWeightsAndKStepsChangeThem) {
  auto cfg = tiny_config();
  auto backend = make_cpu_backend();
  const auto opt = init_optimizer(cfg.optimizer, 2);
  const auto task = backend->upload(sample_task<float>(cfg.eval.task));
  const AdaptPlan plan{AdamHyper{}, cfg.adapt.unroll, cfg.adapt.trajectory, GradMode::gradient_constant};
  EXPECT_EQ(adapt(*backend, plan, opt, {task.get()}, 0)[0].opt.weights, opt.weights);
  const auto a = adapt(*backend, plan, opt, {task.get()}, 5)[0];
  EXPECT_NE(a.opt.weights, opt.weights);
  EXPECT_EQ(a.skipped, 0);
  // Deterministic, and each task of a batch adapts as it would alone.
  const auto other = backend->upload(sample_task<float>(seed_offset_spec(cfg.eval.task, 1)));
  const auto both = adapt(*backend, plan, opt, {other.get(), task.get()}, 5);
  EXPECT_EQ(both[1].opt.weights, a.opt.weights);
  EXPECT_NE(both[0].opt.weights, a.opt.weights);
}

TEST(Evaluate, ReturnsStepsPlusOneObjectivesStartingAtX0) {
  auto cfg = tiny_config();
  auto backend = make_cpu_backend();
  const auto opt = init_optimizer(cfg.optimizer, 2);
  const auto task = sample_task<float>(cfg.eval.task);
  const auto held = backend->upload(task);
  const auto curves = evaluate(*backend, {opt}, {held.get(), held.get()}, 30);
  ASSERT_EQ(curves.size(), 2u);
  EXPECT_EQ(curves[0], curves[1]);
  const auto& curve = curves[0];
  ASSERT_EQ(curve.size(), 31u);
  EXPECT_NEAR(curve[0], mean_objective(view_of(task), task.x0.data()), 1e-6 * std::abs(curve[0]));
}

}  // namespace
}  // namespace ml2o
