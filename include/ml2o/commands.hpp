// The CLI's commands as functions, shared by the command line (host/cli/main.cpp, which writes
// the results of adapt, eval and baseline to files and prints one line) and the Python binding
// (python/, which returns them as Python objects). Each function does the command's checks and its
// computation; neither caller repeats them. run, sweep and train write their directory themselves and
// claim it first (output_claim.hpp: the same rules from Python as from the command line).
#pragma once
#include <string>
#include <vector>

#include "ml2o/config.hpp"
#include "ml2o/meta.hpp"
#include "ml2o/protocol.hpp"

namespace ml2o {

// The config with the command-line overrides applied (--backend, a sweep's train.seed).
Config load_with_overrides(const std::string& path, const ConfigOverrides& overrides);
// The same for a config given as TOML text (the binding's dicts); source names it in messages.
Config parse_with_overrides(const std::string& text, const std::string& source,
                            const ConfigOverrides& overrides);

// A saved optimizer under a config: refused (ConfigError naming `source`) unless its architecture
// is the config's; takes the config's optimizer.output_scale (params files do not record it).
LearnedOptimizer params_for(LearnedOptimizer opt, const std::string& source, const Config& cfg);

// `ml2o run`: the whole protocol into opts.out_dir.
ProtocolResult run_command(const Config& cfg, const RunOptions& opts);

// `ml2o sweep`: the protocol once per meta-training seed into opts.out_dir/train-seed-<s>/, then
// the aggregate (run_sweep).
void sweep_command(const Config& cfg, const std::vector<uint64_t>& train_seeds, const RunOptions& opts);

// `ml2o train`: trains `method` into out_dir (OUT/<method>.params, OUT/checkpoints/). `init`
// (optional; its architecture must be the config's) replaces the random initialisation.
TrainerState train_command(const Config& cfg, Method method, const LearnedOptimizer* init,
                           const RunOptions& opts);

// `ml2o adapt`: K Adam updates of `start` (read from params_source, named in messages) on the
// chosen instances (seed offset seed_index).
AdaptResult adapt_command(const Config& cfg, const LearnedOptimizer& start,
                          const std::string& params_source, int K, AdaptSource source,
                          int seed_index);

// `ml2o eval`: frozen weights (read from params_source) on eval.task for every seed; steps <= 0
// means eval.steps. Returns per seed steps + 1 mean objectives.
std::vector<std::vector<double>> eval_command(const Config& cfg, const LearnedOptimizer& opt,
                                              const std::string& params_source, int steps);
// eval's OUT/curves.csv text.
std::string eval_curves_csv(const std::vector<std::vector<double>>& curves);

// `ml2o baseline`: an analytical optimizer on the task of `task_role` (eval, adapt or train).
std::vector<double> baseline_command(const Config& cfg, const std::string& optimizer, double lr,
                                     int steps, const std::string& task_role, int seed_index);
// baseline's OUT/baseline.csv text.
std::string baseline_csv(const std::vector<double>& curve);

}  // namespace ml2o
