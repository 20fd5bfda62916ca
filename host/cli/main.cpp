// ml2o command line. Exit codes: 0 success, 2 bad input (config, flags, files), 3 I/O failure,
// 4 divergence, 130 interrupted (a checkpoint was written; rerun with --resume), 1 anything else.
#include <omp.h>

#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>

#include "ml2o/backend.hpp"
#include "ml2o/config.hpp"
#include "ml2o/meta.hpp"
#include "ml2o/protocol.hpp"

namespace fs = std::filesystem;
using namespace ml2o;

namespace {

constexpr int kExitBadInput = 2, kExitIo = 3, kExitDiverged = 4, kExitInterrupted = 130;

// A positive finite number, with a short message (CLI::PositiveNumber prints DBL_MAX).
const CLI::Validator kPositive(
    [](std::string& in) -> std::string {
      char* end = nullptr;
      const double v = std::strtod(in.c_str(), &end);
      if (end == in.c_str() || *end != '\0' || !(v > 0) || !std::isfinite(v))
        return "must be a positive number, got '" + in + "'";
      return "";
    },
    "POSITIVE");

void on_sigint(int) {
  g_interrupt_requested.store(true);
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C stops at once
}

// --out for a single-file or directory output: refuse to overwrite an earlier run's results.
void require_fresh_dir(const std::string& dir, bool resume) {
  if (fs::exists(dir) && !fs::is_directory(dir))
    throw ConfigError("--out " + dir + ": exists and is not a directory");
  (void)resume;
}

Config load_with_overrides(const std::string& path, const std::string& backend) {
  Config cfg = load_config(path);
  if (!backend.empty()) {
    cfg.run.backend = backend;
    cfg.json["run"]["backend"] = backend;
  }
  return cfg;
}

std::string csv_curve(const std::vector<std::vector<double>>& curves) {
  std::ostringstream os;
  os << "seed,step,objective\n";
  os.precision(9);
  for (size_t s = 0; s < curves.size(); ++s)
    for (size_t t = 0; t < curves[s].size(); ++t) os << s << ',' << t << ',' << curves[s][t] << '\n';
  return os.str();
}

int cmd_info() {
  const std::string cpu_backend = make_cpu_backend()->device();  // checks ML2O_CPU_UNROLL first
  std::cout << "ml2o " << engine_version() << "\n\nlearned optimizers (parameters):\n";
  for (Arch a : {Arch::rnnprop, Arch::dmlstm})
    std::cout << "  " << arch_name(a) << "  " << param_count(a) << "\n";
  std::cout << "\noptimizee families: " << kFamilyNames << "\n"
            << "analytical baselines: " << kBaselineNames << "\n"
            << "backends: cpu" << (cuda_available() ? ", cuda (device present)" :
#ifdef ML2O_HAVE_CUDA
                                                      ", cuda (built; no device visible)"
#else
                                                      " (built without CUDA)"
#endif
                                                      )
            << "\ncpu backend: " << cpu_backend
            << "\nOpenMP threads: " << omp_get_max_threads() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGXFSZ, SIG_IGN);  // a file-size limit must surface as a write error, not a kill
  CLI::App app{"ml2o: meta-train learned optimizers (L2O, M-L2O) and evaluate them against classic "
               "ones.\nSee README.md and configs/README.md."};
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads, "CPU threads (default: all cores); results do not depend on it")
      ->check(CLI::Range(1, 4096));

  auto* info = app.add_subcommand("info", "List optimizers with their parameter counts, families, backends");

  // run
  std::string run_config, out_dir, backend;
  bool resume = false;
  double ckpt_every = 30.0;
  auto* run = app.add_subcommand("run", "Run a whole experiment: pretraining (L2O, M-L2O), adaptation "
                                        "arms, evaluation, baselines; writes curves.csv, summary.json, plot.png");
  run->add_option("config", run_config, "Experiment config (TOML)")->required()->check(CLI::ExistingFile);
  run->add_option("--out", out_dir, "Output directory (new, or an interrupted run's with --resume)")->required();
  run->add_flag("--resume", resume, "Continue an interrupted run in --out from its checkpoints");
  const auto backend_check = CLI::IsMember({"cpu", "cuda", "auto"});
  run->add_option("--backend", backend, "Override run.backend: cpu, cuda or auto")->check(backend_check);
  run->add_option("--checkpoint-every", ckpt_every, "Seconds between checkpoints during training (0: every meta-step)")
      ->check(CLI::Range(0.0, 1e9));

  // train
  std::string config_path, method_s = "ml2o", init_path;
  auto* train_cmd = app.add_subcommand("train", "Meta-train one optimizer on the config's D_train; writes OUT/<method>.params");
  train_cmd->add_option("--config", config_path, "Experiment config (TOML)")->required()->check(CLI::ExistingFile);
  train_cmd->add_option("--method", method_s, "l2o (plain; transfer learning's pretraining) or ml2o")
      ->check(CLI::IsMember({"l2o", "ml2o"}));
  train_cmd->add_option("--init", init_path, "Start from these params instead of the random initialisation")
      ->check(CLI::ExistingFile);
  train_cmd->add_option("--out", out_dir, "Output directory")->required();
  train_cmd->add_flag("--resume", resume, "Continue from OUT/checkpoints/<method>.ckpt");
  train_cmd->add_option("--backend", backend, "Override run.backend: cpu, cuda or auto")->check(backend_check);
  train_cmd->add_option("--checkpoint-every", ckpt_every, "Seconds between checkpoints (0: every meta-step)")
      ->check(CLI::Range(0.0, 1e9));

  // adapt
  std::string params_path, source_s = "test", out_file;
  int K = 5, seed_index = 0;
  auto* adapt_cmd = app.add_subcommand("adapt", "Adapt a saved optimizer with K Adam updates on target instances");
  adapt_cmd->add_option("--config", config_path, "Experiment config: adapt.* settings and the task")->required()->check(CLI::ExistingFile);
  adapt_cmd->add_option("--params", params_path, "Params file to adapt")->required()->check(CLI::ExistingFile);
  adapt_cmd->add_option("--K", K, "Number of Adam updates (default 5)")->check(CLI::Range(0, 1000000));
  adapt_cmd->add_option("--source", source_s, "test: the eval.task instances; adapt: the adapt.task instances")
      ->check(CLI::IsMember({"test", "adapt"}));
  adapt_cmd->add_option("--seed-index", seed_index, "Which instance set (seed offset) to adapt on")->check(CLI::Range(0, 1000000));
  adapt_cmd->add_option("--out", out_file, "Adapted params file to write")->required();
  adapt_cmd->add_option("--backend", backend, "Override run.backend")->check(backend_check);

  // eval
  int eval_steps = 0;
  auto* eval_cmd = app.add_subcommand("eval", "Evaluate a saved optimizer with frozen weights on eval.task over the seeds; writes OUT/curves.csv");
  eval_cmd->add_option("--config", config_path, "Experiment config: eval.* settings and the task")->required()->check(CLI::ExistingFile);
  eval_cmd->add_option("--params", params_path, "Params file")->required()->check(CLI::ExistingFile);
  eval_cmd->add_option("--steps", eval_steps, "Override eval.steps")->check(CLI::Range(1, 100000000));
  eval_cmd->add_option("--out", out_dir, "Output directory")->required();
  eval_cmd->add_option("--backend", backend, "Override run.backend")->check(backend_check);

  // baseline
  std::string opt_s = "adam", task_role = "eval";
  double lr = 0.01;
  int steps = 1000;
  auto* base_cmd = app.add_subcommand("baseline", "Run an analytical optimizer on a task sampled from the config; writes OUT/baseline.csv");
  base_cmd->add_option("--config", config_path, "Experiment config")->required()->check(CLI::ExistingFile);
  base_cmd->add_option("--optimizer", opt_s, std::string("One of: ") + kBaselineNames)
      ->check(CLI::IsMember({"sgd", "momentum", "adam", "rmsprop", "ista", "fista"}));
  base_cmd->add_option("--lr", lr, "Learning rate (ignored by ista/fista: step 1/L)")->check(kPositive);
  base_cmd->add_option("--steps", steps, "Optimizer steps")->check(CLI::Range(1, 100000000));
  base_cmd->add_option("--task", task_role, "Which config task to sample: eval (default), adapt, or train (the first)")
      ->check(CLI::IsMember({"eval", "adapt", "train"}));
  base_cmd->add_option("--seed-index", seed_index, "Seed offset of the sampled task")->check(CLI::Range(0, 1000000));
  base_cmd->add_option("--out", out_dir, "Output directory")->required();
  base_cmd->add_option("--backend", backend, "Override run.backend")->check(backend_check);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "ml2o: " << e.what() << "\nRun with --help for usage.\n";
    return kExitBadInput;
  }
  if (threads > 0) omp_set_num_threads(threads);

  std::signal(SIGINT, on_sigint);
  std::string resume_hint;
  try {
    if (*info) return cmd_info();
    if (*run) {
      const Config cfg = load_with_overrides(run_config, backend);
      require_fresh_dir(out_dir, resume);
      RunOptions opts{out_dir, resume, ckpt_every, ""};
      resume_hint = "ml2o run " + run_config + " --out " + out_dir + " --resume";
      run_protocol(cfg, opts);
      return 0;
    }
    if (*train_cmd) {
      const Config cfg = load_with_overrides(config_path, backend);
      if (cfg.train.tasks.empty())
        throw ConfigError(cfg.path + ": key 'train.task': training needs at least one [[train.task]]");
      check_fits_in_memory(cfg);
      LearnedOptimizer init;
      if (!init_path.empty()) init = load_params(init_path);
      require_fresh_dir(out_dir, resume);
      const fs::path params = fs::path(out_dir) / (method_s + ".params");
      if (fs::exists(params) && !resume)
        throw ConfigError(params.string() + " exists; use --resume to continue that training or another --out");
      auto be = make_backend(cfg.run.backend);
      Progress progress;
      RunOptions opts{out_dir, resume, ckpt_every, ""};
      resume_hint = "ml2o train --config " + config_path + " --method " + method_s + " --out " + out_dir + " --resume";
      run_training(cfg, *be, method_s == "l2o" ? Method::l2o : Method::ml2o, opts, progress,
                   init_path.empty() ? nullptr : &init);
      return 0;
    }
    if (*adapt_cmd) {
      const Config cfg = load_with_overrides(config_path, backend);
      check_fits_in_memory(cfg);
      const LearnedOptimizer start = load_params(params_path);
      if (start.hyper.arch != cfg.optimizer.arch)
        throw ConfigError(params_path + ": params are " + arch_name(start.hyper.arch) + " but " + cfg.path +
                          " sets optimizer.arch = " + arch_name(cfg.optimizer.arch));
      auto be = make_backend(cfg.run.backend);
      const AdaptSource src = source_s == "test" ? AdaptSource::test : AdaptSource::adapt;
      const auto task = be->upload(adapt_task(cfg, src, seed_index));
      const AdaptResult r = adapt(*be, adapt_plan(cfg), start, {task.get()}, K).front();
      save_params(out_file, r.opt);
      std::cerr << "[ml2o] adapted with K = " << K << " on " << source_s << " instances (seed index "
                << seed_index << "), " << r.skipped << " skipped updates; wrote " << out_file << "\n";
      return 0;
    }
    if (*eval_cmd) {
      const Config cfg = load_with_overrides(config_path, backend);
      check_fits_in_memory(cfg);
      const LearnedOptimizer opt = load_params(params_path);
      auto be = make_backend(cfg.run.backend);
      const int n = eval_steps > 0 ? eval_steps : cfg.eval.steps;
      std::vector<std::unique_ptr<BackendTask>> tasks;
      std::vector<const BackendTask*> task_ptrs;
      for (int s = 0; s < cfg.eval.seeds; ++s) {
        tasks.push_back(be->upload(test_task(cfg, s)));
        task_ptrs.push_back(tasks.back().get());
      }
      const auto curves = evaluate(*be, {opt}, task_ptrs, n);
      fs::create_directories(out_dir);
      write_file_atomic((fs::path(out_dir) / "curves.csv").string(), csv_curve(curves));
      const CurveStats cs = summarise_curves(curves);
      std::cerr << "[ml2o] eval over " << cfg.eval.seeds << " seeds: start " << cs.start_mean << ", final "
                << cs.final_mean << " +- " << cs.final_std << "; wrote " << out_dir << "/curves.csv\n";
      return 0;
    }
    if (*base_cmd) {
      const Config cfg = load_with_overrides(config_path, backend);
      BaselineSpec spec;
      parse_baseline(opt_s, &spec.kind);
      spec.lr = lr;
      spec.momentum = cfg.baselines.momentum;
      Task<float> task;
      if (task_role == "eval") task = test_task(cfg, seed_index);
      else if (task_role == "adapt") task = adapt_task(cfg, AdaptSource::adapt, seed_index);
      else {
        if (cfg.train.tasks.empty())
          throw ConfigError(cfg.path + ": --task train needs a [[train.task]] in the config");
        TaskSpec s = cfg.train.tasks[0];
        s.seed += uint64_t(seed_index);
        task = sample_task<float>(s);
      }
      if ((spec.kind == BaselineKind::ista || spec.kind == BaselineKind::fista) && task.spec.family != Family::lasso)
        throw ConfigError(std::string("--optimizer ") + opt_s + ": needs a lasso task, but the " + task_role +
                          " task of " + cfg.path + " is " + family_name(task.spec.family));
      auto be = make_backend(cfg.run.backend);
      const auto curve = be->run_baseline(spec, task, steps);
      fs::create_directories(out_dir);
      std::ostringstream os;
      os.precision(9);
      os << "step,objective\n";
      for (size_t t = 0; t < curve.size(); ++t) os << t << ',' << curve[t] << '\n';
      write_file_atomic((fs::path(out_dir) / "baseline.csv").string(), os.str());
      std::cerr << "[ml2o] " << opt_s << " for " << steps << " steps: " << curve.front() << " -> "
                << curve.back() << "; wrote " << out_dir << "/baseline.csv\n";
      return 0;
    }
  } catch (const FormatError& e) {  // ConfigError too
    std::cerr << "ml2o: error: " << e.what() << "\n";
    return kExitBadInput;
  } catch (const std::invalid_argument& e) {
    std::cerr << "ml2o: error: " << e.what() << "\n";
    return kExitBadInput;
  } catch (const IoError& e) {
    std::cerr << "ml2o: I/O error: " << e.what() << "\n";
    return kExitIo;
  } catch (const fs::filesystem_error& e) {
    std::cerr << "ml2o: I/O error: " << e.what() << "\n";
    return kExitIo;
  } catch (const DivergenceError& e) {
    std::cerr << "ml2o: " << e.what() << "\n";
    return kExitDiverged;
  } catch (const Interrupted& e) {
    std::cerr << "\nml2o: " << e.what() << "\nresume with: " << resume_hint << "\n";
    return kExitInterrupted;
  } catch (const std::exception& e) {
    std::cerr << "ml2o: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
