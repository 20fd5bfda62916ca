// Host memory a command will hold, estimated from the config before anything is allocated, and
// the one limit every command checks it against.
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "ml2o/protocol.hpp"

namespace ml2o {

namespace {

double task_bytes(const TaskSpec& t) {
  const double nd = double(t.instances) * t.dim;
  const bool matrix = t.family == Family::lasso || t.family == Family::quadratic;
  return (matrix ? nd * t.dim + nd : 0.0) * sizeof(float) + nd * sizeof(float);
}

// A trajectory and its working copy.
double traj_bytes(const TaskSpec& t) {
  return 2 * double(t.instances) * t.dim * (sizeof(float) + sizeof(CoordState<float>));
}

// Per objective of a curve: the backend's per-step values (16), the curve kept (8), and its CSV
// text while the file is built (about 64).
constexpr double kBytesPerObjective = 16 + 8 + 64;

double curves_bytes(double curves, double steps) { return curves * (steps + 1) * kBytesPerObjective; }

double train_bytes(const Config& cfg) {
  double b = 0, coords = 0;
  for (const TaskSpec& t : cfg.train.tasks) {
    b += task_bytes(t) + traj_bytes(t);
    coords += double(t.instances) * t.dim;
  }
  // The evaluations during training: batches of at least 2^20 coordinates, each task's curve as
  // long as the longest curriculum stage.
  const int longest = cfg.train.curriculum.empty()
                          ? 0 : *std::max_element(cfg.train.curriculum.begin(), cfg.train.curriculum.end());
  b += std::max(coords, double(1 << 20)) * (sizeof(float) + sizeof(CoordState<float>));
  b += double(cfg.train.eval_batches) * double(cfg.train.tasks.size()) * (longest + 1.0) * 16;
  return b;
}

double arms_bytes(const Config& cfg) {
  const double seeds = cfg.eval.seeds;
  const double tasks = seeds * (task_bytes(cfg.eval.task) + task_bytes(cfg.adapt.task) +
                                traj_bytes(cfg.eval.task) + traj_bytes(cfg.adapt.task));
  const double learned = double(cfg.adapt.K.size()) * double(cfg.adapt.sources.size()) * 3 + 1;
  const double arms = learned + double(cfg.baselines.optimizers.size());
  return tasks + curves_bytes(arms * seeds, cfg.eval.steps);
}

double gib(double b) { return b / 1073741824.0; }

}  // namespace

double host_memory_limit_bytes() {
  const double have = double(::sysconf(_SC_PHYS_PAGES)) * double(::sysconf(_SC_PAGESIZE));
  return have > 0 ? 0.9 * have : HUGE_VAL;
}

void require_host_memory(const std::string& source, double bytes, const std::string& what) {
  const double limit = host_memory_limit_bytes();
  if (!(bytes <= limit)) {
    char buf[160];
    std::snprintf(buf, sizeof buf, " need about %.2f GiB of host memory at once, but this machine "
                  "allows %.2f GiB (90%% of its memory)", gib(bytes), gib(limit));
    throw ConfigError(source + ": " + what + buf);
  }
}

size_t estimate_host_bytes(const Config& cfg) {
  return size_t(std::max(train_bytes(cfg), arms_bytes(cfg)));
}

void check_fits_in_memory(const Config& cfg) {
  require_host_memory(cfg.path, train_bytes(cfg),
                      "the training tasks, trajectories and evaluations (train.task instances x "
                      "dim, train.curriculum, train.eval_batches)");
  require_host_memory(cfg.path, arms_bytes(cfg),
                      "the evaluation tasks and curves (eval.task and adapt.task instances x dim, "
                      "eval.seeds x eval.steps x arms)");
}

void check_train_fits(const Config& cfg) {
  require_host_memory(cfg.path, train_bytes(cfg),
                      "the training tasks, trajectories and evaluations (train.task instances x "
                      "dim, train.curriculum, train.eval_batches)");
}

void check_adapt_fits(const Config& cfg) {
  const TaskSpec& t = cfg.eval.task;
  const TaskSpec& a = cfg.adapt.task;
  require_host_memory(cfg.path, std::max(task_bytes(t) + traj_bytes(t), task_bytes(a) + traj_bytes(a)),
                      "the adaptation task and its trajectories (eval.task or adapt.task instances x dim)");
}

void check_eval_fits(const Config& cfg, int64_t steps, const std::string& steps_source) {
  const TaskSpec& t = cfg.eval.task;
  const double b = cfg.eval.seeds * (task_bytes(t) + traj_bytes(t)) + curves_bytes(cfg.eval.seeds, double(steps));
  require_host_memory(cfg.path, b, "eval.seeds x " + steps_source + " (" + std::to_string(cfg.eval.seeds) +
                                       " x " + std::to_string(steps) + ") and the eval.task instances");
}

void check_baseline_fits(const Config& cfg, const TaskSpec& task, int64_t steps) {
  require_host_memory(cfg.path, task_bytes(task) + traj_bytes(task) + curves_bytes(1, double(steps)),
                      "--steps " + std::to_string(steps) + " and the task's instances x dim");
}

}  // namespace ml2o
