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

namespace fs = std::filesystem;

namespace ml2o {

std::atomic<bool> g_interrupt_requested{false};

std::string engine_version() { return ML2O_VERSION; }

uint64_t config_hash(const Config& cfg) {
  const std::string s = cfg.json.dump();
  return fnv1a64(s.data(), s.size());
}

namespace {

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

std::string fmt_time(double s) {
  if (!(s >= 0) || !std::isfinite(s)) return "?";
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", int(s) / 3600, (int(s) % 3600) / 60);
  return buf;
}

std::string fmt_g(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

}  // namespace

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
  // Evaluation and adaptation hold one test and one adaptation task with their trajectories.
  const double arms = task_bytes(cfg.eval.task) + task_bytes(cfg.adapt.task) +
                      2 * traj_bytes(cfg.eval.task) + 2 * traj_bytes(cfg.adapt.task);
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

// ---- progress ------------------------------------------------------------------------------------
Progress::Progress(bool quiet) : tty_(::isatty(2)), quiet_(quiet), stage_start_(now_s()) {}

void Progress::stage(const std::string& name) {
  finish_line();
  stage_ = name;
  stage_start_ = now_s();
  last_print_ = -1e9;
  if (!quiet_) std::cerr << "[ml2o] " << name << std::endl;
}

void Progress::update(const std::string& text, double fraction) {
  if (quiet_) return;
  const double t = now_s();
  const double elapsed = t - stage_start_;
  std::string eta = "";
  if (fraction > 0 && fraction <= 1)
    eta = ", about " + fmt_time(elapsed / fraction - elapsed) + " left";
  const std::string msg = "[" + stage_ + "] " + text + " (" + fmt_time(elapsed) + eta + ")";
  if (tty_) {
    if (t - last_print_ < 0.2) return;
    std::cerr << "\r\033[K" << msg << std::flush;
  } else {
    if (t - last_print_ < 10.0) return;  // plain periodic lines in logs
    std::cerr << msg << std::endl;
  }
  last_print_ = t;
}

void Progress::line(const std::string& text) {
  finish_line();
  if (!quiet_) std::cerr << "[ml2o] " << text << std::endl;
}

void Progress::finish_line() {
  if (tty_ && !quiet_ && last_print_ > -1e9) std::cerr << "\r\033[K" << std::flush;
  last_print_ = -1e9;
}

// ---- tasks of the protocol -------------------------------------------------------------------------
Task<float> test_task(const Config& cfg, int seed_index) {
  TaskSpec s = cfg.eval.task;
  s.seed += uint64_t(seed_index);
  return sample_task<float>(s);
}

Task<float> adapt_task(const Config& cfg, AdaptSource source, int seed_index) {
  if (source == AdaptSource::test) return test_task(cfg, seed_index);
  TaskSpec s = cfg.adapt.task;
  s.seed += uint64_t(seed_index);
  return sample_task<float>(s);
}

// ---- training stage --------------------------------------------------------------------------------
TrainerState run_training(const Config& cfg, Backend& backend, Method method,
                          const RunOptions& opts, Progress& progress, const LearnedOptimizer* init) {
  const fs::path out(opts.out_dir);
  fs::create_directories(out / "checkpoints");
  const std::string ckpt = (out / "checkpoints" / (std::string(method_name(method)) + ".ckpt")).string();
  const uint64_t hash = config_hash(cfg) ^ uint64_t(method);
  TrainerState st;
  if (opts.resume && fs::exists(ckpt)) {
    st = trainer_from_bytes(read_file(ckpt), ckpt, hash);
    progress.line(std::string("resuming ") + method_name(method) + " training at epoch " +
                  std::to_string(st.epoch) + " from " + ckpt);
  } else {
    st = make_trainer(method, cfg.optimizer, derive_seed(cfg.run.seed, role::init));
    if (init) {
      if (init->hyper.arch != cfg.optimizer.arch)
        throw ConfigError(std::string("--init: params are ") + arch_name(init->hyper.arch) +
                          " but the config's optimizer.arch is " + arch_name(cfg.optimizer.arch));
      st.opt = *init;
    }
  }
  progress.stage(std::string("train ") + method_name(method));
  double last_ckpt = now_s();
  auto save = [&](const TrainerState& s) {
    write_file_atomic(ckpt, trainer_to_bytes(s, hash));
    last_ckpt = now_s();
  };
  TrainHooks hooks;
  hooks.progress = [&](const TrainerState& s, const std::string& status) {
    const double frac = double(s.epoch) / std::max(1, cfg.train.max_epochs);
    std::string text = "epoch " + std::to_string(s.epoch) + "/" + std::to_string(cfg.train.max_epochs) +
                       " stage " + std::to_string(s.stage) + " (" +
                       std::to_string(cfg.train.curriculum[s.stage]) + " steps)";
    if (!s.loss_history.empty()) text += " meta-loss " + fmt_g(s.loss_history.back());
    text += " evals " + std::to_string(s.eval_history.size());
    if (!s.eval_history.empty()) text += " last " + fmt_g(s.eval_history.back());
    if (s.skipped_steps) text += " skipped " + std::to_string(s.skipped_steps);
    if (!status.empty()) text += " [" + status + "]";
    progress.update(text, frac);
  };
  hooks.after_step = [&](const TrainerState& s) {
    const bool stop = g_interrupt_requested.load();
    if (stop || now_s() - last_ckpt >= opts.checkpoint_every_s) save(s);
    return !stop;
  };
  const bool done = train(cfg, backend, st, hooks);
  if (!done) {
    progress.finish_line();
    throw Interrupted("interrupted during " + std::string(method_name(method)) +
                      " training; checkpoint written to " + ckpt);
  }
  save(st);
  save_params((out / (std::string(method_name(method)) + ".params")).string(), st.opt);
  progress.line(std::string(method_name(method)) + " training finished: " + std::to_string(st.epoch) +
                " epochs, stage " + std::to_string(st.stage) + ", " +
                std::to_string(st.eval_history.size()) + " evaluations, " +
                std::to_string(st.skipped_steps) + " skipped steps");
  return st;
}

// ---- curve statistics --------------------------------------------------------------------------------
CurveStats summarise_curves(const std::vector<std::vector<double>>& per_seed) {
  CurveStats s;
  if (per_seed.empty()) return s;
  const size_t n = per_seed[0].size();
  std::vector<double> mean(n, 0.0);
  for (const auto& c : per_seed)
    for (size_t t = 0; t < n; ++t) mean[t] += c[t] / double(per_seed.size());
  double sq = 0;
  for (const auto& c : per_seed) sq += (c.back() - mean.back()) * (c.back() - mean.back());
  s.start_mean = mean[0];
  s.final_mean = mean.back();
  s.final_std = per_seed.size() > 1 ? std::sqrt(sq / double(per_seed.size() - 1)) : 0.0;
  if (n > 10) s.at10 = mean[10];
  if (n > 100) s.at100 = mean[100];
  if (n > 1000) s.at1000 = mean[1000];
  for (size_t t = 0; t < n; ++t) {
    if (s.steps_to_10x < 0 && mean[t] <= mean[0] / 10) s.steps_to_10x = int64_t(t);
    if (s.steps_to_100x < 0 && mean[t] <= mean[0] / 100) s.steps_to_100x = int64_t(t);
  }
  return s;
}

// ---- the protocol --------------------------------------------------------------------------------------
namespace {

struct ArmResult {
  std::string arm, source, note;
  int K = 0;
  std::vector<std::vector<double>> curves;  // per seed
  int64_t skipped = 0;
};

std::string part_name(const std::string& arm, int K, const std::string& source) {
  return arm + "__K" + std::to_string(K) + "__" + source + ".csv";
}

void write_part(const fs::path& path, const ArmResult& r) {
  std::ostringstream os;
  os.precision(9);
  os << "# note=" << r.note << " skipped=" << r.skipped << "\n";
  for (size_t s = 0; s < r.curves.size(); ++s)
    for (size_t t = 0; t < r.curves[s].size(); ++t) os << s << ',' << t << ',' << r.curves[s][t] << '\n';
  write_file_atomic(path.string(), os.str());
}

bool read_part(const fs::path& path, ArmResult& r, int seeds, int steps) {
  if (!fs::exists(path)) return false;
  std::istringstream in(read_file(path.string()));
  std::string line;
  std::getline(in, line);
  const auto np = line.find("note="), sp = line.rfind(" skipped=");
  if (np == std::string::npos || sp == std::string::npos)
    throw FormatError(path.string() + ": corrupt partial result (header)");
  r.note = line.substr(np + 5, sp - np - 5);
  r.skipped = std::stoll(line.substr(sp + 9));
  r.curves.assign(seeds, std::vector<double>(steps + 1, NAN));
  size_t rows = 0;
  while (std::getline(in, line)) {
    int s, t;
    double v;
    if (std::sscanf(line.c_str(), "%d,%d,%lf", &s, &t, &v) != 3 || s < 0 || s >= seeds || t < 0 ||
        t > steps)
      throw FormatError(path.string() + ": corrupt partial result (row '" + line + "')");
    r.curves[s][t] = v;
    ++rows;
  }
  if (rows != size_t(seeds) * (steps + 1))
    throw FormatError(path.string() + ": incomplete partial result; delete it to recompute");
  return true;
}

void check_interrupt(const std::string& where) {
  if (g_interrupt_requested.load()) throw Interrupted("interrupted during " + where);
}

std::string format_double_csv(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void write_plot(const fs::path& out, const std::vector<ArmResult>& results, const Config& cfg,
                Progress& progress, nlohmann::json& summary) {
  std::vector<int> Ks;
  for (int K : cfg.adapt.K)
    if (std::find(Ks.begin(), Ks.end(), K) == Ks.end()) Ks.push_back(K);
  if (Ks.empty()) Ks.push_back(0);
  std::ostringstream gp;
  gp << "# gnuplot script written by ml2o " << engine_version() << "; rerun: gnuplot plot.gp\n"
     << "set terminal pngcairo size 1100,700 noenhanced\nset logscale y\nset format y '%.0e'\n"
     << "set xlabel 'optimizee step'\nset ylabel 'mean objective (band: min-max over seeds)'\n"
     << "set key outside right\nset grid\n";
  std::vector<std::string> pngs;
  // Distinct colours; adaptation on D_adapt is dashed, so an arm and its @adapt twin pair up.
  static const char* kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
                                   "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#000000", "#aec7e8",
                                   "#393b79", "#637939", "#8c6d31", "#843c39"};
  for (int K : Ks) {
    // Arms that diverged (non-finite final objective) are left out of the picture, not the data.
    std::vector<const ArmResult*> shown;
    double lo = HUGE_VAL, start_hi = 0;
    for (const auto& r : results) {
      if (r.K != K && r.K != 0) continue;
      const CurveStats cs = summarise_curves(r.curves);
      if (!std::isfinite(cs.final_mean)) continue;
      shown.push_back(&r);
      start_hi = std::max(start_hi, cs.start_mean);
      for (const auto& c : r.curves)
        for (double v : c)
          if (v > 0 && std::isfinite(v)) lo = std::min(lo, v);
    }
    const std::string data = "plot_data_K" + std::to_string(K) + ".tsv";
    std::ostringstream ds;
    ds << "# step";
    for (auto* r : shown) ds << "\t" << r->arm << "@" << r->source << "_K" << r->K << "(mean,min,max)";
    ds << "\n";
    const size_t n = shown.empty() ? 0 : shown[0]->curves[0].size();
    for (size_t t = 0; t < n; ++t) {
      ds << t;
      for (auto* r : shown) {
        double mean = 0, mn = HUGE_VAL, mx = -HUGE_VAL;
        for (const auto& c : r->curves) {
          mean += c[t] / double(r->curves.size());
          mn = std::min(mn, c[t]);
          mx = std::max(mx, c[t]);
        }
        ds << '\t' << format_double_csv(mean) << '\t' << format_double_csv(mn) << '\t'
           << format_double_csv(mx);
      }
      ds << '\n';
    }
    write_file_atomic((out / data).string(), ds.str());
    const std::string png = "plot_K" + std::to_string(K) + ".png";
    pngs.push_back(png);
    gp << "set output '" << png << "'\nset title '" << cfg.run.name << ": " << family_name(cfg.eval.task.family)
       << " test, K = " << K << " adaptation steps (diverged arms omitted)'\n";
    if (std::isfinite(lo) && start_hi > 0)  // keep an arm that blows up from flattening the rest
      gp << "set yrange [" << format_double_csv(lo / 2) << ":" << format_double_csv(start_hi * 100) << "]\n";
    gp << "plot ";
    for (size_t i = 0; i < shown.size(); ++i) {
      const int col = 2 + 3 * int(i);
      const bool dashed = shown[i]->source == "adapt";
      const std::string colour = kColours[i % (sizeof(kColours) / sizeof(kColours[0]))];
      const std::string label = shown[i]->arm + (dashed ? "@adapt" : "");
      gp << (i ? ", \\\n  " : "") << "'" << data << "' using 1:" << col + 1 << ":" << col + 2
         << " with filledcurves fs transparent solid 0.12 lc rgb '" << colour << "' notitle, '"
         << data << "' using 1:" << col << " with lines lw 2 dt " << (dashed ? 2 : 1)
         << " lc rgb '" << colour << "' title '" << label << "'";
    }
    gp << "\n";
  }
  write_file_atomic((out / "plot.gp").string(), gp.str());
  const std::string cmd = "cd '" + out.string() + "' && gnuplot plot.gp 2>gnuplot.err";
  const int rc = std::system(cmd.c_str());
  if (rc == 0 && fs::exists(out / pngs[0])) {
    fs::copy_file(out / pngs[0], out / "plot.png", fs::copy_options::overwrite_existing);
    fs::remove(out / "gnuplot.err");
    summary["plot"] = "plot.png";
  } else {
    progress.line("warning: gnuplot failed or is missing (see gnuplot.err); plot data and plot.gp "
                  "are written, run 'gnuplot plot.gp' in the output directory after installing it");
    summary["plot"] = nullptr;
  }
}

}  // namespace

void run_protocol(const Config& cfg, const RunOptions& opts) {
  const fs::path out(opts.out_dir);
  check_fits_in_memory(cfg);
  auto backend = make_backend(cfg.run.backend);
  Progress progress;

  // The output directory belongs to one config: refuse to mix runs, keep earlier outputs intact.
  const fs::path saved_cfg = out / "config.toml";
  const std::string cfg_text = read_file(cfg.path);
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
  if (!fs::exists(saved_cfg)) write_file_atomic(saved_cfg.string(), cfg_text);
  progress.line("backend " + backend->name() + " (" + backend->device() + "), output " + out.string());

  const auto t0 = std::chrono::steady_clock::now();
  nlohmann::json summary;
  summary["engine"] = {{"name", "ml2o"}, {"version", engine_version()}};
  summary["backend"] = {{"name", backend->name()}, {"device", backend->device()}};
  summary["config"] = cfg.json;

  // Pretraining: plain L2O on D_train (transfer learning's start) and M-L2O.
  const bool need_l2o = cfg.arms.direct_transfer || cfg.arms.transfer_learning;
  LearnedOptimizer l2o_opt, ml2o_opt;
  RunOptions train_opts = opts;
  train_opts.resume = true;  // within one run directory, a checkpoint is always continued
  if (need_l2o) {
    const auto st = run_training(cfg, *backend, Method::l2o, train_opts, progress);
    l2o_opt = st.opt;
    summary["training"]["l2o"] = {{"epochs", st.epoch}, {"stage", st.stage},
                                  {"evaluations", st.eval_history}, {"meta_loss_per_epoch", st.loss_history},
                                  {"skipped_steps", st.skipped_steps}, {"params", "l2o.params"}};
  }
  if (cfg.arms.ml2o) {
    const auto st = run_training(cfg, *backend, Method::ml2o, train_opts, progress);
    ml2o_opt = st.opt;
    summary["training"]["ml2o"] = {{"epochs", st.epoch}, {"stage", st.stage},
                                   {"evaluations", st.eval_history}, {"meta_loss_per_epoch", st.loss_history},
                                   {"skipped_steps", st.skipped_steps}, {"params", "ml2o.params"}};
  }

  // Arms, each on the same test instances (seed s of eval.task).
  struct Job {
    std::string arm, source;
    int K;
    std::function<ArmResult()> fn;
  };
  std::vector<Job> jobs;
  const int seeds = cfg.eval.seeds, steps = cfg.eval.steps;
  auto adapted_arm = [&](const std::string& arm, const LearnedOptimizer& start, int K, AdaptSource src) {
    ArmResult r{arm, adapt_source_name(src), "", K, {}, 0};
    for (int s = 0; s < seeds; ++s) {
      check_interrupt("arm " + arm);
      const Task<float> test = test_task(cfg, s);
      const Task<float> adapt_on = src == AdaptSource::test ? test : adapt_task(cfg, src, s);
      const AdaptResult a = adapt(cfg, *backend, start, adapt_on, K);
      r.skipped += a.skipped;
      r.curves.push_back(evaluate(*backend, a.opt, test, steps));
    }
    return r;
  };
  const LearnedOptimizer vanilla_init =
      init_optimizer(cfg.optimizer, derive_seed(cfg.run.seed, role::vanilla_init));
  for (int K : cfg.adapt.K)
    for (AdaptSource src : cfg.adapt.sources) {
      if (cfg.arms.vanilla)
        jobs.push_back({"vanilla", adapt_source_name(src), K, [&, K, src] { return adapted_arm("vanilla", vanilla_init, K, src); }});
      if (cfg.arms.transfer_learning)
        jobs.push_back({"transfer_learning", adapt_source_name(src), K, [&, K, src] { return adapted_arm("transfer_learning", l2o_opt, K, src); }});
      if (cfg.arms.ml2o)
        jobs.push_back({"ml2o", adapt_source_name(src), K, [&, K, src] { return adapted_arm("ml2o", ml2o_opt, K, src); }});
    }
  if (cfg.arms.direct_transfer)
    jobs.push_back({"direct_transfer", "-", 0, [&] {
                      ArmResult r{"direct_transfer", "-", "", 0, {}, 0};
                      for (int s = 0; s < seeds; ++s) {
                        check_interrupt("arm direct_transfer");
                        r.curves.push_back(evaluate(*backend, l2o_opt, test_task(cfg, s), steps));
                      }
                      return r;
                    }});
  if (cfg.arms.baselines)
    for (BaselineKind kind : cfg.baselines.optimizers) {
      const std::string arm = baseline_name(kind);
      jobs.push_back({arm, "-", 0, [&, kind, arm] {
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
                          for (int s = 0; s < seeds; ++s) {
                            check_interrupt("baseline " + arm);
                            r.curves.push_back(backend->run_baseline(spec, test_task(cfg, s), steps));
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
                      }});
    }

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

  // curves.csv (long format) and summary.json.
  std::ostringstream csv;
  csv << "arm,K,source,seed,step,objective\n";
  nlohmann::json arms = nlohmann::json::array();
  for (const auto& r : results) {
    for (size_t s = 0; s < r.curves.size(); ++s)
      for (size_t t = 0; t < r.curves[s].size(); ++t)
        csv << r.arm << ',' << r.K << ',' << r.source << ',' << s << ',' << t << ','
            << format_double_csv(r.curves[s][t]) << '\n';
    const CurveStats cs = summarise_curves(r.curves);
    auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
    auto steps_or_null = [](int64_t v) { return v >= 0 ? nlohmann::json(v) : nlohmann::json(nullptr); };
    arms.push_back({{"arm", r.arm}, {"K", r.K}, {"source", r.source}, {"note", r.note},
                    {"seeds", r.curves.size()}, {"final_mean", num(cs.final_mean)},
                    {"final_std", num(cs.final_std)}, {"objective_at_step", {{"10", num(cs.at10)}, {"100", num(cs.at100)}, {"1000", num(cs.at1000)}}},
                    {"start_mean", num(cs.start_mean)},
                    {"steps_to_10x_below_start", steps_or_null(cs.steps_to_10x)},
                    {"steps_to_100x_below_start", steps_or_null(cs.steps_to_100x)},
                    {"skipped_adaptation_steps", r.skipped}});
  }
  summary["arms"] = arms;
  write_file_atomic((out / "curves.csv").string(), csv.str());
  write_plot(out, results, cfg, progress, summary);
  summary["wall_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  write_file_atomic((out / "summary.json").string(), summary.dump(2) + "\n");

  // A short table on stderr.
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
  progress.line("results in " + out.string() + " (curves.csv, summary.json, plot.png)\n" + table.str());
}

}  // namespace ml2o
