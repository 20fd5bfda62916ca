#include "ml2o/protocol.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>

#include "ml2o/dist.hpp"
#include "ml2o/io.hpp"
#include "ml2o/seeds.hpp"
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

// ---- settings from the command line ------------------------------------------------------------------
void ConfigOverrides::apply(Config& cfg) const {
  if (!backend.empty()) {
    cfg.run.backend = backend;
    cfg.json["run"]["backend"] = backend;
  }
  if (train_seed) {
    cfg.train.seed = *train_seed;
    cfg.json["train"]["seed"] = *train_seed;
  }
}

std::string ConfigOverrides::describe() const {
  std::string d;
  if (!backend.empty()) d = "run.backend = \"" + backend + "\"";
  if (train_seed) d += (d.empty() ? "" : ", ") + std::string("train.seed = ") + std::to_string(*train_seed);
  return d;
}

// ---- tasks of the protocol -------------------------------------------------------------------------
Task<float> test_task(const Config& cfg, int seed_index) {
  return sample_task<float>(seed_offset_spec(cfg.eval.task, seed_index));
}

Task<float> adapt_task(const Config& cfg, AdaptSource source, int seed_index) {
  if (source == AdaptSource::test) return test_task(cfg, seed_index);
  return sample_task<float>(seed_offset_spec(cfg.adapt.task, seed_index));
}

std::vector<TaskSpec> in_distribution_specs(const Config& cfg) {
  std::vector<TaskSpec> specs;
  for (int s = 0; s < cfg.eval.seeds; ++s)
    for (size_t i = 0; i < cfg.train.tasks.size(); ++i)
      specs.push_back(in_distribution_spec(cfg.train.tasks[i], s, i));
  return specs;
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
    Config prev = parse_config(read_file(saved_cfg.string()), saved_cfg.string());
    opts.overrides.apply(prev);
    if (config_hash(prev) != config_hash(cfg))
      throw ConfigError(cfg.path + ": differs from the config this run was started with (" +
                        saved_cfg.string() + "); --resume needs the same settings: resume with ml2o run " +
                        saved_cfg.string() + " --out " + out.string() + " --resume");
  }  // which directories may hold a run at all is the CLI's output claim (output_claim.hpp)
  // The resolved config, whatever it came from (a file, a pipe, command-line overrides), so that
  // `ml2o run OUT/config.toml --out OUT --resume` always continues the run. Written first: a run
  // killed before it left at most an empty directory.
  fs::create_directories(out);
  if (!fs::exists(saved_cfg)) write_file_atomic(saved_cfg.string(), config_to_toml(cfg));
  fs::create_directories(out / "parts");
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
    for (int s = 0; s < cfg.eval.seeds; ++s) {
      const Task<float> t = test_task(cfg, s);
      test_.push_back(be.upload(t));
      test_mlp_.push_back(t.mlp);
    }
  }
  std::vector<const BackendTask*> test() const { return raw(test_); }
  // The mlp test task of seed s (null for other families).
  const MlpData* test_mlp(size_t s) const { return test_mlp_[s].get(); }
  bool mlp() const { return !test_mlp_.empty() && test_mlp_[0]; }
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
  std::vector<std::shared_ptr<const MlpData>> test_mlp_;
};

MlpPoint mlp_point(const MlpData& d, int step, const std::vector<float>& x) {
  const int64_t N = d.f.spec.instances;
  std::vector<double> loss(N), acc(N);
  mlp_evaluate(d.f, x.data(), loss.data(), acc.data());
  MlpPoint p{step, 0, 0};
  for (int64_t n = 0; n < N; ++n) {  // instance order: the same for any thread count
    p.train_loss += loss[n] / double(N);
    p.test_accuracy += acc[n] / double(N);
  }
  return p;
}

// Frozen weights on every seed's test instances; on an mlp test task, also the scores at the
// report steps.
void evaluate_arm(const Config& cfg, Backend& be, const ArmTasks& tasks,
                  const std::vector<LearnedOptimizer>& opts, ArmResult& r) {
  if (!tasks.mlp()) {
    r.curves = evaluate(be, opts, tasks.test(), cfg.eval.steps);
    return;
  }
  r.mlp.assign(cfg.eval.seeds, {});
  r.curves = evaluate(be, opts, tasks.test(), cfg.eval.steps, mlp_report_steps(cfg.eval),
                      [&](int step, size_t s, const std::vector<float>& x) {
                        r.mlp[s].push_back(mlp_point(*tasks.test_mlp(s), step, x));
                      });
}

// A learned arm: K adaptation steps from `start` on each seed's instances, then evaluation.
ArmResult adapted_arm(const Config& cfg, Backend& be, ArmTasks& tasks, const std::string& arm,
                      const LearnedOptimizer& start, int K, AdaptSource src) {
  ArmResult r{arm, adapt_source_name(src), "", K, {}, 0, {}};
  check_interrupt("arm " + arm);
  std::vector<LearnedOptimizer> adapted;
  for (AdaptResult& a : adapt(be, adapt_plan(cfg), start, tasks.adapt_on(src), K)) {
    r.skipped += a.skipped;
    adapted.push_back(std::move(a.opt));
  }
  check_interrupt("arm " + arm);
  evaluate_arm(cfg, be, tasks, adapted, r);
  return r;
}

// One baseline run as bytes for dist::shared_map: the curve (steps + 1 doubles), then on an mlp
// task (step, train_loss, test_accuracy) at each report step.
struct BaselineRun {
  std::vector<double> curve;
  std::vector<MlpPoint> mlp;
};
std::string run_bytes(const BaselineRun& run) {
  std::vector<double> flat = run.curve;
  for (const MlpPoint& m : run.mlp) flat.insert(flat.end(), {double(m.step), m.train_loss, m.test_accuracy});
  return std::string(reinterpret_cast<const char*>(flat.data()), flat.size() * sizeof(double));
}
BaselineRun run_of(const std::string& bytes, int steps) {
  std::vector<double> flat(bytes.size() / sizeof(double));
  std::memcpy(flat.data(), bytes.data(), flat.size() * sizeof(double));
  BaselineRun run;
  run.curve.assign(flat.begin(), flat.begin() + (steps + 1));
  for (size_t i = size_t(steps) + 1; i + 2 < flat.size(); i += 3)
    run.mlp.push_back({int(flat[i]), flat[i + 1], flat[i + 2]});
  return run;
}

// An analytical baseline over the learning-rate sweep, keeping the best final objective (on an mlp
// test task: the best final full training loss, the minibatch objective being noisy); curve i runs
// on task_of(i), i < count. The (lr, i) runs are shared between the ranks of a distributed run.
ArmResult baseline_arm(const Config& cfg, Backend& be, BaselineKind kind, const std::string& source,
                       int count, const std::function<Task<float>(int)>& task_of) {
  const std::string arm = baseline_name(kind);
  const bool has_lr = kind != BaselineKind::ista && kind != BaselineKind::fista;
  const std::vector<double> lrs = has_lr ? cfg.baselines.lrs : std::vector<double>{0.0};
  const int steps = cfg.eval.steps;
  auto spec_for = [&](double lr) {
    BaselineSpec spec;
    spec.kind = kind;
    spec.lr = lr;
    spec.momentum = cfg.baselines.momentum;
    return spec;
  };
  const std::vector<std::string> runs = dist::shared_map(int64_t(lrs.size()) * count, [&](int64_t i) {
    check_interrupt("baseline " + arm);
    const BaselineSpec spec = spec_for(lrs[i / count]);
    const Task<float> task = task_of(int(i % count));
    BaselineRun run;
    if (!task.mlp) {
      run.curve = be.run_baseline(spec, task, steps);
    } else {
      IterateSnapshots snaps{mlp_report_steps(cfg.eval), {}};
      run.curve = be.run_baseline(spec, task, steps, &snaps);
      for (size_t k = 0; k < snaps.steps.size(); ++k)
        run.mlp.push_back(mlp_point(*task.mlp, snaps.steps[k], snaps.x[k]));
    }
    return run_bytes(run);
  });
  ArmResult best{arm, source, "", 0, {}, 0, {}};
  double best_final = HUGE_VAL;
  std::string tried;
  for (size_t l = 0; l < lrs.size(); ++l) {
    const double lr = lrs[l];
    ArmResult r{arm, source, "", 0, {}, 0, {}};
    for (int i = 0; i < count; ++i) {
      BaselineRun run = run_of(runs[l * count + i], steps);
      r.curves.push_back(std::move(run.curve));
      if (!run.mlp.empty()) r.mlp.push_back(std::move(run.mlp));
    }
    const double fin = r.mlp.empty() ? summarise_curves(r.curves).final_mean
                                     : mean_mlp_points(r).back().train_loss;
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

// The mlp scores of an arm (mean over seeds at each report step), for summary.json.
nlohmann::json mlp_summary(const ArmResult& r) {
  nlohmann::json steps = nlohmann::json::array(), loss = nlohmann::json::array(),
                 acc = nlohmann::json::array();
  for (const MlpPoint& m : mean_mlp_points(r)) {
    steps.push_back(m.step);
    loss.push_back(std::isfinite(m.train_loss) ? nlohmann::json(m.train_loss) : nlohmann::json(nullptr));
    acc.push_back(m.test_accuracy);
  }
  return {{"steps", steps}, {"train_loss", loss}, {"test_accuracy", acc},
          {"final_train_loss", loss.back()}, {"final_test_accuracy", acc.back()}};
}

std::string mlp_csv(const std::vector<ArmResult>& results) {
  std::ostringstream csv;
  csv << "arm,K,source,seed,step,train_loss,test_accuracy\n";
  for (const auto& r : results)
    for (size_t s = 0; s < r.mlp.size(); ++s)
      for (const MlpPoint& m : r.mlp[s])
        csv << r.arm << ',' << r.K << ',' << r.source << ',' << s << ',' << m.step << ','
            << format_double_csv(m.train_loss) << ',' << format_double_csv(m.test_accuracy) << '\n';
  return csv.str();
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
  const bool mlp = !arms.empty() && arms[0].contains("mlp");
  if (mlp) {  // the objective is a minibatch loss: show the full-split scores beside it
    table << "arm                 K   source  final obj    train loss   test acc\n";
    for (const auto& a : arms) {
      char line[200];
      auto g = [](const nlohmann::json& v) { return v.is_null() ? std::string("-") : fmt_g(v.get<double>()); };
      std::snprintf(line, sizeof line, "%-19s %-3d %-7s %-12s %-12s %-12s\n",
                    a["arm"].get<std::string>().c_str(), a["K"].get<int>(),
                    a["source"].get<std::string>().c_str(), g(a["final_mean"]).c_str(),
                    g(a["mlp"]["final_train_loss"]).c_str(), g(a["mlp"]["final_test_accuracy"]).c_str());
      table << line;
    }
    return table.str();
  }
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

// Runs the jobs in order, each unless its part file holds its finished result (`count` curves of
// steps + 1 values).
// mlp_steps: an mlp test task's report steps, whose scores are kept in parts/*.mlp.csv beside each
// part; empty for other tasks.
std::vector<ArmResult> run_jobs(const fs::path& out, const std::vector<Job>& jobs, int count,
                                int steps, const std::vector<int>& mlp_steps, const std::string& what,
                                Progress& progress) {
  progress.stage(what + " (" + std::to_string(jobs.size()) + " arms x " + std::to_string(count) +
                 " instance sets)");
  std::vector<ArmResult> results;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const fs::path part = out / "parts" / part_name(jobs[j].arm, jobs[j].K, jobs[j].source);
    fs::path mlp_part = part;
    mlp_part.replace_extension(".mlp.csv");
    const bool mlp = !mlp_steps.empty();
    ArmResult r{jobs[j].arm, jobs[j].source, "", jobs[j].K, {}, 0, {}};
    bool done = false;  // rank 0 reads the parts; every rank skips the arms already done
    dist::on_root([&] {
      done = read_part(part, r, count, steps) && (!mlp || read_mlp_part(mlp_part, r, count, mlp_steps));
    });
    if (dist::broadcast(done ? "1" : "") != "1") {
      progress.update(jobs[j].arm + " K=" + std::to_string(jobs[j].K) + " source " + jobs[j].source,
                      double(j) / double(jobs.size()));
      r = jobs[j].fn();
      if (dist::root()) {
        if (mlp) write_mlp_part(mlp_part, r);  // first: a part without it is recomputed
        write_part(part, r);
      }
    }
    results.push_back(std::move(r));
  }
  progress.finish_line();
  return results;
}

// Every learned arm (or, without learned arms, every arm) ended non-finite on every seed: the
// run diverged. The outputs are kept as evidence, but this is no success.
void require_some_arm_finite(const std::vector<ArmResult>& results) {
  auto learned = [](const ArmResult& r) { return r.source != "-" || r.arm == "direct_transfer"; };
  const bool any_learned = std::any_of(results.begin(), results.end(), learned);
  for (const auto& r : results)
    if (learned(r) || !any_learned)
      for (const auto& c : r.curves)
        if (!c.empty() && std::isfinite(c.back())) return;
  throw DivergenceError(std::string("evaluation diverged: every ") + (any_learned ? "learned optimizer's" : "arm's") +
                        " final objective is non-finite (NaN or inf) on every seed; check eval.task "
                        "(e.g. x0_scale), adapt.lr and the training");
}

void require_capabilities(const Config& cfg, const Backend& be, Progress& progress) {
  const BackendCaps caps = be.caps();
  if (cfg.arms.ml2o && cfg.ml2o.meta_gradient == MetaGradient::second_order &&
      caps.hvp != HvpSupport::device)
    progress.line(std::string("note: backend ") + be.name() + " computes M-L2O's second-order "
                  "Hessian-vector products " + hvp_support_name(caps.hvp) + " (slow)");
}

}  // namespace

// Every mlp task's dataset is read (once, cached) before anything is written, so a missing or
// damaged file stops the run with its path and leaves no output directory behind.
void check_datasets(const Config& cfg) {
  std::vector<TaskSpec> specs = cfg.train.tasks;
  specs.push_back(cfg.adapt.task);
  specs.push_back(cfg.eval.task);
  for (const TaskSpec& s : specs)
    if (s.family == Family::mlp) make_mlp_data(s);
}

ProtocolResult run_protocol(const Config& cfg, const RunOptions& opts) {
  const fs::path out(opts.out_dir);
  check_fits_in_memory(cfg);
  check_datasets(cfg);
  auto backend = make_backend(cfg.run.backend, uses_mlp(cfg));
  Progress progress;
  dist::on_root([&] { claim_run_dir(cfg, opts); });
  if (dist::size() > 1) progress.line("distributed over " + std::to_string(dist::size()) + " processes");
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
                      ArmResult r{"direct_transfer", "-", "", 0, {}, 0, {}};
                      evaluate_arm(cfg, be, tasks, {l2o_opt}, r);
                      return r;
                    }});
  if (cfg.arms.baselines)
    for (BaselineKind kind : cfg.baselines.optimizers)
      jobs.push_back({baseline_name(kind), "-", 0, [&, kind] {
                        return baseline_arm(cfg, be, kind, "-", cfg.eval.seeds,
                                            [&](int s) { return test_task(cfg, s); });
                      }});

  const int seeds = cfg.eval.seeds, steps = cfg.eval.steps;
  ProtocolResult result;
  const std::vector<int> mlp_steps = tasks.mlp() ? mlp_report_steps(cfg.eval) : std::vector<int>{};
  result.arms = run_jobs(out, jobs, seeds, steps, mlp_steps, "adapt and evaluate", progress);

  // In distribution: the trained optimizers (frozen) and Adam on fresh instances of D_train, for
  // comparison with the test task. Source "train" names these parts.
  const bool trained_any = cfg.arms.direct_transfer || cfg.arms.transfer_learning || cfg.arms.ml2o;
  if (cfg.eval.in_distribution && trained_any) {
    std::vector<std::unique_ptr<BackendTask>> owned;
    std::vector<const BackendTask*> in_tasks;
    const std::vector<TaskSpec> specs = in_distribution_specs(cfg);
    for (const TaskSpec& spec : specs) {
      owned.push_back(be.upload(sample_task<float>(spec)));
      in_tasks.push_back(owned.back().get());
    }
    std::vector<Job> in_jobs;
    auto frozen = [&](const std::string& arm, const LearnedOptimizer* opt) {
      in_jobs.push_back({arm, "train", 0, [&, arm, opt] {
                           check_interrupt("in-distribution " + arm);
                           return ArmResult{arm, "train", "", 0, evaluate(be, {*opt}, in_tasks, steps), 0, {}};
                         }});
    };
    if (cfg.arms.direct_transfer || cfg.arms.transfer_learning) frozen("l2o", &l2o_opt);
    if (cfg.arms.ml2o) frozen("ml2o", &ml2o_opt);
    in_jobs.push_back({"adam", "train", 0, [&] {
                         return baseline_arm(cfg, be, BaselineKind::adam, "train", int(specs.size()),
                                             [&](int i) { return sample_task<float>(specs[i]); });
                       }});
    result.in_distribution = run_jobs(out, in_jobs, int(specs.size()), steps, {},
                                      "evaluate in distribution", progress);
  }
  if (!dist::root()) return result;  // rank 0 alone writes the outputs

  nlohmann::json arms = nlohmann::json::array();
  for (const auto& r : result.arms) {
    arms.push_back(arm_summary(r));
    if (!r.mlp.empty()) arms.back()["mlp"] = mlp_summary(r);
  }
  summary["arms"] = arms;
  write_file_atomic((out / "curves.csv").string(), curves_csv(result.arms));
  if (tasks.mlp()) write_file_atomic((out / "mlp_scores.csv").string(), mlp_csv(result.arms));
  write_plot(out, result.arms, cfg, progress, summary, PlotSpec::out_of_distribution(cfg));
  check_interrupt("the plot");  // gnuplot got the same Ctrl-C: resume redraws it
  std::string in_table;
  if (!result.in_distribution.empty()) {
    nlohmann::json in_arms = nlohmann::json::array();
    for (const auto& r : result.in_distribution) in_arms.push_back(arm_summary(r));
    nlohmann::json train_tasks = nlohmann::json::array();
    for (const TaskSpec& t : cfg.train.tasks) {
      nlohmann::json d = {{"family", family_name(t.family)}, {"dim", t.dim}};
      if (t.family == Family::lasso || t.family == Family::quadratic) d["sigma"] = t.sigma;
      if (t.family == Family::rastrigin) d["alpha"] = t.alpha;
      train_tasks.push_back(d);
    }
    summary["in_distribution"] = {
        {"what", "frozen trained optimizers and Adam (best lr of baselines.lrs) on fresh instances "
                 "of every training task; curves are per (evaluation seed, training task)"},
        {"train_tasks", train_tasks},
        {"curves", "curves_in_distribution.csv"},
        {"arms", in_arms}};
    write_file_atomic((out / "curves_in_distribution.csv").string(), curves_csv(result.in_distribution));
    write_plot(out, result.in_distribution, cfg, progress, summary, PlotSpec::in_distribution(cfg));
    check_interrupt("the plot");
    in_table = "\nin distribution (training tasks, frozen weights):\n" + results_table(in_arms);
  } else if (cfg.eval.in_distribution) {
    summary["in_distribution"] = {{"skipped", "no trained optimizer (arms.direct_transfer, "
                                              "arms.transfer_learning and arms.ml2o are off)"}};
  }
  summary["wall_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  write_file_atomic((out / "summary.json").string(), summary.dump(2) + "\n");
  progress.line("results in " + out.string() + " (curves.csv, summary.json, plot.png)\n" +
                results_table(arms) + in_table);
  require_some_arm_finite(result.arms);
  result.summary = std::move(summary);
  return result;
}

}  // namespace ml2o
