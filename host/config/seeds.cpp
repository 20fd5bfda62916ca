#include "ml2o/seeds.hpp"

namespace ml2o {

namespace {
constexpr uint64_t kSeedMul = 1000003;
constexpr uint64_t kSeedEval = 100000;
constexpr uint64_t kSeedAdapt = 200000;
constexpr uint64_t kSeedTrain = 300000;
constexpr uint64_t kSeedTrainStride = 10000;
constexpr uint64_t kAdaptFromEval = 1000;
constexpr uint64_t kSeedMask = (uint64_t{1} << 63) - 1;  // TOML integers are signed 64-bit

uint64_t below_2_63(uint64_t v) { return v & kSeedMask; }
}  // namespace

uint64_t derive_seed(uint64_t base, uint64_t role, uint64_t a, uint64_t b) {
  auto mix = [](uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  return mix(mix(mix(mix(base) ^ role) ^ a) ^ b);
}

uint64_t default_eval_task_seed(uint64_t run_seed) { return below_2_63(run_seed * kSeedMul + kSeedEval); }
uint64_t default_adapt_task_seed(uint64_t run_seed) { return below_2_63(run_seed * kSeedMul + kSeedAdapt); }
uint64_t adapt_seed_from_eval(uint64_t eval_task_seed) { return below_2_63(eval_task_seed + kAdaptFromEval); }
uint64_t default_train_task_seed(uint64_t run_seed, uint64_t task_index) {
  return below_2_63(run_seed * kSeedMul + kSeedTrain + kSeedTrainStride * task_index);
}
uint64_t sigma_list_seed(uint64_t table_seed, uint64_t sigma_index) {
  return below_2_63(table_seed + sigma_index);
}

uint64_t init_weights_seed(uint64_t run_seed, uint64_t train_seed) {
  return derive_seed(run_seed, role::init, train_seed);
}
uint64_t vanilla_init_seed(uint64_t run_seed, uint64_t train_seed) {
  return derive_seed(run_seed, role::vanilla_init, train_seed);
}

TaskSpec training_batch_spec(const TaskSpec& base, int64_t epoch, uint64_t task_index,
                             uint64_t train_seed) {
  TaskSpec s = base;
  s.seed = derive_seed(base.seed, role::train_task, uint64_t(epoch), task_index + (train_seed << 32));
  return s;
}

TaskSpec evaluation_batch_spec(const TaskSpec& base, uint64_t eval_index, int batch,
                               uint64_t task_index, uint64_t train_seed) {
  TaskSpec s = base;
  s.seed = derive_seed(base.seed, role::train_eval, eval_index,
                       uint64_t(batch) * 1000 + task_index + (train_seed << 32));
  return s;
}

TaskSpec in_distribution_spec(const TaskSpec& train_task, int seed_index, uint64_t task_index) {
  TaskSpec s = train_task;
  s.seed = below_2_63(derive_seed(train_task.seed, role::in_distribution, uint64_t(seed_index), task_index));
  return s;
}

TaskSpec seed_offset_spec(const TaskSpec& base, int seed_index) {
  TaskSpec s = base;
  s.seed += uint64_t(seed_index);
  return s;
}

}  // namespace ml2o
