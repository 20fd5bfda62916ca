// Meta-training concepts, kept apart as in google/learned_optimization:
//   - the outer optimizer (Adam on the weights, adam.hpp),
//   - meta-gradient estimators: plain truncated BPTT and M-L2O (first or exact second order),
//     written once as a host reference over any scalar (ml2o_task_gradient) and once over backend
//     state for production (the trainer), which tests hold to each other,
//   - the trainer (epochs, curriculum, evaluation, early stopping) whose whole state is plain data
//     (TrainerState) that is checkpointed and resumed bit-identically,
//   - test-time adaptation (K Adam updates) and evaluation (frozen weights).
// Every function takes the config sections it uses (settings.hpp), never the whole Config.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "ml2o/adam.hpp"
#include "ml2o/backend.hpp"
#include "ml2o/lopt.hpp"
#include "ml2o/seeds.hpp"
#include "ml2o/settings.hpp"

namespace ml2o {

// ---- M-L2O meta-gradient of one task: the host reference over any scalar --------------------
// unroll_fn(w, traj, T, mode) runs an unroll (any precision); hvp_fn(w, traj, T, v) returns
// (d^2 L_support / dw^2) v at weights w from the (uncommitted) start state traj.
template <class S> struct Ml2oTaskResult {
  S support_loss = S(0), query_loss = S(0);
  std::vector<S> meta_grad;  // the gradient applied to the unadapted weights
};

template <class S, class UnrollFn, class HvpFn>
Ml2oTaskResult<S> ml2o_task_gradient(const std::vector<S>& w, Trajectory<S>& traj, int T,
                                     const Ml2oConfig& cfg, GradMode mode, UnrollFn&& unroll_fn,
                                     HvpFn&& hvp_fn) {
  Ml2oTaskResult<S> out;
  const Trajectory<S> support_start = traj;
  std::vector<std::vector<S>> inner_points;  // weights at which each inner step was taken
  std::vector<S> adapted = w;
  for (int i = 0; i < cfg.inner_steps; ++i) {
    Trajectory<S> seg = support_start;
    auto r = unroll_fn(adapted, seg, T, mode);
    if (i == 0) out.support_loss = r.meta_loss;
    inner_points.push_back(adapted);
    for (size_t p = 0; p < w.size(); ++p) adapted[p] -= S(cfg.inner_lr) * r.grad[p];
    if (i + 1 == cfg.inner_steps) traj = seg;  // commit the support segment's end state
  }
  Trajectory<S> query = traj;  // the query segment is not committed
  auto q = unroll_fn(adapted, query, T, mode);
  out.query_loss = q.meta_loss;
  out.meta_grad = std::move(q.grad);
  if (cfg.meta_gradient == MetaGradient::second_order) {
    // theta'_{i+1} = theta'_i - a grad L_s(theta'_i)  =>  dtheta'_{i+1}/dtheta'_i = I - a H_i.
    for (int i = cfg.inner_steps - 1; i >= 0; --i) {
      const std::vector<S> hv = hvp_fn(inner_points[i], support_start, T, out.meta_grad);
      for (size_t p = 0; p < w.size(); ++p) out.meta_grad[p] -= S(cfg.inner_lr) * hv[p];
    }
  }
  return out;
}

// ---- Trainer (curriculum; plain L2O or M-L2O) -------------------------------------------------
enum class Method { l2o, ml2o };
const char* method_name(Method m);

// Everything training needs to continue, as plain host data. While train() runs, the weights,
// Adam moments, best weights and trajectories live on the backend; they are written back here
// before every save and when train() returns.
struct TrainerState {
  Method method = Method::l2o;
  LearnedOptimizer opt;        // current weights
  AdamState adam;
  int64_t epoch = 0;           // epochs finished
  int stage = 0;               // index into the curriculum
  int64_t unroll_in_epoch = 0; // unrolls done in the epoch in progress (0: none started)
  std::vector<Trajectory<float>> trajs;  // per training task, the epoch in progress
  double best_score = 0;       // best evaluation score in the current stage
  bool has_best = false;
  std::vector<float> best_weights;
  int evals_without_improvement = 0;
  bool improved_in_stage = false;
  bool finished = false;
  int64_t skipped_steps = 0;   // non-finite meta-steps skipped (reported)
  int consecutive_skipped = 0;
  std::vector<double> eval_history;  // every evaluation's score
  std::vector<double> loss_history;  // mean meta-loss per epoch
  double epoch_loss_sum = 0;
  int64_t epoch_loss_count = 0;
};

TrainerState make_trainer(Method method, const OptimizerHyper& hyper, uint64_t init_seed);

// What the trainer does after a meta-step or an evaluation.
// Ordered by strength: the ranks of a distributed run take the strongest of their actions.
enum class StepAction { go_on, save, save_and_stop };

struct TrainHooks {
  // Counters and histories are current; the backend-held fields are not (see TrainerState).
  std::function<void(const TrainerState&, const std::string& status)> progress;
  std::function<StepAction(const TrainerState&)> after_step;
  std::function<void(const TrainerState&)> save;  // a complete, consistent state
};

struct DivergenceError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Runs (or continues) training until finished, max_epochs, or a hook asks to stop. Returns true
// when finished. Throws DivergenceError when non-finite steps persist. `ml2o` is used by
// Method::ml2o only. A second-order M-L2O run needs the backend's hvp (see caps()).
bool train(const TrainConfig& tc, const Ml2oConfig& ml2o, Backend& backend, TrainerState& st,
           const TrainHooks& hooks);

// Checkpoint files (ML2OCKP1, little-endian; host/meta/checkpoint.cpp, docs/reliability.md): the
// whole TrainerState and the hash of the config that wrote it, sealed with an FNV-1a checksum.
std::string trainer_to_bytes(const TrainerState& st, uint64_t config_hash);

// What a checkpoint must agree with: the run's config hash, method, optimizer and training
// settings (task sizes, curriculum, epochs, patience, ...).
struct CheckpointExpect {
  uint64_t config_hash = 0;
  Method method = Method::l2o;
  OptimizerHyper hyper;
  const TrainConfig* train = nullptr;
};
// Parses a checkpoint; every count and length is checked against the bytes left and against
// `expect` before it is used, and the state against the trainer's invariants. Throws FormatError
// "SOURCE: ..." naming the field.
TrainerState trainer_from_bytes(const std::string& bytes, const std::string& source,
                                const CheckpointExpect& expect);
// The largest checkpoint a run with these settings writes; load_checkpoint reads no more.
size_t checkpoint_max_bytes(const TrainConfig& tc, const OptimizerHyper& hyper);
// A checkpoint file's bytes, bounded by checkpoint_max_bytes and starting with the magic (checked
// before the rest is read); parse them with trainer_from_bytes.
std::string read_checkpoint_bytes(const std::string& path, const CheckpointExpect& expect);
TrainerState load_checkpoint(const std::string& path, const CheckpointExpect& expect);

// ---- Adaptation and evaluation --------------------------------------------------------------------
// How test-time adaptation runs: Adam on the weights, unrolls of `unroll` steps over trajectories
// of `trajectory` steps that restart from the task's x0.
struct AdaptPlan {
  AdamHyper adam;
  int unroll = 20;
  int trajectory = 100;
  GradMode mode = GradMode::gradient_constant;
};

struct AdaptResult {
  LearnedOptimizer opt;
  int64_t skipped = 0;  // non-finite updates skipped (the trajectory restarts from x0)
};

// K Adam updates of `start` on every task independently (one batched unroll per update).
std::vector<AdaptResult> adapt(Backend& backend, const AdaptPlan& plan,
                               const LearnedOptimizer& start,
                               const std::vector<const BackendTask*>& tasks, int K);

// Frozen weights, `steps` steps from each task's x0: steps + 1 mean objectives per task. opts has
// one optimizer per task, or one for all.
// With report_steps (increasing, in 0..steps), report(step, task index, iterate [N * d]) is called
// for every task at each of those steps (the mlp family's test accuracy); the unroll is then run in
// segments between them, which gives the same curves.
using IterateReport = std::function<void(int step, size_t task, const std::vector<float>& x)>;
std::vector<std::vector<double>> evaluate(Backend& backend, const std::vector<LearnedOptimizer>& opts,
                                          const std::vector<const BackendTask*>& tasks, int steps,
                                          const std::vector<int>& report_steps = {},
                                          const IterateReport& report = {});

}  // namespace ml2o
