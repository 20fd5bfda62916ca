// The settings of each stage of an experiment, one struct per config section ([run], [train],
// [ml2o], [adapt], [eval], [baselines], [arms]). A layer takes the sections it uses; only the
// protocol and the CLI see the whole Config (config.hpp). configs/README.md lists every key.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ml2o/baselines.hpp"
#include "ml2o/cell.hpp"
#include "ml2o/optimizee.hpp"
#include "ml2o/unroll.hpp"

namespace ml2o {

struct RunConfig {
  std::string name = "run";
  uint64_t seed = 0;             // every other seed is derived from this one
  std::string backend = "auto";  // cpu | cuda | auto
};

// Meta-training (plain L2O, docs/method.md section 4) and the pretraining of M-L2O and transfer learning.
struct TrainConfig {
  uint64_t seed = 0;             // meta-training seed (seeds.hpp): init, batches, not the test set
  std::vector<TaskSpec> tasks;   // D_train; a sigma list expands into one task per sigma
  int unroll = 20;
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // Adam on the weights
  int max_epochs = 500;
  std::vector<int> curriculum = {100, 200, 500, 1000, 1500, 2000, 2500, 3000};
  int eval_every = 10;           // epochs between evaluations
  int eval_batches = 20;         // fresh batches per evaluation
  int patience = 3;              // evaluations without improvement
  GradMode grad_mode = GradMode::gradient_constant;
  int max_skipped = 10;          // consecutive non-finite steps before the run stops
};

enum class MetaGradient { first_order, second_order };

struct Ml2oConfig {
  int inner_steps = 1;
  double inner_lr = 1e-3;
  MetaGradient meta_gradient = MetaGradient::first_order;
};

enum class AdaptSource { test, adapt };  // adapt on the test instances, or on D_adapt instances

struct AdaptConfig {
  std::vector<int> K = {5, 50};  // numbers of Adam updates
  double lr = 1e-3;
  int unroll = 20;
  int trajectory = 100;          // steps before restarting from the same x0
  std::vector<AdaptSource> sources = {AdaptSource::test};
  TaskSpec task;                 // D_adapt (the instances used when the source is "adapt")
};

struct EvalConfig {
  int steps = 1000;
  int seeds = 10;
  int report_every = 100;        // mlp test task: steps between test-accuracy reports
  TaskSpec task;                 // D_test; the seed of evaluation s is task.seed + s
  bool in_distribution = true;   // also evaluate on D_train's tasks (fresh instances)
};

struct BaselinesConfig {
  std::vector<BaselineKind> optimizers = {BaselineKind::sgd, BaselineKind::momentum,
                                          BaselineKind::adam, BaselineKind::rmsprop};
  std::vector<double> lrs = {1e-3, 1e-2, 1e-1};  // sweep; the best final objective is reported
  double momentum = 0.9;
};

// Which parts of the protocol a run performs.
struct ArmsConfig {
  bool vanilla = true, direct_transfer = true, transfer_learning = true, ml2o = true;
  bool baselines = true;
};

const char* grad_mode_name(GradMode m);
const char* meta_gradient_name(MetaGradient m);
const char* adapt_source_name(AdaptSource s);

}  // namespace ml2o
