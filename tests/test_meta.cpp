// Trainer, adaptation and checkpoint state: the pieces under `ml2o run`, on tiny problems.
#include <gtest/gtest.h>

#include <cmath>

#include "ml2o/meta.hpp"

namespace ml2o {
namespace {

Config tiny_config() {
  Config cfg;
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
  hooks.after_step = [&](const TrainerState&) { return ++steps < 4; };  // stop mid-training
  EXPECT_FALSE(train(cfg, *backend, st, hooks));
  ASSERT_FALSE(st.trajs.empty());
  const std::string bytes = trainer_to_bytes(st, 42);
  const TrainerState back = trainer_from_bytes(bytes, "mem", 42);
  EXPECT_EQ(trainer_to_bytes(back, 42), bytes);
  EXPECT_EQ(back.opt.weights, st.opt.weights);
  EXPECT_EQ(back.unroll_in_epoch, st.unroll_in_epoch);
  // Another config's hash, a flipped byte, a truncation: clear errors.
  EXPECT_THROW(trainer_from_bytes(bytes, "mem", 43), FormatError);
  std::string bad = bytes;
  bad[bad.size() / 2] ^= 1;
  try {
    trainer_from_bytes(bad, "ck.ckpt", 42);
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("ck.ckpt: checksum mismatch"), std::string::npos) << e.what();
  }
  EXPECT_THROW(trainer_from_bytes(bytes.substr(0, bytes.size() - 9), "mem", 42), FormatError);
}

TEST(Trainer, StoppedAndContinuedEqualsUninterrupted) {
  auto cfg = tiny_config();
  auto backend = make_cpu_backend();
  TrainerState full = make_trainer(Method::l2o, cfg.optimizer, 1);
  ASSERT_TRUE(train(cfg, *backend, full, {}));
  for (int stop_after : {1, 3, 7}) {
    TrainerState st = make_trainer(Method::l2o, cfg.optimizer, 1);
    int n = 0;
    TrainHooks hooks;
    hooks.after_step = [&](const TrainerState&) { return ++n < stop_after; };
    ASSERT_FALSE(train(cfg, *backend, st, hooks));
    TrainerState resumed = trainer_from_bytes(trainer_to_bytes(st, 1), "mem", 1);
    ASSERT_TRUE(train(cfg, *backend, resumed, {}));
    EXPECT_EQ(resumed.opt.weights, full.opt.weights) << "stopped after " << stop_after;
    EXPECT_EQ(resumed.eval_history, full.eval_history);
  }
}

TEST(Trainer, CurriculumEvaluatesAndRestoresTheBestWeights) {
  auto cfg = tiny_config();
  auto backend = make_cpu_backend();
  TrainerState st = make_trainer(Method::l2o, cfg.optimizer, 1);
  ASSERT_TRUE(train(cfg, *backend, st, {}));
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
    train(cfg, *backend, st, {});
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
  const auto task = sample_task<float>(cfg.eval.task);
  EXPECT_EQ(adapt(cfg, *backend, opt, task, 0).opt.weights, opt.weights);
  const auto a = adapt(cfg, *backend, opt, task, 5);
  EXPECT_NE(a.opt.weights, opt.weights);
  EXPECT_EQ(a.skipped, 0);
  // Deterministic.
  EXPECT_EQ(adapt(cfg, *backend, opt, task, 5).opt.weights, a.opt.weights);
}

TEST(Evaluate, ReturnsStepsPlusOneObjectivesStartingAtX0) {
  auto cfg = tiny_config();
  auto backend = make_cpu_backend();
  const auto opt = init_optimizer(cfg.optimizer, 2);
  const auto task = sample_task<float>(cfg.eval.task);
  const auto curve = evaluate(*backend, opt, task, 30);
  ASSERT_EQ(curve.size(), 31u);
  EXPECT_NEAR(curve[0], mean_objective(view_of(task), task.x0.data()), 1e-6 * std::abs(curve[0]));
}

}  // namespace
}  // namespace ml2o
