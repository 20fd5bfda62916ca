#include "ml2o/meta.hpp"

#include <cmath>
#include <cstring>

#include "ml2o/io.hpp"

namespace ml2o {

uint64_t derive_seed(uint64_t base, uint64_t role, uint64_t a, uint64_t b) {
  auto mix = [](uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  return mix(mix(mix(mix(base) ^ role) ^ a) ^ b);
}

void adam_update(std::vector<float>& w, const std::vector<float>& grad, AdamState& st,
                 const AdamHyper& h) {
  if (st.m.empty()) {
    st.m.assign(w.size(), 0.0);
    st.v.assign(w.size(), 0.0);
  }
  ++st.t;
  const double c1 = 1.0 - std::pow(h.beta1, double(st.t));
  const double c2 = 1.0 - std::pow(h.beta2, double(st.t));
  for (size_t p = 0; p < w.size(); ++p) {
    const double g = grad[p];
    st.m[p] = h.beta1 * st.m[p] + (1.0 - h.beta1) * g;
    st.v[p] = h.beta2 * st.v[p] + (1.0 - h.beta2) * g * g;
    w[p] = static_cast<float>(w[p] - h.lr * (st.m[p] / c1) / (std::sqrt(st.v[p] / c2) + h.eps));
  }
}

bool all_finite(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

const char* method_name(Method m) { return m == Method::l2o ? "l2o" : "ml2o"; }

TrainerState make_trainer(Method method, const OptimizerHyper& hyper, uint64_t init_seed) {
  TrainerState st;
  st.method = method;
  st.opt = init_optimizer(hyper, init_seed);
  return st;
}

namespace {

TaskSpec epoch_task_spec(const TaskSpec& base, uint64_t role_id, uint64_t a, uint64_t b) {
  TaskSpec s = base;
  s.seed = derive_seed(base.seed, role_id, a, b);
  return s;
}

// Mean final objective over eval_batches fresh batches of every training task, forward only.
double evaluate_score(const Config& cfg, Backend& backend, const LearnedOptimizer& opt, int length,
                      uint64_t eval_index) {
  double total = 0;
  int count = 0;
  for (int batch = 0; batch < cfg.train.eval_batches; ++batch)
    for (size_t i = 0; i < cfg.train.tasks.size(); ++i) {
      const auto task = sample_task<float>(epoch_task_spec(
          cfg.train.tasks[i], role::train_eval, eval_index, uint64_t(batch) * 1000 + i));
      auto traj = start_trajectory(task.x0);
      const auto r = backend.unroll(opt.hyper, opt.weights, task, traj, length, GradMode::none);
      total += r.step_loss.back();
      ++count;
    }
  const double score = total / count;
  return std::isfinite(score) ? score : HUGE_VAL;
}

void begin_stage(const Config& cfg, Backend& backend, TrainerState& st) {
  const auto& cur = cfg.train.curriculum;
  const int length = cur[std::min<size_t>(st.stage + 1, cur.size() - 1)];
  // The weights entering a stage set the bar: "improvement" means beating them.
  st.best_score = evaluate_score(cfg, backend, st.opt, length, st.eval_history.size());
  st.eval_history.push_back(st.best_score);
  st.best_weights = st.opt.weights;
  st.has_best = true;
  st.evals_without_improvement = 0;
  st.improved_in_stage = false;
}

void finish(TrainerState& st) {
  if (st.has_best) st.opt.weights = st.best_weights;
  st.finished = true;
}

}  // namespace

bool train(const Config& cfg, Backend& backend, TrainerState& st, const TrainHooks& hooks) {
  const TrainConfig& tc = cfg.train;
  const int T = tc.unroll;
  const AdamHyper ah{tc.lr, tc.beta1, tc.beta2, tc.eps};
  const size_t ntasks = tc.tasks.size();
  const OptimizerHyper& hyper = st.opt.hyper;
  auto say = [&](const std::string& s) {
    if (hooks.progress) hooks.progress(st, s);
  };
  if (!st.has_best && !st.finished) {
    begin_stage(cfg, backend, st);
    say("stage 0 baseline evaluation");
    if (hooks.after_step && !hooks.after_step(st)) return false;
  }
  while (!st.finished) {
    if (st.epoch >= tc.max_epochs) {
      finish(st);
      break;
    }
    const int steps = tc.curriculum[st.stage];
    const int64_t n_unrolls = steps / T;
    std::vector<Task<float>> tasks;
    for (size_t i = 0; i < ntasks; ++i)
      tasks.push_back(sample_task<float>(epoch_task_spec(tc.tasks[i], role::train_task, st.epoch, i)));
    if (st.unroll_in_epoch == 0) {
      st.trajs.clear();
      for (const auto& t : tasks) st.trajs.push_back(start_trajectory(t.x0));
    }
    while (st.unroll_in_epoch < n_unrolls) {
      std::vector<float> grad(st.opt.weights.size(), 0.0f);
      double loss = 0;
      bool finite = true;
      // Work on copies so a non-finite step leaves the committed state untouched.
      std::vector<Trajectory<float>> trajs = st.trajs;
      for (size_t i = 0; i < ntasks && finite; ++i) {
        std::vector<float> g;
        if (st.method == Method::l2o) {
          auto r = backend.unroll(hyper, st.opt.weights, tasks[i], trajs[i], T, tc.grad_mode);
          loss += r.meta_loss;
          g = std::move(r.grad);
        } else {
          auto unroll_fn = [&](const std::vector<float>& w, Trajectory<float>& tr, int n,
                               GradMode mode) { return backend.unroll(hyper, w, tasks[i], tr, n, mode); };
          auto hvp_fn = [&](const std::vector<float>& w, const Trajectory<float>& tr, int n,
                            const std::vector<float>& v) {
            return hvp_dual(hyper, w, tasks[i], tr, n, v, tc.grad_mode);
          };
          auto r = ml2o_task_gradient(st.opt.weights, trajs[i], T, cfg.ml2o, tc.grad_mode,
                                      unroll_fn, hvp_fn);
          loss += r.query_loss;
          g = std::move(r.meta_grad);
        }
        finite = std::isfinite(loss) && all_finite(g);
        for (size_t p = 0; p < grad.size(); ++p) grad[p] += g[p] / float(ntasks);
      }
      if (finite) {
        adam_update(st.opt.weights, grad, st.adam, ah);
        st.trajs = std::move(trajs);
        st.consecutive_skipped = 0;
        st.epoch_loss_sum += loss / double(ntasks);
        st.epoch_loss_count += 1;
        ++st.unroll_in_epoch;
      } else {
        // Skip the update and abandon the epoch: its trajectories cannot continue.
        ++st.skipped_steps;
        if (++st.consecutive_skipped > tc.max_skipped)
          throw DivergenceError("meta-training diverged: " + std::to_string(st.consecutive_skipped) +
                                " consecutive meta-steps with a non-finite meta-loss or gradient "
                                "(epoch " + std::to_string(st.epoch) + "); lower train.lr");
        st.unroll_in_epoch = n_unrolls;
      }
      say("");
      if (hooks.after_step && !hooks.after_step(st)) return false;
    }
    // End of epoch.
    st.loss_history.push_back(st.epoch_loss_count ? st.epoch_loss_sum / st.epoch_loss_count : NAN);
    st.epoch_loss_sum = 0;
    st.epoch_loss_count = 0;
    ++st.epoch;
    st.unroll_in_epoch = 0;
    st.trajs.clear();
    if (st.epoch % tc.eval_every == 0) {
      const auto& cur = tc.curriculum;
      const int length = cur[std::min<size_t>(st.stage + 1, cur.size() - 1)];
      const double score = evaluate_score(cfg, backend, st.opt, length, st.eval_history.size());
      st.eval_history.push_back(score);
      if (score < st.best_score) {
        st.best_score = score;
        st.best_weights = st.opt.weights;
        st.evals_without_improvement = 0;
        st.improved_in_stage = true;
      } else if (++st.evals_without_improvement >= tc.patience) {
        if (!st.improved_in_stage || st.stage + 1 >= int(cur.size())) {
          finish(st);
        } else {
          st.opt.weights = st.best_weights;
          ++st.stage;
          begin_stage(cfg, backend, st);
        }
      }
      say("evaluation");
    }
    if (hooks.after_step && !hooks.after_step(st)) return false;
  }
  return true;
}

// ---- checkpoint serialisation ---------------------------------------------------------------------
namespace {
constexpr char kCkptMagic[8] = {'M', 'L', '2', 'O', 'C', 'K', 'P', '1'};
constexpr uint32_t kCkptVersion = 1;

template <class T> void put_vec(ByteWriter& w, const std::vector<T>& v) {
  w.put<uint64_t>(v.size());
  w.put_bytes(v.data(), v.size() * sizeof(T));
}
template <class T> std::vector<T> get_vec(ByteReader& r, const char* what, uint64_t max_count) {
  const auto n = r.get<uint64_t>(what);
  if (n > max_count || n * sizeof(T) > r.remaining())
    throw FormatError(r.source() + ": corrupt checkpoint: " + what + " has " + std::to_string(n) +
                      " elements");
  std::vector<T> v(n);
  r.get_bytes(v.data(), n * sizeof(T), what);
  return v;
}
}  // namespace

std::string trainer_to_bytes(const TrainerState& st, uint64_t config_hash) {
  ByteWriter w;
  w.put_bytes(kCkptMagic, 8);
  w.put<uint32_t>(kCkptVersion);
  w.put<uint64_t>(config_hash);
  const std::string params = params_to_bytes(st.opt);
  w.put<uint64_t>(params.size());
  w.put_bytes(params.data(), params.size());
  w.put<uint32_t>(uint32_t(st.method));
  put_vec(w, st.adam.m);
  put_vec(w, st.adam.v);
  w.put<int64_t>(st.adam.t);
  w.put<int64_t>(st.epoch);
  w.put<int32_t>(st.stage);
  w.put<int64_t>(st.unroll_in_epoch);
  w.put<uint64_t>(st.trajs.size());
  for (const auto& t : st.trajs) {
    put_vec(w, t.x);
    put_vec(w, t.coord);
    w.put<int64_t>(t.k);
  }
  w.put<double>(st.best_score);
  w.put<uint8_t>(st.has_best);
  put_vec(w, st.best_weights);
  w.put<int32_t>(st.evals_without_improvement);
  w.put<uint8_t>(st.improved_in_stage);
  w.put<uint8_t>(st.finished);
  w.put<int64_t>(st.skipped_steps);
  w.put<int32_t>(st.consecutive_skipped);
  put_vec(w, st.eval_history);
  put_vec(w, st.loss_history);
  w.put<double>(st.epoch_loss_sum);
  w.put<int64_t>(st.epoch_loss_count);
  const uint64_t sum = fnv1a64(w.bytes().data(), w.bytes().size());
  w.put<uint64_t>(sum);
  return std::move(w.bytes());
}

TrainerState trainer_from_bytes(const std::string& bytes, const std::string& source,
                                uint64_t config_hash) {
  ByteReader r(bytes, source);
  char magic[8];
  r.get_bytes(magic, 8, "magic");
  if (std::memcmp(magic, kCkptMagic, 8) != 0)
    throw FormatError(source + ": not an ml2o checkpoint (wrong magic; expected \"ML2OCKP1\")");
  const auto version = r.get<uint32_t>("version");
  if (version != kCkptVersion)
    throw FormatError(source + ": checkpoint version " + std::to_string(version) +
                      " is not supported (this build reads version " + std::to_string(kCkptVersion) + ")");
  if (bytes.size() < 28) throw FormatError(source + ": truncated checkpoint");
  uint64_t stored;
  std::memcpy(&stored, bytes.data() + bytes.size() - 8, 8);
  if (fnv1a64(bytes.data(), bytes.size() - 8) != stored)
    throw FormatError(source + ": checksum mismatch: the checkpoint is corrupted or truncated");
  if (r.get<uint64_t>("config hash") != config_hash)
    throw FormatError(source + ": the checkpoint was written by a run with a different config; "
                               "start a new output directory or restore the original config");
  TrainerState st;
  const auto plen = r.get<uint64_t>("params length");
  if (plen > r.remaining()) throw FormatError(source + ": truncated checkpoint (params)");
  std::string params(plen, '\0');
  r.get_bytes(params.data(), plen, "params");
  st.opt = params_from_bytes(params, source + " (embedded params)");
  const size_t P = st.opt.weights.size();
  const auto method = r.get<uint32_t>("method");
  if (method > 1) throw FormatError(source + ": unknown training method id");
  st.method = Method(method);
  st.adam.m = get_vec<double>(r, "adam m", P);
  st.adam.v = get_vec<double>(r, "adam v", P);
  st.adam.t = r.get<int64_t>("adam t");
  st.epoch = r.get<int64_t>("epoch");
  st.stage = r.get<int32_t>("stage");
  st.unroll_in_epoch = r.get<int64_t>("unroll in epoch");
  const auto ntraj = r.get<uint64_t>("trajectory count");
  if (ntraj > 4096) throw FormatError(source + ": corrupt checkpoint: trajectory count");
  for (uint64_t i = 0; i < ntraj; ++i) {
    Trajectory<float> t;
    t.x = get_vec<float>(r, "trajectory x", uint64_t(1) << 40);
    t.coord = get_vec<CoordState<float>>(r, "trajectory state", uint64_t(1) << 40);
    t.k = r.get<int64_t>("trajectory k");
    if (t.coord.size() != t.x.size()) throw FormatError(source + ": corrupt checkpoint: trajectory sizes");
    st.trajs.push_back(std::move(t));
  }
  st.best_score = r.get<double>("best score");
  st.has_best = r.get<uint8_t>("has best");
  st.best_weights = get_vec<float>(r, "best weights", P);
  st.evals_without_improvement = r.get<int32_t>("evals without improvement");
  st.improved_in_stage = r.get<uint8_t>("improved in stage");
  st.finished = r.get<uint8_t>("finished");
  st.skipped_steps = r.get<int64_t>("skipped steps");
  st.consecutive_skipped = r.get<int32_t>("consecutive skipped");
  st.eval_history = get_vec<double>(r, "eval history", uint64_t(1) << 32);
  st.loss_history = get_vec<double>(r, "loss history", uint64_t(1) << 32);
  st.epoch_loss_sum = r.get<double>("epoch loss sum");
  st.epoch_loss_count = r.get<int64_t>("epoch loss count");
  if (r.remaining() != 8) throw FormatError(source + ": trailing bytes in checkpoint");
  if (st.stage < 0 || st.epoch < 0 || st.unroll_in_epoch < 0)
    throw FormatError(source + ": corrupt checkpoint: negative counters");
  return st;
}

// ---- adaptation and evaluation --------------------------------------------------------------------
AdaptResult adapt(const Config& cfg, Backend& backend, const LearnedOptimizer& start,
                  const Task<float>& task, int K) {
  const AdaptConfig& ac = cfg.adapt;
  const AdamHyper ah{ac.lr, cfg.train.beta1, cfg.train.beta2, cfg.train.eps};
  AdaptResult out{start, 0};
  AdamState adam;
  const int per_trajectory = ac.trajectory / ac.unroll;
  Trajectory<float> traj;
  for (int i = 0; i < K; ++i) {
    if (i % per_trajectory == 0) traj = start_trajectory(task.x0);
    Trajectory<float> next = traj;
    const auto r = backend.unroll(out.opt.hyper, out.opt.weights, task, next, ac.unroll,
                                  cfg.train.grad_mode);
    if (std::isfinite(r.meta_loss) && all_finite(r.grad)) {
      adam_update(out.opt.weights, r.grad, adam, ah);
      traj = std::move(next);
    } else {
      ++out.skipped;  // skipped update; restart the trajectory from x0
      traj = start_trajectory(task.x0);
    }
  }
  return out;
}

std::vector<double> evaluate(Backend& backend, const LearnedOptimizer& opt, const Task<float>& task,
                             int steps) {
  auto traj = start_trajectory(task.x0);
  return backend.unroll(opt.hyper, opt.weights, task, traj, steps, GradMode::none).step_loss;
}

}  // namespace ml2o
