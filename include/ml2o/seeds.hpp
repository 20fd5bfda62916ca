// Every seed of a run derives from run.seed, here and nowhere else, so that a run is reproduced by
// its config alone and two stages never share random draws by accident.
//
// Config defaults (a task table without `seed`; values kept below 2^63 so the resolved config can
// be written back as TOML integers):
//   eval.task            run.seed * 1000003 + 100000
//   adapt.task           run.seed * 1000003 + 200000      (when [adapt.task] is given)
//                        eval.task.seed + 1000            (when it is not: D_adapt = D_test's family)
//   train task i         run.seed * 1000003 + 300000 + 10000 * i   (i after sigma lists expand)
//   a table with `seed` s and a list of n sigmas: s, s + 1, ..., s + n - 1
// During a run (splitmix64 mixing of (base, role, a, b)); m = train.seed, the meta-training seed
// (0 by default; `ml2o sweep` runs several), which changes meta-training's randomness but not the
// instances the arms are tested on:
//   initial weights      derive_seed(run.seed, role::init, m)
//   vanilla arm's start  derive_seed(run.seed, role::vanilla_init, m)
//   training batch       derive_seed(task.seed, role::train_task, epoch, task index + 2^32 m)
//   evaluation batch     derive_seed(task.seed, role::train_eval, evaluation index,
//                                    1000 * batch + task index + 2^32 m)
//   evaluation seed s    eval.task.seed + s (the test instances), adapt.task.seed + s (D_adapt)
//   in-distribution      derive_seed(seed of training task i, role::in_distribution, s, i) for
//   evaluation seed s    (eval.in_distribution): fresh instances, independent of m like the test
#pragma once
#include <cstdint>

#include "ml2o/optimizee.hpp"

namespace ml2o {

uint64_t derive_seed(uint64_t base, uint64_t role, uint64_t a = 0, uint64_t b = 0);
namespace role {
constexpr uint64_t init = 1, train_task = 2, train_eval = 3, vanilla_init = 4, in_distribution = 5;
}

// Defaults of task tables without an explicit seed.
uint64_t default_eval_task_seed(uint64_t run_seed);
uint64_t default_adapt_task_seed(uint64_t run_seed);
uint64_t adapt_seed_from_eval(uint64_t eval_task_seed);
uint64_t default_train_task_seed(uint64_t run_seed, uint64_t task_index);
uint64_t sigma_list_seed(uint64_t table_seed, uint64_t sigma_index);

// Seeds of the learned optimizers' initial weights.
uint64_t init_weights_seed(uint64_t run_seed, uint64_t train_seed);
uint64_t vanilla_init_seed(uint64_t run_seed, uint64_t train_seed);

// The spec of a stage's task: `base` with its seed replaced.
TaskSpec training_batch_spec(const TaskSpec& base, int64_t epoch, uint64_t task_index,
                             uint64_t train_seed);
TaskSpec evaluation_batch_spec(const TaskSpec& base, uint64_t eval_index, int batch,
                               uint64_t task_index, uint64_t train_seed);
TaskSpec seed_offset_spec(const TaskSpec& base, int seed_index);  // eval/adapt seed s
TaskSpec in_distribution_spec(const TaskSpec& train_task, int seed_index, uint64_t task_index);

}  // namespace ml2o
