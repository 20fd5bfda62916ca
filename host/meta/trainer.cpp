// The trainer: epochs of truncated unrolls with the curriculum, periodic evaluation, early stopping
// and best-weights restore, for plain L2O and M-L2O. The state that changes every meta-step
// (weights, Adam moments, trajectories) stays on the backend; TrainerState receives it on saves.
#include <algorithm>
#include <cmath>

#include "ml2o/meta.hpp"

namespace ml2o {

const char* method_name(Method m) { return m == Method::l2o ? "l2o" : "ml2o"; }

TrainerState make_trainer(Method method, const OptimizerHyper& hyper, uint64_t init_seed) {
  TrainerState st;
  st.method = method;
  st.opt = init_optimizer(hyper, init_seed);
  return st;
}

namespace {

using VecPtr = std::unique_ptr<BackendVector>;
using TrajPtr = std::unique_ptr<BackendTrajectory>;

// The trainer's state on the backend, and the scratch vectors of one meta-step.
struct Live {
  Backend& be;
  OptimizerHyper hyper;
  VecPtr w, best_w, step_grad;
  std::unique_ptr<BackendAdam> adam;
  // The epoch in progress: tasks, committed trajectories, and working copies.
  std::vector<std::unique_ptr<BackendTask>> tasks;
  std::vector<TrajPtr> trajs, work, seg;
  std::vector<VecPtr> grads, adapted, hv;
  std::vector<std::vector<VecPtr>> inner_points;  // [task][inner step], second order only

  Live(Backend& backend, const TrainerState& st) : be(backend), hyper(st.opt.hyper) {
    w = upload_vector(be, st.opt.weights);
    best_w = be.vector(st.opt.weights.size());
    if (!st.best_weights.empty()) best_w->write(st.best_weights);
    step_grad = be.vector(st.opt.weights.size());
    adam = be.adam(st.opt.weights.size());
    adam->write(st.adam);
  }
  size_t P() const { return w->size(); }

  // Writes everything the backend holds back into st.
  void store(TrainerState& s) const {
    s.opt.weights = w->read();
    s.adam = adam->read();
    if (s.has_best) s.best_weights = best_w->read();
    s.trajs.clear();
    for (const auto& t : trajs) s.trajs.push_back(t->read());
  }

  void begin_epoch(const TrainConfig& tc, const TrainerState& st, const Ml2oConfig& mc) {
    tasks.clear();
    trajs.clear();
    work.clear();
    seg.clear();
    for (size_t i = 0; i < tc.tasks.size(); ++i) {
      tasks.push_back(be.upload(sample_task<float>(training_batch_spec(tc.tasks[i], st.epoch, i, tc.seed))));
      trajs.push_back(be.trajectory(*tasks.back()));
      if (st.unroll_in_epoch > 0) trajs.back()->write(st.trajs[i]);  // resumed mid-epoch
      work.push_back(be.trajectory(*tasks.back()));
      seg.push_back(be.trajectory(*tasks.back()));
    }
    const size_t n = tasks.size();
    while (grads.size() < n) grads.push_back(be.vector(P()));
    if (st.method == Method::ml2o) {
      while (adapted.size() < n) adapted.push_back(be.vector(P()));
      if (mc.meta_gradient == MetaGradient::second_order) {
        while (hv.size() < n) hv.push_back(be.vector(P()));
        inner_points.resize(n);
        for (auto& pts : inner_points)
          while (pts.size() < size_t(mc.inner_steps)) pts.push_back(be.vector(P()));
      }
    }
  }
};

std::vector<UnrollItem> items_of(Live& L, std::vector<TrajPtr>& trajs,
                                 const std::vector<const BackendVector*>& weights) {
  std::vector<UnrollItem> items;
  for (size_t i = 0; i < L.tasks.size(); ++i)
    items.push_back(UnrollItem{L.tasks[i].get(), trajs[i].get(), weights[i], L.grads[i].get()});
  return items;
}

// One meta-step of plain truncated BPTT on every task: L.work ends at the unrolls' end states,
// L.grads hold the per-task meta-gradients. Returns the summed meta-loss.
double l2o_step(Live& L, int T, GradMode mode) {
  for (size_t i = 0; i < L.tasks.size(); ++i) L.work[i]->assign(*L.trajs[i]);
  const std::vector<const BackendVector*> w(L.tasks.size(), L.w.get());
  double loss = 0;
  for (const UnrollLoss& r : L.be.unroll(L.hyper, items_of(L, L.work, w), T, mode)) loss += r.meta_loss;
  return loss;
}

// One meta-step of M-L2O on every task (the production form of ml2o_task_gradient, batched over
// tasks): inner SGD steps on the support segment, whose end state L.work commits; the query
// segment's gradient at the adapted weights; the second-order correction (I - a H) per inner step.
double ml2o_step(Live& L, int T, GradMode mode, const Ml2oConfig& mc) {
  const size_t n = L.tasks.size();
  const bool second = mc.meta_gradient == MetaGradient::second_order;
  std::vector<const BackendVector*> adapted;
  for (size_t i = 0; i < n; ++i) {
    L.adapted[i]->assign(*L.w);
    adapted.push_back(L.adapted[i].get());
  }
  for (int s = 0; s < mc.inner_steps; ++s) {
    for (size_t i = 0; i < n; ++i) L.seg[i]->assign(*L.trajs[i]);
    L.be.unroll(L.hyper, items_of(L, L.seg, adapted), T, mode);
    for (size_t i = 0; i < n; ++i) {
      if (second) L.inner_points[i][s]->assign(*L.adapted[i]);
      L.be.axpy(*L.adapted[i], -float(mc.inner_lr), *L.grads[i]);
    }
  }
  // The support segment's end state is committed (L.work); the query segment continues from it
  // in L.seg and is not.
  for (size_t i = 0; i < n; ++i) L.work[i]->assign(*L.seg[i]);
  double loss = 0;
  for (const UnrollLoss& r : L.be.unroll(L.hyper, items_of(L, L.seg, adapted), T, mode)) loss += r.meta_loss;
  if (second)
    for (size_t i = 0; i < n; ++i)
      for (int s = mc.inner_steps - 1; s >= 0; --s) {
        L.be.hvp(L.hyper, *L.trajs[i], *L.inner_points[i][s], *L.grads[i], T, mode, *L.hv[i]);
        L.be.axpy(*L.grads[i], -float(mc.inner_lr), *L.hv[i]);
      }
  return loss;
}

// Mean final objective over eval_batches fresh batches of every training task, forward only,
// batched so that one call holds about as many coordinates as the training set (at least 2^20).
double evaluate_score(const TrainConfig& tc, Backend& be, const OptimizerHyper& hyper,
                      const BackendVector& w, int length, uint64_t eval_index) {
  int64_t budget = int64_t(1) << 20;
  int64_t train_coords = 0;
  for (const TaskSpec& s : tc.tasks) train_coords += s.instances * s.dim;
  budget = std::max(budget, train_coords);
  double total = 0;
  int count = 0;
  std::vector<std::unique_ptr<BackendTask>> tasks;
  std::vector<TrajPtr> trajs;
  int64_t held = 0;
  auto flush = [&] {
    std::vector<UnrollItem> items;
    for (size_t i = 0; i < tasks.size(); ++i) items.push_back(UnrollItem{tasks[i].get(), trajs[i].get(), &w, nullptr});
    for (const UnrollLoss& r : be.unroll(hyper, items, length, GradMode::none)) {
      total += r.step_loss.back();
      ++count;
    }
    tasks.clear();
    trajs.clear();
    held = 0;
  };
  for (int batch = 0; batch < tc.eval_batches; ++batch)
    for (size_t i = 0; i < tc.tasks.size(); ++i) {
      const TaskSpec spec = evaluation_batch_spec(tc.tasks[i], eval_index, batch, i, tc.seed);
      if (held > 0 && held + spec.instances * spec.dim > budget) flush();
      tasks.push_back(be.upload(sample_task<float>(spec)));
      trajs.push_back(be.trajectory(*tasks.back()));
      held += spec.instances * spec.dim;
    }
  if (!tasks.empty()) flush();
  const double score = total / count;
  return std::isfinite(score) ? score : HUGE_VAL;
}

int eval_length(const TrainConfig& tc, int stage) {
  const auto& cur = tc.curriculum;
  return cur[std::min<size_t>(stage + 1, cur.size() - 1)];
}

void begin_stage(const TrainConfig& tc, Live& L, TrainerState& st) {
  // The weights entering a stage set the bar: "improvement" means beating them.
  st.best_score = evaluate_score(tc, L.be, L.hyper, *L.w, eval_length(tc, st.stage), st.eval_history.size());
  st.eval_history.push_back(st.best_score);
  L.best_w->assign(*L.w);
  st.has_best = true;
  st.evals_without_improvement = 0;
  st.improved_in_stage = false;
}

void finish(Live& L, TrainerState& st) {
  if (st.has_best) L.w->assign(*L.best_w);
  st.finished = true;
}

// Periodic evaluation at the end of an epoch: keep the best, advance the stage or stop.
void end_of_epoch_evaluation(const TrainConfig& tc, Live& L, TrainerState& st) {
  const double score = evaluate_score(tc, L.be, L.hyper, *L.w, eval_length(tc, st.stage), st.eval_history.size());
  st.eval_history.push_back(score);
  if (score < st.best_score) {
    st.best_score = score;
    L.best_w->assign(*L.w);
    st.evals_without_improvement = 0;
    st.improved_in_stage = true;
  } else if (++st.evals_without_improvement >= tc.patience) {
    if (!st.improved_in_stage || st.stage + 1 >= int(tc.curriculum.size())) {
      finish(L, st);
    } else {
      L.w->assign(*L.best_w);
      ++st.stage;
      begin_stage(tc, L, st);
    }
  }
}

}  // namespace

bool train(const TrainConfig& tc, const Ml2oConfig& mc, Backend& backend, TrainerState& st,
           const TrainHooks& hooks) {
  const int T = tc.unroll;
  const AdamHyper ah{tc.lr, tc.beta1, tc.beta2, tc.eps};
  Live L(backend, st);
  auto say = [&](const std::string& s) {
    if (hooks.progress) hooks.progress(st, s);
  };
  // Returns false when the hooks ask to stop (after saving).
  auto checkpoint_point = [&] {
    const StepAction a = hooks.after_step ? hooks.after_step(st) : StepAction::go_on;
    if (a != StepAction::go_on && hooks.save) {
      L.store(st);
      hooks.save(st);
    }
    return a != StepAction::save_and_stop;
  };
  auto stop = [&] {
    L.store(st);
    return false;
  };
  if (!st.has_best && !st.finished) {
    begin_stage(tc, L, st);
    say("stage 0 baseline evaluation");
    if (!checkpoint_point()) return stop();
  }
  while (!st.finished) {
    if (st.epoch >= tc.max_epochs) {
      finish(L, st);
      break;
    }
    const int64_t n_unrolls = tc.curriculum[st.stage] / T;
    L.begin_epoch(tc, st, mc);
    std::vector<const BackendVector*> grads;
    for (size_t i = 0; i < L.tasks.size(); ++i) grads.push_back(L.grads[i].get());
    while (st.unroll_in_epoch < n_unrolls) {
      // Work on copies (L.work) so a non-finite step leaves the committed state untouched.
      const double loss = st.method == Method::l2o ? l2o_step(L, T, tc.grad_mode)
                                                   : ml2o_step(L, T, tc.grad_mode, mc);
      backend.mean(*L.step_grad, grads);
      const bool finite = std::isfinite(loss) && backend.all_finite(*L.step_grad);
      if (finite) {
        backend.adam_step(*L.w, *L.step_grad, *L.adam, ah);
        std::swap(L.trajs, L.work);
        st.consecutive_skipped = 0;
        st.epoch_loss_sum += loss / double(L.tasks.size());
        st.epoch_loss_count += 1;
        ++st.unroll_in_epoch;
      } else {
        // Skip the update and abandon the epoch: its trajectories cannot continue.
        ++st.skipped_steps;
        if (++st.consecutive_skipped > tc.max_skipped) {
          L.store(st);
          throw DivergenceError("meta-training diverged: " + std::to_string(st.consecutive_skipped) +
                                " consecutive meta-steps with a non-finite meta-loss or gradient "
                                "(epoch " + std::to_string(st.epoch) + "); lower train.lr");
        }
        st.unroll_in_epoch = n_unrolls;
      }
      say("");
      if (!checkpoint_point()) return stop();
    }
    // End of epoch.
    st.loss_history.push_back(st.epoch_loss_count ? st.epoch_loss_sum / st.epoch_loss_count : NAN);
    st.epoch_loss_sum = 0;
    st.epoch_loss_count = 0;
    ++st.epoch;
    st.unroll_in_epoch = 0;
    L.trajs.clear();
    if (st.epoch % tc.eval_every == 0) {
      end_of_epoch_evaluation(tc, L, st);
      say("evaluation");
    }
    if (!checkpoint_point()) return stop();
  }
  L.store(st);
  return true;
}

}  // namespace ml2o
