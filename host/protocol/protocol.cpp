#include "ml2o/protocol.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "ml2o/io.hpp"
#include "outputs.hpp"
#include "plot.hpp"

namespace fs = std::filesystem;

namespace ml2o {

std::atomic<bool> g_interrupt_requested{false};

std::string engine_version() { return ML2O_VERSION; }

uint64_t config_hash(const Config& cfg) {
  const std::string s = cfg.json.dump();
  return fnv1a64(s.data(), s.size());
}

// ---- memory --------------------------------------------------------------------------------------
size_t estimate_host_bytes(const Config& cfg) {
  auto task_bytes = [](const TaskSpec& t) {
    const double nd = double(t.instances) * t.dim;
    const bool matrix = t.family == Family::lasso || t.family == Family::quadratic;
    return (matrix ? nd * t.dim + nd : 0.0) * sizeof(float) + nd * sizeof(float);
  };
  auto traj_bytes = [](const TaskSpec& t) {
    return double(t.instances) * t.dim * (sizeof(float) + sizeof(CoordState<float>));
  };
  // Training holds every task, its trajectory, and a working copy of the trajectory.
  double train = 0;
  for (const TaskSpec& t : cfg.train.tasks) train += task_bytes(t) + 2 * traj_bytes(t);
  // The arms hold every seed's test and adaptation tasks, each with two trajectories.
  const double arms = cfg.eval.seeds * (task_bytes(cfg.eval.task) + task_bytes(cfg.adapt.task) +
                                        2 * traj_bytes(cfg.eval.task) + 2 * traj_bytes(cfg.adapt.task));
  return size_t(std::max(train, arms));
}

void check_fits_in_memory(const Config& cfg) {
  const double need = double(estimate_host_bytes(cfg));
  const double have = double(::sysconf(_SC_PHYS_PAGES)) * double(::sysconf(_SC_PAGESIZE));
  if (have > 0 && need > 0.9 * have) {
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "the tasks and trajectories need about %.2f GiB of host memory at once, but this "
                  "machine has %.2f GiB; lower the instances or dim of the tasks",
                  need / 1073741824.0, have / 1073741824.0);
    throw ConfigError(cfg.path + ": " + buf);
  }
}

// ---- tasks of the protocol -------------------------------------------------------------------------
Task<float> test_task(const Config& cfg, int seed_index) {
  return sample_task<float>(seed_offset_spec(cfg.eval.task, seed_index));
}

Task<float> adapt_task(const Config& cfg, AdaptSource source, int seed_index) {
  if (source == AdaptSource::test) return test_task(cfg, seed_index);
  return sample_task<float>(seed_offset_spec(cfg.adapt.task, seed_index));
}

AdaptPlan adapt_plan(const Config& cfg) {
  return AdaptPlan{AdamHyper{cfg.adapt.lr, cfg.train.beta1, cfg.train.beta2, cfg.train.eps},
                   cfg.adapt.unroll, cfg.adapt.trajectory, cfg.train.grad_mode};
}

// ---- the protocol --------------------------------------------------------------------------------------
namespace {

void check_interrupt(const std::string& where) {
  if (g_interrupt_requested.load()) throw Interrupted("interrupted during " + where);
}

// The output directory belongs to one config: refuse to mix runs, keep earlier outputs intact.
void claim_run_dir(const Config& cfg, const RunOptions& opts) {
  const fs::path out(opts.out_dir);
  const fs::path saved_cfg = out / "config.toml";
  if (fs::exists(out) && !fs::is_directory(out))
    throw IoError(out.string() + " exists and is not a directory");
  if (fs::exists(saved_cfg)) {
    if (!opts.resume)
      throw ConfigError(out.string() + " already holds a run; resume it with --resume, or choose "
                        "another --out (nothing was changed)");
    const Config prev = parse_config(read_file(saved_cfg.string()), saved_cfg.string());
    if (config_hash(prev) != config_hash(cfg))
      throw ConfigError(cfg.path + ": differs from the config this run was started with (" +
                        saved_cfg.string() + "); --resume needs the same settings");
  } else if (fs::exists(out) && !fs::is_empty(out) && !opts.resume) {
    throw ConfigError(out.string() + " is not empty and holds no ml2o run; choose another --out");
  }
  fs::create_directories(out / "parts");
  if (!fs::exists(saved_cfg)) write_file_atomic(saved_cfg.string(), cfg.text);
}

nlohmann::json training_summary(const TrainerState& st, const std::string& params) {
  return {{"epochs", st.epoch}, {"stage", st.stage}, {"evaluations", st.eval_history},
          {"meta_loss_per_epoch", st.loss_history}, {"skipped_steps", st.skipped_steps},
          {"params", params}};
}

// The instances every arm is tested on (seed s of eval.task), and those it adapts on, uploaded
// once for all arms.
class ArmTasks {
 public:
  ArmTasks(const Config& cfg, Backend& be) : cfg_(cfg), be_(be) {
    for (int s = 0; s < cfg.eval.seeds; ++s) test_.push_back(be.upload(test_task(cfg, s)));
  }
  std::vector<const BackendTask*> test() const { return raw(test_); }
  std::vector<const BackendTask*> adapt_on(AdaptSource src) {
    if (src == AdaptSource::test) return test();
    if (adapt_.empty())
      for (int s = 0; s < cfg_.eval.seeds; ++s) adapt_.push_back(be_.upload(adapt_task(cfg_, src, s)));
    return raw(adapt_);
  }

 private:
  static std::vector<const BackendTask*> raw(const std::vector<std::unique_ptr<BackendTask>>& v) {
    std::vector<const BackendTask*> out;
    for (const auto& t : v) out.push_back(t.get());
    return out;
  }
  const Config& cfg_;
  Backend& be_;
  std::vector<std::unique_ptr<BackendTask>> test_, adapt_;
};

// A learned arm: K adaptation steps from `start` on each seed's instances, then evaluation.
ArmResult adapted_arm(const Config& cfg, Backend& be, ArmTasks& tasks, const std::string& arm,
                      const LearnedOptimizer& start, int K, AdaptSource src) {
  ArmResult r{arm, adapt_source_name(src), "", K, {}, 0};
  check_interrupt("arm " + arm);
  std::vector<LearnedOptimizer> adapted;
  for (AdaptResult& a : adapt(be, adapt_plan(cfg), start, tasks.adapt_on(src), K)) {
    r.skipped += a.skipped;
    adapted.push_back(std::move(a.opt));
  }
  check_interrupt("arm " + arm);
  r.curves = evaluate(be, adapted, tasks.test(), cfg.eval.steps);
  return r;
}

// An analytical baseline over the learning-rate sweep, keeping the best final objective.
ArmResult baseline_arm(const Config& cfg, Backend& be, BaselineKind kind) {
  const std::string arm = baseline_name(kind);
  const bool has_lr = kind != BaselineKind::ista && kind != BaselineKind::fista;
  const std::vector<double> lrs = has_lr ? cfg.baselines.lrs : std::vector<double>{0.0};
  ArmResult best{arm, "-", "", 0, {}, 0};
  double best_final = HUGE_VAL;
  std::string tried;
  for (double lr : lrs) {
    ArmResult r{arm, "-", "", 0, {}, 0};
    BaselineSpec spec;
    spec.kind = kind;
    spec.lr = lr;
    spec.momentum = cfg.baselines.momentum;
    for (int s = 0; s < cfg.eval.seeds; ++s) {
      check_interrupt("baseline " + arm);
      r.curves.push_back(be.run_baseline(spec, test_task(cfg, s), cfg.eval.steps));
    }
    const double fin = summarise_curves(r.curves).final_mean;
    if (has_lr) tried += (tried.empty() ? "" : ";") + fmt_g(lr) + ":" + fmt_g(fin);
    if (std::isfinite(fin) && (fin < best_final || best.curves.empty())) {
      best_final = fin;
      best = r;
      best.note = has_lr ? "lr=" + fmt_g(lr) : "step=1/L";
    }
    if (best.curves.empty()) best = r;  // every lr diverged: keep the evidence
  }
  if (has_lr) best.note += " (swept " + tried + ")";
  return best;
}

struct Job {
  std::string arm, source;
  int K;
  std::function<ArmResult()> fn;
};

nlohmann::json arm_summary(const ArmResult& r) {
  const CurveStats cs = summarise_curves(r.curves);
  auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
  auto steps_or_null = [](int64_t v) { return v >= 0 ? nlohmann::json(v) : nlohmann::json(nullptr); };
  return {{"arm", r.arm}, {"K", r.K}, {"source", r.source}, {"note", r.note},
          {"seeds", r.curves.size()}, {"final_mean", num(cs.final_mean)},
          {"final_std", num(cs.final_std)},
          {"objective_at_step", {{"10", num(cs.at10)}, {"100", num(cs.at100)}, {"1000", num(cs.at1000)}}},
          {"start_mean", num(cs.start_mean)},
          {"steps_to_10x_below_start", steps_or_null(cs.steps_to_10x)},
          {"steps_to_100x_below_start", steps_or_null(cs.steps_to_100x)},
          {"skipped_adaptation_steps", r.skipped}};
}

std::string curves_csv(const std::vector<ArmResult>& results) {
  std::ostringstream csv;
  csv << "arm,K,source,seed,step,objective\n";
  for (const auto& r : results)
    for (size_t s = 0; s < r.curves.size(); ++s)
      for (size_t t = 0; t < r.curves[s].size(); ++t)
        csv << r.arm << ',' << r.K << ',' << r.source << ',' << s << ',' << t << ','
            << format_double_csv(r.curves[s][t]) << '\n';
  return csv.str();
}

std::string results_table(const nlohmann::json& arms) {
  std::ostringstream table;
  table << "arm                 K   source  final mean     final std    @100         @1000\n";
  for (const auto& a : arms) {
    char line[200];
    auto g = [](const nlohmann::json& v) { return v.is_null() ? std::string("-") : fmt_g(v.get<double>()); };
    std::snprintf(line, sizeof line, "%-19s %-3d %-7s %-12s %-12s %-12s %-12s\n",
                  a["arm"].get<std::string>().c_str(), a["K"].get<int>(), a["source"].get<std::string>().c_str(),
                  g(a["final_mean"]).c_str(), g(a["final_std"]).c_str(), g(a["objective_at_step"]["100"]).c_str(),
                  g(a["objective_at_step"]["1000"]).c_str());
    table << line;
  }
  return table.str();
}

void require_capabilities(const Config& cfg, const Backend& be, Progress& progress) {
  const BackendCaps caps = be.caps();
  if (cfg.arms.ml2o && cfg.ml2o.meta_gradient == MetaGradient::second_order &&
      caps.hvp != HvpSupport::device)
    progress.line(std::string("note: backend ") + be.name() + " computes M-L2O's second-order "
                  "Hessian-vector products " + hvp_support_name(caps.hvp) + " (slow)");
}

}  // namespace

void run_protocol(const Config& cfg, const RunOptions& opts) {
  const fs::path out(opts.out_dir);
  check_fits_in_memory(cfg);
  auto backend = make_backend(cfg.run.backend);
  Progress progress;
  claim_run_dir(cfg, opts);
  progress.line("backend " + backend->name() + " (" + backend->device() + "), output " + out.string());
  require_capabilities(cfg, *backend, progress);

  const auto t0 = std::chrono::steady_clock::now();
  nlohmann::json summary;
  summary["engine"] = {{"name", "ml2o"}, {"version", engine_version()}};
  summary["backend"] = {{"name", backend->name()}, {"device", backend->device()}};
  summary["config"] = cfg.json;

  // Pretraining: plain L2O on D_train (transfer learning's start) and M-L2O.
  LearnedOptimizer l2o_opt, ml2o_opt;
  RunOptions train_opts = opts;
  train_opts.resume = true;  // within one run directory, a checkpoint is always continued
  if (cfg.arms.direct_transfer || cfg.arms.transfer_learning) {
    const auto st = run_training(cfg, *backend, Method::l2o, train_opts, progress);
    l2o_opt = st.opt;
    summary["training"]["l2o"] = training_summary(st, "l2o.params");
  }
  if (cfg.arms.ml2o) {
    const auto st = run_training(cfg, *backend, Method::ml2o, train_opts, progress);
    ml2o_opt = st.opt;
    summary["training"]["ml2o"] = training_summary(st, "ml2o.params");
  }

  // Arms, each on the same test instances (seed s of eval.task).
  ArmTasks tasks(cfg, *backend);
  Backend& be = *backend;
  std::vector<Job> jobs;
  const LearnedOptimizer vanilla_init =
      init_optimizer(cfg.optimizer, vanilla_init_seed(cfg.run.seed, cfg.train.seed));
  for (int K : cfg.adapt.K)
    for (AdaptSource src : cfg.adapt.sources) {
      const std::string source = adapt_source_name(src);
      if (cfg.arms.vanilla)
        jobs.push_back({"vanilla", source, K, [&, K, src] { return adapted_arm(cfg, be, tasks, "vanilla", vanilla_init, K, src); }});
      if (cfg.arms.transfer_learning)
        jobs.push_back({"transfer_learning", source, K, [&, K, src] { return adapted_arm(cfg, be, tasks, "transfer_learning", l2o_opt, K, src); }});
      if (cfg.arms.ml2o)
        jobs.push_back({"ml2o", source, K, [&, K, src] { return adapted_arm(cfg, be, tasks, "ml2o", ml2o_opt, K, src); }});
    }
  if (cfg.arms.direct_transfer)
    jobs.push_back({"direct_transfer", "-", 0, [&] {
                      check_interrupt("arm direct_transfer");
                      return ArmResult{"direct_transfer", "-", "", 0, evaluate(be, {l2o_opt}, tasks.test(), cfg.eval.steps), 0};
                    }});
  if (cfg.arms.baselines)
    for (BaselineKind kind : cfg.baselines.optimizers)
      jobs.push_back({baseline_name(kind), "-", 0, [&, kind] { return baseline_arm(cfg, be, kind); }});

  const int seeds = cfg.eval.seeds, steps = cfg.eval.steps;
  progress.stage("adapt and evaluate (" + std::to_string(jobs.size()) + " arms x " +
                 std::to_string(seeds) + " seeds)");
  std::vector<ArmResult> results;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const fs::path part = out / "parts" / part_name(jobs[j].arm, jobs[j].K, jobs[j].source);
    ArmResult r{jobs[j].arm, jobs[j].source, "", jobs[j].K, {}, 0};
    if (!read_part(part, r, seeds, steps)) {
      progress.update(jobs[j].arm + " K=" + std::to_string(jobs[j].K) + " source " + jobs[j].source,
                      double(j) / double(jobs.size()));
      r = jobs[j].fn();
      write_part(part, r);
    }
    results.push_back(std::move(r));
  }
  progress.finish_line();

  nlohmann::json arms = nlohmann::json::array();
  for (const auto& r : results) arms.push_back(arm_summary(r));
  summary["arms"] = arms;
  write_file_atomic((out / "curves.csv").string(), curves_csv(results));
  write_plot(out, results, cfg, progress, summary);
  summary["wall_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  write_file_atomic((out / "summary.json").string(), summary.dump(2) + "\n");
  progress.line("results in " + out.string() + " (curves.csv, summary.json, plot.png)\n" + results_table(arms));
}

}  // namespace ml2o
