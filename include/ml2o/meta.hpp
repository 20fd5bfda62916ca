// Meta-training concepts, kept apart as in google/learned_optimization:
//   - the outer optimizer (Adam on the weights) and its state,
//   - meta-gradient estimators: plain truncated BPTT (SPEC 4) and M-L2O (SPEC 5, first or exact
//     second order),
//   - the trainer (epochs, curriculum, evaluation, early stopping; SPEC 4) whose whole state is
//     plain data that is checkpointed and resumed bit-identically,
//   - test-time adaptation (K Adam updates) and evaluation (frozen weights).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ml2o/backend.hpp"
#include "ml2o/config.hpp"
#include "ml2o/dual.hpp"
#include "ml2o/lopt.hpp"

namespace ml2o {

// Seeds of every stage derive from the run seed and the stage's coordinates (splitmix64 mixing).
uint64_t derive_seed(uint64_t base, uint64_t role, uint64_t a = 0, uint64_t b = 0);
namespace role {
constexpr uint64_t init = 1, train_task = 2, train_eval = 3, vanilla_init = 4;
}

struct AdamState {
  std::vector<double> m, v;
  int64_t t = 0;
};
struct AdamHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
};
void adam_update(std::vector<float>& w, const std::vector<float>& grad, AdamState& st,
                 const AdamHyper& h);

bool all_finite(const std::vector<float>& v);

// ---- M-L2O meta-gradient for one task (SPEC 5) ----------------------------------------------
// unroll_fn(w, traj, T, mode) runs an unroll (any backend, any precision); hvp_fn(w, traj, T, v)
// returns (d^2 L_support / dw^2) v at weights w from the (uncommitted) start state traj.
template <class S> struct Ml2oTaskResult {
  S support_loss = S(0), query_loss = S(0);
  std::vector<S> meta_grad;  // the gradient applied to the unadapted weights
  bool finite = true;
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

// Exact Hessian-vector product of the support meta-loss by forward-over-reverse (Dual<double>):
// the BPTT pass run on dual numbers whose weight tangents are v.
template <class S, class TaskScalar>
std::vector<S> hvp_dual(const OptimizerHyper& hyper, const std::vector<S>& w,
                        const Task<TaskScalar>& task, const Trajectory<S>& start, int T,
                        const std::vector<S>& v, GradMode mode) {
  using D = Dual<double>;
  std::vector<D> wd(w.size());
  for (size_t p = 0; p < w.size(); ++p) wd[p] = D(double(w[p]), double(v[p]));
  const Task<D> td = cast_task<D>(task);
  Trajectory<D> traj = cast_trajectory<D>(start);
  const auto r = unroll_cpu(hyper, wd, view_of(td), traj, T, mode);
  std::vector<S> out(w.size());
  for (size_t p = 0; p < w.size(); ++p) out[p] = S(r.grad[p].d);
  return out;
}

// ---- Trainer (SPEC 4 curriculum; plain L2O or M-L2O) -------------------------------------------
enum class Method { l2o, ml2o };
const char* method_name(Method m);

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

// Called after every meta-step: may checkpoint; returns false to stop (interrupted).
struct TrainHooks {
  std::function<void(const TrainerState&, const std::string& status)> progress;
  std::function<bool(const TrainerState&)> after_step;  // false: stop now (state is consistent)
};

// Runs (or continues) training until finished, max_epochs, or a hook asks to stop. Returns true
// when finished. Throws DivergenceError when non-finite steps persist.
struct DivergenceError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
bool train(const Config& cfg, Backend& backend, TrainerState& st, const TrainHooks& hooks);

std::string trainer_to_bytes(const TrainerState& st, uint64_t config_hash);
TrainerState trainer_from_bytes(const std::string& bytes, const std::string& source,
                                uint64_t config_hash);

// ---- Adaptation and evaluation (SPEC 6) ---------------------------------------------------------
struct AdaptResult {
  LearnedOptimizer opt;
  int64_t skipped = 0;
};
// K Adam updates of the weights on `task`, unroll cfg.adapt.unroll over cfg.adapt.trajectory-step
// trajectories that restart from task.x0.
AdaptResult adapt(const Config& cfg, Backend& backend, const LearnedOptimizer& start,
                  const Task<float>& task, int K);

// Frozen weights, `steps` steps from task.x0: steps + 1 mean objectives.
std::vector<double> evaluate(Backend& backend, const LearnedOptimizer& opt, const Task<float>& task,
                             int steps);

}  // namespace ml2o
