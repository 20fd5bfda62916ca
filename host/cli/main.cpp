// ml2o command line. Exit codes: 0 success, 2 bad input (config, flags, files, an --out that is
// refused or in use), 3 I/O failure, 4 divergence, 130 / 143 interrupted by SIGINT / SIGTERM (run
// and train wrote a checkpoint: rerun with --resume), 1 anything else. See docs/reliability.md.
#include <omp.h>

#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>

#include "ml2o/backend.hpp"
#include "ml2o/commands.hpp"
#include "ml2o/config.hpp"
#include "ml2o/dist.hpp"
#include "ml2o/meta.hpp"
#include "ml2o/output_claim.hpp"
#include "ml2o/protocol.hpp"
#include "ml2o/signals.hpp"

namespace fs = std::filesystem;
using namespace ml2o;

namespace {

constexpr int kExitBadInput = 2, kExitIo = 3, kExitDiverged = 4;

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

// A finite number >= 0 (CLI::Range lets NaN through).
const CLI::Validator kNonNegative(
    [](std::string& in) -> std::string {
      char* end = nullptr;
      const double v = std::strtod(in.c_str(), &end);
      if (end == in.c_str() || *end != '\0' || !(v >= 0) || !std::isfinite(v))
        return "must be a number >= 0 (seconds), got '" + in + "'";
      return "";
    },
    "SECONDS");

const char* const kSubcommands[] = {"run", "sweep", "train", "adapt", "eval", "baseline", "info", "config-reference"};

// The first word that is not an option must name a subcommand; CLI11 alone only says that one is
// required. Returns the message, or "" when the command line is fine so far.
std::string unknown_subcommand(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads") {
      ++i;
      continue;
    }
    if (a.empty() || a[0] == '-') continue;
    for (const char* s : kSubcommands)
      if (a == s) return "";
    return "unknown subcommand '" + a + "'; the subcommands are: run, sweep, train, adapt, eval, baseline, info, config-reference";
  }
  return "";
}

// A command's every result is non-finite: a divergence (exit 4), not a success.
void require_some_finite(const std::vector<std::vector<double>>& curves, const std::string& what) {
  for (const auto& c : curves)
    if (!c.empty() && std::isfinite(c.back())) return;
  throw DivergenceError(what + " diverged: every final objective is non-finite (NaN or inf)");
}

// The command line as a user can paste it back into a shell (for messages only; ml2o itself
// never hands a string to a shell).
std::string join_args(int argc, char** argv) {
  std::string s = "ml2o";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool plain = !a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                         "0123456789-_./=:,+@%") == std::string::npos;
    std::string q = "'";
    for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    s += " " + (plain ? a : q + "'");
  }
  return s;
}

// "0,1,2" -> {0, 1, 2}; the seeds must be distinct integers in train.seed's range.
std::vector<uint64_t> parse_train_seeds(const std::string& text) {
  std::vector<uint64_t> seeds;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < 0 || v > 1000000)
      throw ConfigError("--train-seeds: '" + item + "' is not a meta-training seed; allowed: "
                        "comma-separated integers 0 to 1000000, e.g. 0,1,2");
    for (uint64_t s : seeds)
      if (s == uint64_t(v)) throw ConfigError("--train-seeds: seed " + item + " is given twice");
    seeds.push_back(uint64_t(v));
  }
  if (seeds.empty()) throw ConfigError("--train-seeds: give at least one seed, e.g. 0,1,2");
  return seeds;
}

int cmd_info() {
  const std::string cpu_backend = make_cpu_backend()->device();  // checks ML2O_CPU_UNROLL first
  std::cout << "ml2o " << engine_version() << "\n\nlearned optimizers (parameters):\n";
  for (Arch a : {Arch::rnnprop, Arch::dmlstm})
    std::cout << "  " << arch_name(a) << "  " << param_count(a) << "\n";
  std::cout << "\noptimizee families: " << kFamilyNames << " (mlp: cpu backend only)\n"
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

// Under mpirun every rank must run the same build, command and resolved config (exit 2 if not).
void require_same_start(const Config& cfg, int argc, char** argv) {
  std::string args;
  for (int i = 1; i < argc; ++i) args += std::string(argv[i]) + '\0';
  dist::require_same_everywhere(config_hash(cfg) ^ fnv1a64(args.data(), args.size()));
}

int cli_main(int argc, char** argv);

}  // namespace

// A distributed run ends together (MPI_Finalize) on success; a failing rank stops every rank with
// its exit code (MPI_Abort), so none is left waiting for it.
int main(int argc, char** argv) {
  dist::init(argc, argv);
  const int rc = cli_main(argc, argv);
  if (rc != 0 && dist::size() > 1) dist::abort_all(rc);
  dist::finalize();
  return rc;
}

namespace {

int cli_main(int argc, char** argv) {
  std::signal(SIGXFSZ, SIG_IGN);  // a file-size limit must surface as a write error, not a kill
  CLI::App app{"ml2o: meta-train learned optimizers (L2O, M-L2O) and evaluate them against classic "
               "ones.\nSee README.md and configs/README.md. `mpirun -np N ml2o run|train ...` "
               "spreads run and train over N processes with the same results (docs/distributed.md)."};
  app.require_subcommand(1);
  app.fallthrough();  // --threads may follow the subcommand
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
  run->add_option("--out", out_dir, "Output directory: new or empty, or this run's own with --resume (docs/reliability.md)")->required();
  run->add_flag("--resume", resume, "Continue an interrupted run in --out from its checkpoints");
  const auto backend_check = CLI::IsMember({"cpu", "cuda", "auto"});
  run->add_option("--backend", backend, "Override run.backend: cpu, cuda or auto")->check(backend_check);
  run->add_option("--checkpoint-every", ckpt_every, "Seconds between checkpoints during training (0: every meta-step)")
      ->check(kNonNegative);

  // sweep
  std::string sweep_config, train_seeds_s;
  auto* sweep = app.add_subcommand(
      "sweep", "Run a whole experiment once per meta-training seed (train.seed) into OUT/train-seed-<s>/, "
               "then aggregate: OUT/summary.json (train_seeds; per arm, K and source the mean, std, min "
               "and max of each metric across seeds), OUT/curves.csv, OUT/plot.png (bands across seeds)");
  sweep->add_option("config", sweep_config, "Experiment config (TOML)")->required()->check(CLI::ExistingFile);
  sweep->add_option("--train-seeds", train_seeds_s, "Comma-separated meta-training seeds, e.g. 0,1,2")->required();
  sweep->add_option("--out", out_dir, "Output directory (new, or an interrupted sweep's with --resume)")->required();
  sweep->add_flag("--resume", resume, "Continue an interrupted sweep: resumes each seed's run, starts the missing ones");
  sweep->add_option("--backend", backend, "Override run.backend: cpu, cuda or auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  sweep->add_option("--checkpoint-every", ckpt_every, "Seconds between checkpoints during training (0: every meta-step)")
      ->check(kNonNegative);

  auto* config_ref = app.add_subcommand(
      "config-reference", "Print the reference of every config key (markdown: section, key, type, "
                          "default, allowed values, meaning), as in configs/README.md");

  // train
  std::string config_path, method_s = "ml2o", init_path;
  auto* train_cmd = app.add_subcommand("train", "Meta-train one optimizer on the config's D_train; writes OUT/<method>.params");
  train_cmd->add_option("--config", config_path, "Experiment config (TOML)")->required()->check(CLI::ExistingFile);
  train_cmd->add_option("--method", method_s, "l2o (plain; transfer learning's pretraining) or ml2o")
      ->check(CLI::IsMember({"l2o", "ml2o"}));
  train_cmd->add_option("--init", init_path, "Start from these params instead of the random initialisation")
      ->check(CLI::ExistingFile);
  train_cmd->add_option("--out", out_dir, "Output directory: new or empty, or this training's own with --resume")->required();
  train_cmd->add_flag("--resume", resume, "Continue from OUT/checkpoints/<method>.ckpt");
  train_cmd->add_option("--backend", backend, "Override run.backend: cpu, cuda or auto")->check(backend_check);
  train_cmd->add_option("--checkpoint-every", ckpt_every, "Seconds between checkpoints (0: every meta-step)")
      ->check(kNonNegative);

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
  adapt_cmd->add_option("--out", out_file, "Adapted params file to write (must not exist)")->required();
  adapt_cmd->add_option("--backend", backend, "Override run.backend")->check(backend_check);

  // eval
  int eval_steps = 0;
  auto* eval_cmd = app.add_subcommand("eval", "Evaluate a saved optimizer with frozen weights on eval.task over the seeds; writes OUT/curves.csv");
  eval_cmd->add_option("--config", config_path, "Experiment config: eval.* settings and the task")->required()->check(CLI::ExistingFile);
  eval_cmd->add_option("--params", params_path, "Params file")->required()->check(CLI::ExistingFile);
  eval_cmd->add_option("--steps", eval_steps, "Override eval.steps")->check(CLI::Range(1, 100000000));
  eval_cmd->add_option("--out", out_dir, "Output directory (new or empty)")->required();
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
  base_cmd->add_option("--out", out_dir, "Output directory (new or empty)")->required();
  base_cmd->add_option("--backend", backend, "Override run.backend")->check(backend_check);

  if (const std::string bad = unknown_subcommand(argc, argv); !bad.empty()) {
    std::cerr << "ml2o: " << bad << "\nRun with --help for usage.\n";
    return kExitBadInput;
  }
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

  // Commands with a checkpoint finish their step and save it; the others stop at once, having
  // published nothing yet (their output appears only when complete).
  const bool checkpoints = *run || *train_cmd || *sweep;
  std::string resume_hint = join_args(argc, argv);
  if (checkpoints && !resume) resume_hint += " --resume";
  // A run saves its resolved config first: resuming from it works whatever the config's source.
  if (*run) resume_hint = "ml2o run " + (fs::path(out_dir) / "config.toml").string() + " --out " + out_dir + " --resume";
  install_interrupt_handlers(checkpoints ? OnInterrupt::finish_step_and_save : OnInterrupt::stop_now,
                             "\nml2o: interrupted; nothing was written. Rerun with: " + resume_hint + "\n");
  try {
    if (dist::size() > 1 && !*run && !*train_cmd)
      throw ConfigError(std::string("ml2o ") + app.get_subcommands().front()->get_name() + " runs in one "
                        "process; only run and train are distributed (docs/distributed.md)");
    if (*info) return cmd_info();
    ConfigOverrides overrides;
    overrides.backend = backend;
    if (*config_ref) {
      std::cout << config_reference_markdown();
      return 0;
    }
    if (*run) {
      const Config cfg = load_with_overrides(run_config, overrides);
      require_same_start(cfg, argc, argv);
      run_command(cfg, RunOptions{out_dir, resume, ckpt_every, "", overrides});
      return 0;
    }
    if (*sweep) {
      const std::vector<uint64_t> seeds = parse_train_seeds(train_seeds_s);
      const Config cfg = load_with_overrides(sweep_config, overrides);
      sweep_command(cfg, seeds, RunOptions{out_dir, resume, ckpt_every, "", overrides});
      return 0;
    }
    if (*train_cmd) {
      const Config cfg = load_with_overrides(config_path, overrides);
      require_same_start(cfg, argc, argv);
      LearnedOptimizer init;
      if (!init_path.empty()) init = load_params(init_path);
      train_command(cfg, method_s == "l2o" ? Method::l2o : Method::ml2o, init_path.empty() ? nullptr : &init,
                    RunOptions{out_dir, resume, ckpt_every, "", overrides});
      return 0;
    }
    if (*adapt_cmd) {
      const Config cfg = load_with_overrides(config_path, overrides);
      const LearnedOptimizer start = load_params(params_path);
      const OutputClaim claim = OutputClaim::file(out_file);
      const AdaptResult r = adapt_command(cfg, start, params_path, K,
                                          source_s == "test" ? AdaptSource::test : AdaptSource::adapt,
                                          seed_index);
      if (K > 0 && r.skipped == K)
        throw DivergenceError("adaptation diverged: all " + std::to_string(K) +
                              " updates were non-finite and skipped; lower adapt.lr (nothing was written)");
      claim.publish(params_to_bytes(r.opt));
      std::cerr << "[ml2o] adapted with K = " << K << " on " << source_s << " instances (seed index "
                << seed_index << "), " << r.skipped << " skipped updates; wrote " << out_file << "\n";
      return 0;
    }
    if (*eval_cmd) {
      const Config cfg = load_with_overrides(config_path, overrides);
      const LearnedOptimizer opt = load_params(params_path);
      const OutputClaim claim = OutputClaim::directory(out_dir, "eval", false, false);
      const auto curves = eval_command(cfg, opt, params_path, eval_steps);
      write_file_atomic((fs::path(out_dir) / "curves.csv").string(), eval_curves_csv(curves));
      const CurveStats cs = summarise_curves(curves);
      std::cerr << "[ml2o] eval over " << cfg.eval.seeds << " seeds: start " << cs.start_mean << ", final "
                << cs.final_mean << " +- " << cs.final_std << "; wrote " << out_dir << "/curves.csv\n";
      require_some_finite(curves, "evaluation");
      return 0;
    }
    if (*base_cmd) {
      const Config cfg = load_with_overrides(config_path, overrides);
      const OutputClaim claim = OutputClaim::directory(out_dir, "baseline", false, false);
      const auto curve = baseline_command(cfg, opt_s, lr, steps, task_role, seed_index);
      write_file_atomic((fs::path(out_dir) / "baseline.csv").string(), baseline_csv(curve));
      std::cerr << "[ml2o] " << opt_s << " for " << steps << " steps: " << curve.front() << " -> "
                << curve.back() << "; wrote " << out_dir << "/baseline.csv\n";
      require_some_finite({curve}, "the baseline " + opt_s);
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
    return interrupt_exit_code();
  } catch (const std::exception& e) {
    std::cerr << "ml2o: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace
