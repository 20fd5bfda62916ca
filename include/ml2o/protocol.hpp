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
#pragma once
#include <atomic>
#include <cmath>
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

struct RunOptions {
  std::string out_dir;
  bool resume = false;
  double checkpoint_every_s = 30.0;  // 0: after every meta-step
  std::string command_line;          // how to resume, for messages
};

// Trains one method (creating or resuming <out>/checkpoints/<method>.ckpt) and writes
// <out>/<method>.params. `init` (optional) replaces the random initialisation.
TrainerState run_training(const Config& cfg, Backend& backend, Method method,
                          const RunOptions& opts, Progress& progress,
                          const LearnedOptimizer* init = nullptr);

// The whole protocol. Throws ConfigError / FormatError / IoError / Interrupted / DivergenceError.
void run_protocol(const Config& cfg, const RunOptions& opts);

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
