// The paper's protocol as one resumable run, and its stages as separate commands.
//
// Output directory layout:
//   config.toml            the config the run was started with (resume refuses another)
//   l2o.params ml2o.params pretrained optimizers (plain L2O on D_train = transfer learning's start,
//                          and M-L2O)
//   checkpoints/*.ckpt     full trainer state, written atomically
//   parts/*.csv            finished (arm, K, source) evaluations, so a resumed run skips them
//   curves.csv             arm,K,source,seed,step,objective (long format)
//   summary.json           per arm and K: final mean/std, objective at steps 10/100/1000, steps to
//                          10x and 100x below the start; the resolved config; engine version
//   plot.png (+ plot_K<k>.png, plot.gp, plot_data_K<k>.tsv)  log-scale objective vs step
//   plot_in_distribution.png (+ its .gp and data)  with eval.in_distribution: the trained
//                          optimizers and Adam on fresh instances of the training tasks
//   mlp test task only: mlp_scores.csv (arm,K,source,seed,step,train_loss,test_accuracy),
//                          parts/*.mlp.csv, plot_mlp.png (+ plot_mlp_data.tsv), and an "mlp"
//                          block per arm in summary.json (docs/mlp.md)
//
// `ml2o sweep` (run_sweep) runs the protocol once per meta-training seed into
// <out>/train-seed-<s>/ (each a run directory as above) and aggregates them into <out>/summary.json,
// <out>/curves.csv and <out>/plot.png (bands across the meta-training seeds).
#pragma once
#include <atomic>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ml2o/backend.hpp"
#include "ml2o/config.hpp"
#include "ml2o/meta.hpp"
#include "ml2o/progress.hpp"

namespace ml2o {

// Set by SIGINT: long loops finish the current step, checkpoint, and stop.
extern std::atomic<bool> g_interrupt_requested;

struct Interrupted : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Settings given on the command line instead of in the config file. They are applied to the
// loaded config and, on --resume, to the config saved in the run directory before the two are
// compared; the saved config.toml names them in a comment.
struct ConfigOverrides {
  std::string backend;                 // --backend (empty: the config's run.backend)
  std::optional<uint64_t> train_seed;  // set by `ml2o sweep` for each meta-training seed
  void apply(Config& cfg) const;
  std::string describe() const;        // "run.backend = \"cpu\", train.seed = 1", or ""
};

struct RunOptions {
  std::string out_dir;
  bool resume = false;
  double checkpoint_every_s = 30.0;  // 0: after every meta-step
  std::string command_line;          // how to resume, for messages
  ConfigOverrides overrides;         // already applied to the Config passed along
};

// An mlp test task's iterates scored at one step: the full training split's mean cross-entropy
// and the test split's accuracy, each the mean over the instances.
struct MlpPoint {
  int step = 0;
  double train_loss = 0, test_accuracy = 0;
};

// One arm's evaluation curves: an adapted or frozen learned optimizer, or a baseline.
struct ArmResult {
  std::string arm, source, note;
  int K = 0;
  std::vector<std::vector<double>> curves;  // per seed, steps + 1 objectives
  int64_t skipped = 0;
  std::vector<std::vector<MlpPoint>> mlp;   // mlp test task: per seed, at mlp_report_steps
};

// What a run wrote, in memory.
struct ProtocolResult {
  nlohmann::json summary;                  // summary.json
  std::vector<ArmResult> arms;             // on the test task (out of distribution)
  std::vector<ArmResult> in_distribution;  // on the training tasks; empty unless eval.in_distribution
};

// Trains one method (creating or resuming <out>/checkpoints/<method>.ckpt) and writes
// <out>/<method>.params. `init` (optional) replaces the random initialisation.
TrainerState run_training(const Config& cfg, Backend& backend, Method method,
                          const RunOptions& opts, Progress& progress,
                          const LearnedOptimizer* init = nullptr);

// The whole protocol. Throws ConfigError / FormatError / IoError / Interrupted / DivergenceError.
ProtocolResult run_protocol(const Config& cfg, const RunOptions& opts);

// The protocol once per meta-training seed (train.seed = s) into <out>/train-seed-<s>/, then the
// aggregate files in <out>. opts.resume resumes every seed's run (and starts the missing ones).
void run_sweep(const Config& cfg, const std::vector<uint64_t>& train_seeds, const RunOptions& opts);

// The aggregate summary of a sweep: per (arm, K, source) and each summary metric, the per-seed
// values and their mean, std (n - 1), min and max over the seeds where the metric is defined.
// runs[i] was run with train_seeds[i].
nlohmann::json aggregate_train_seeds(const std::vector<uint64_t>& train_seeds,
                                     const std::vector<ProtocolResult>& runs);

// The instances the in-distribution evaluation uses: for each evaluation seed s, every training
// task i drawn afresh (seeds.hpp, in_distribution_spec); seed-major.
std::vector<TaskSpec> in_distribution_specs(const Config& cfg);

uint64_t config_hash(const Config& cfg);

// Host memory, checked up front before a command allocates: every size that drives an allocation
// (instances x dim, trajectories, curriculum lengths, eval seeds x steps, baseline steps) is
// estimated from the config and refused (ConfigError with the estimate; exit 2) when it exceeds
// host_memory_limit_bytes(), the one limit. Device memory is checked by the CUDA backend before it
// allocates.
double host_memory_limit_bytes();  // 90% of the machine's physical memory
void require_host_memory(const std::string& source, double bytes, const std::string& what);
size_t estimate_host_bytes(const Config& cfg);  // the most `ml2o run` holds at once
void check_fits_in_memory(const Config& cfg);   // `ml2o run`: training, then the arms
void check_train_fits(const Config& cfg);
void check_adapt_fits(const Config& cfg);
void check_eval_fits(const Config& cfg, int64_t steps, const std::string& steps_source);
void check_baseline_fits(const Config& cfg, const TaskSpec& task, int64_t steps);
std::string engine_version();

// The settings of test-time adaptation, from the config's [adapt] and [train] sections.
AdaptPlan adapt_plan(const Config& cfg);

// Which instances an arm adapts on, and which it is tested on, for evaluation seed s.
Task<float> test_task(const Config& cfg, int seed_index);
Task<float> adapt_task(const Config& cfg, AdaptSource source, int seed_index);

// Curve summaries used by summary.json (and tested).
struct CurveStats {
  double start_mean = 0, final_mean = 0, final_std = 0;
  double at10 = NAN, at100 = NAN, at1000 = NAN;
  int64_t steps_to_10x = -1, steps_to_100x = -1;  // -1: never reached
};
CurveStats summarise_curves(const std::vector<std::vector<double>>& per_seed);

}  // namespace ml2o
