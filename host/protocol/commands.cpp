// The CLI's commands as functions (include/ml2o/commands.hpp): the checks and the computation of
// train, adapt, eval and baseline, shared by host/cli/main.cpp and the Python binding.
#include "ml2o/commands.hpp"

#include <filesystem>
#include <sstream>

#include "ml2o/progress.hpp"

namespace fs = std::filesystem;

namespace ml2o {

namespace {

Config with_backend(Config cfg, const std::string& backend) {
  if (!backend.empty()) {
    cfg.run.backend = backend;
    cfg.json["run"]["backend"] = backend;
  }
  return cfg;
}

// --out of a command: refuse a path that is something other than a directory.
void require_directory_or_new(const std::string& dir) {
  if (fs::exists(dir) && !fs::is_directory(dir))
    throw ConfigError("--out " + dir + ": exists and is not a directory");
}

}  // namespace

Config load_with_overrides(const std::string& path, const std::string& backend) {
  return with_backend(load_config(path), backend);
}

Config parse_with_overrides(const std::string& text, const std::string& source,
                            const std::string& backend) {
  return with_backend(parse_config(text, source), backend);
}

void run_command(const Config& cfg, const RunOptions& opts) {
  require_directory_or_new(opts.out_dir);
  run_protocol(cfg, opts);
}

TrainerState train_command(const Config& cfg, Method method, const LearnedOptimizer* init,
                           const RunOptions& opts) {
  if (cfg.train.tasks.empty())
    throw ConfigError(cfg.path + ": key 'train.task': training needs at least one [[train.task]]");
  check_fits_in_memory(cfg);
  require_directory_or_new(opts.out_dir);
  const fs::path params = fs::path(opts.out_dir) / (std::string(method_name(method)) + ".params");
  if (fs::exists(params) && !opts.resume)
    throw ConfigError(params.string() + " exists; use --resume to continue that training or another --out");
  auto be = make_backend(cfg.run.backend);
  Progress progress;
  return run_training(cfg, *be, method, opts, progress, init);
}

AdaptResult adapt_command(const Config& cfg, const LearnedOptimizer& start,
                          const std::string& params_source, int K, AdaptSource source,
                          int seed_index) {
  check_fits_in_memory(cfg);
  if (start.hyper.arch != cfg.optimizer.arch)
    throw ConfigError(params_source + ": params are " + arch_name(start.hyper.arch) + " but " + cfg.path +
                      " sets optimizer.arch = " + arch_name(cfg.optimizer.arch));
  if (K < 0) throw ConfigError("K must be >= 0, got " + std::to_string(K));
  if (seed_index < 0) throw ConfigError("seed index must be >= 0, got " + std::to_string(seed_index));
  auto be = make_backend(cfg.run.backend);
  const auto task = be->upload(adapt_task(cfg, source, seed_index));
  return adapt(*be, adapt_plan(cfg), start, {task.get()}, K).front();
}

std::vector<std::vector<double>> eval_command(const Config& cfg, const LearnedOptimizer& opt,
                                              int steps) {
  check_fits_in_memory(cfg);
  auto be = make_backend(cfg.run.backend);
  const int n = steps > 0 ? steps : cfg.eval.steps;
  std::vector<std::unique_ptr<BackendTask>> tasks;
  std::vector<const BackendTask*> task_ptrs;
  for (int s = 0; s < cfg.eval.seeds; ++s) {
    tasks.push_back(be->upload(test_task(cfg, s)));
    task_ptrs.push_back(tasks.back().get());
  }
  return evaluate(*be, {opt}, task_ptrs, n);
}

std::string eval_curves_csv(const std::vector<std::vector<double>>& curves) {
  std::ostringstream os;
  os << "seed,step,objective\n";
  os.precision(9);
  for (size_t s = 0; s < curves.size(); ++s)
    for (size_t t = 0; t < curves[s].size(); ++t) os << s << ',' << t << ',' << curves[s][t] << '\n';
  return os.str();
}

std::vector<double> baseline_command(const Config& cfg, const std::string& optimizer, double lr,
                                     int steps, const std::string& task_role, int seed_index) {
  BaselineSpec spec;
  if (!parse_baseline(optimizer, &spec.kind))
    throw ConfigError("optimizer '" + optimizer + "': allowed: " + kBaselineNames);
  if (!(lr > 0)) throw ConfigError("lr must be a positive number");
  if (steps < 1) throw ConfigError("steps must be >= 1, got " + std::to_string(steps));
  if (seed_index < 0) throw ConfigError("seed index must be >= 0, got " + std::to_string(seed_index));
  spec.lr = lr;
  spec.momentum = cfg.baselines.momentum;
  Task<float> task;
  if (task_role == "eval") {
    task = test_task(cfg, seed_index);
  } else if (task_role == "adapt") {
    task = adapt_task(cfg, AdaptSource::adapt, seed_index);
  } else if (task_role == "train") {
    if (cfg.train.tasks.empty())
      throw ConfigError(cfg.path + ": --task train needs a [[train.task]] in the config");
    TaskSpec s = cfg.train.tasks[0];
    s.seed += uint64_t(seed_index);
    task = sample_task<float>(s);
  } else {
    throw ConfigError("task '" + task_role + "': allowed: eval, adapt, train");
  }
  if ((spec.kind == BaselineKind::ista || spec.kind == BaselineKind::fista) && task.spec.family != Family::lasso)
    throw ConfigError(std::string("--optimizer ") + optimizer + ": needs a lasso task, but the " + task_role +
                      " task of " + cfg.path + " is " + family_name(task.spec.family));
  auto be = make_backend(cfg.run.backend);
  return be->run_baseline(spec, task, steps);
}

std::string baseline_csv(const std::vector<double>& curve) {
  std::ostringstream os;
  os.precision(9);
  os << "step,objective\n";
  for (size_t t = 0; t < curve.size(); ++t) os << t << ',' << curve[t] << '\n';
  return os.str();
}

}  // namespace ml2o
