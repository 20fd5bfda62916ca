// The CLI's commands as functions (include/ml2o/commands.hpp): the checks and the computation of
// run, sweep, train, adapt, eval and baseline, shared by host/cli/main.cpp and the Python binding.
#include "ml2o/commands.hpp"

#include <filesystem>
#include <functional>
#include <optional>
#include <sstream>

#include "ml2o/dist.hpp"
#include "ml2o/output_claim.hpp"
#include "ml2o/progress.hpp"

namespace fs = std::filesystem;

namespace ml2o {

namespace {

// In a distributed run rank 0 alone claims the output directory (its lock would refuse the other
// ranks); a rank that fails stops every rank (host/cli/main.cpp).
std::optional<OutputClaim> claim_on_root(const std::function<OutputClaim()>& claim) {
  std::optional<OutputClaim> held;
  if (dist::root()) held.emplace(claim());
  return held;
}

void require_seed_index(int seed_index) {
  if (seed_index < 0) throw ConfigError("seed index must be >= 0, got " + std::to_string(seed_index));
}

}  // namespace

Config load_with_overrides(const std::string& path, const ConfigOverrides& overrides) {
  Config cfg = load_config(path);
  overrides.apply(cfg);
  return cfg;
}

Config parse_with_overrides(const std::string& text, const std::string& source,
                            const ConfigOverrides& overrides) {
  Config cfg = parse_config(text, source);
  overrides.apply(cfg);
  return cfg;
}

LearnedOptimizer params_for(LearnedOptimizer opt, const std::string& source, const Config& cfg) {
  if (opt.hyper.arch != cfg.optimizer.arch)
    throw ConfigError(source + ": params are " + arch_name(opt.hyper.arch) + " but " + cfg.path +
                      " sets optimizer.arch = " + arch_name(cfg.optimizer.arch));
  opt.hyper.output_scale = cfg.optimizer.output_scale;
  return opt;
}

ProtocolResult run_command(const Config& cfg, const RunOptions& opts) {
  check_fits_in_memory(cfg);
  const auto claim = claim_on_root([&] { return OutputClaim::directory(opts.out_dir, "run", true, opts.resume); });
  return run_protocol(cfg, opts);
}

void sweep_command(const Config& cfg, const std::vector<uint64_t>& train_seeds, const RunOptions& opts) {
  check_fits_in_memory(cfg);
  const OutputClaim claim = OutputClaim::directory(opts.out_dir, "sweep", true, opts.resume);
  run_sweep(cfg, train_seeds, opts);
}

TrainerState train_command(const Config& cfg, Method method, const LearnedOptimizer* init,
                           const RunOptions& opts) {
  if (cfg.train.tasks.empty())
    throw ConfigError(cfg.path + ": key 'train.task': training needs at least one [[train.task]]");
  check_train_fits(cfg);
  std::optional<LearnedOptimizer> start;
  if (init) start = params_for(*init, "--init", cfg);
  const std::string command = std::string("train ") + method_name(method);
  const auto claim = claim_on_root([&] { return OutputClaim::directory(opts.out_dir, command, true, opts.resume); });
  auto be = make_backend(cfg.run.backend, uses_mlp(cfg));
  Progress progress;
  return run_training(cfg, *be, method, opts, progress, start ? &*start : nullptr);
}

AdaptResult adapt_command(const Config& cfg, const LearnedOptimizer& start,
                          const std::string& params_source, int K, AdaptSource source,
                          int seed_index) {
  check_adapt_fits(cfg);
  const LearnedOptimizer opt = params_for(start, params_source, cfg);
  if (K < 0) throw ConfigError("K must be >= 0, got " + std::to_string(K));
  require_seed_index(seed_index);
  auto be = make_backend(cfg.run.backend, uses_mlp(cfg));
  const auto task = be->upload(adapt_task(cfg, source, seed_index));
  return adapt(*be, adapt_plan(cfg), opt, {task.get()}, K).front();
}

std::vector<std::vector<double>> eval_command(const Config& cfg, const LearnedOptimizer& opt,
                                              const std::string& params_source, int steps) {
  const int n = steps > 0 ? steps : cfg.eval.steps;
  check_eval_fits(cfg, n, steps > 0 ? "--steps" : "eval.steps");
  const LearnedOptimizer frozen = params_for(opt, params_source, cfg);
  auto be = make_backend(cfg.run.backend, uses_mlp(cfg));
  std::vector<std::unique_ptr<BackendTask>> tasks;
  std::vector<const BackendTask*> task_ptrs;
  for (int s = 0; s < cfg.eval.seeds; ++s) {
    tasks.push_back(be->upload(test_task(cfg, s)));
    task_ptrs.push_back(tasks.back().get());
  }
  return evaluate(*be, {frozen}, task_ptrs, n);
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
  require_seed_index(seed_index);
  spec.lr = lr;
  spec.momentum = cfg.baselines.momentum;
  TaskSpec task_spec;
  if (task_role == "eval") {
    task_spec = seed_offset_spec(cfg.eval.task, seed_index);
  } else if (task_role == "adapt") {
    task_spec = seed_offset_spec(cfg.adapt.task, seed_index);
  } else if (task_role == "train") {
    if (cfg.train.tasks.empty())
      throw ConfigError(cfg.path + ": --task train needs a [[train.task]] in the config");
    task_spec = cfg.train.tasks[0];
    task_spec.seed += uint64_t(seed_index);
  } else {
    throw ConfigError("task '" + task_role + "': allowed: eval, adapt, train");
  }
  if ((spec.kind == BaselineKind::ista || spec.kind == BaselineKind::fista) && task_spec.family != Family::lasso)
    throw ConfigError(std::string("--optimizer ") + optimizer + ": needs a lasso task, but the " + task_role +
                      " task of " + cfg.path + " is " + family_name(task_spec.family));
  check_baseline_fits(cfg, task_spec, steps);
  auto be = make_backend(cfg.run.backend, uses_mlp(cfg));
  return be->run_baseline(spec, sample_task<float>(task_spec), steps);
}

std::string baseline_csv(const std::vector<double>& curve) {
  std::ostringstream os;
  os.precision(9);
  os << "step,objective\n";
  for (size_t t = 0; t < curve.size(); ++t) os << t << ',' << curve[t] << '\n';
  return os.str();
}

}  // namespace ml2o
