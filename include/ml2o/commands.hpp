// The CLI's commands as functions, shared by the command line (host/cli/main.cpp, which writes
// their results to files and prints one line) and the Python binding (python/, which returns
// them as Python objects). Each function does the command's checks and its computation; neither
// caller repeats them.
#pragma once
#include <string>
#include <vector>

#include "ml2o/config.hpp"
#include "ml2o/meta.hpp"
#include "ml2o/protocol.hpp"

namespace ml2o {

// The config with --backend applied (empty: the config's run.backend).
Config load_with_overrides(const std::string& path, const std::string& backend);
// The same for a config given as TOML text (the binding's dicts); source names it in messages.
Config parse_with_overrides(const std::string& text, const std::string& source,
                            const std::string& backend);

// `ml2o run`: the whole protocol into opts.out_dir.
void run_command(const Config& cfg, const RunOptions& opts);

// `ml2o train`: trains `method` into out_dir (OUT/<method>.params, OUT/checkpoints/). `init`
// (optional) replaces the random initialisation.
TrainerState train_command(const Config& cfg, Method method, const LearnedOptimizer* init,
                           const RunOptions& opts);

// `ml2o adapt`: K Adam updates of `start` (read from params_source, named in messages) on the
// chosen instances (seed offset seed_index).
AdaptResult adapt_command(const Config& cfg, const LearnedOptimizer& start,
                          const std::string& params_source, int K, AdaptSource source,
                          int seed_index);

// `ml2o eval`: frozen weights on eval.task for every seed; steps <= 0 means eval.steps.
// Returns per seed steps + 1 mean objectives.
std::vector<std::vector<double>> eval_command(const Config& cfg, const LearnedOptimizer& opt,
                                              int steps);
// eval's OUT/curves.csv text.
std::string eval_curves_csv(const std::vector<std::vector<double>>& curves);

// `ml2o baseline`: an analytical optimizer on the task of `task_role` (eval, adapt or train).
std::vector<double> baseline_command(const Config& cfg, const std::string& optimizer, double lr,
                                     int steps, const std::string& task_role, int seed_index);
// baseline's OUT/baseline.csv text.
std::string baseline_csv(const std::vector<double>& curve);

}  // namespace ml2o
