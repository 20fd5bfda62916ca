// A backend runs the float32 math of meta-training: unrolls with or without the meta-gradient,
// long forward-only evaluations, and the analytical baselines. The CPU reference is always there;
// the CUDA backend plugs in behind the same interface, and orchestration never sees the difference.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "ml2o/baselines.hpp"
#include "ml2o/lopt.hpp"
#include "ml2o/unroll.hpp"

namespace ml2o {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;    // "cpu" or "cuda"
  virtual std::string device() const = 0;  // human-readable device description

  // Advances traj by T steps of the learned optimizer; with a GradMode other than none also
  // returns d(meta-loss)/d(weights). step_loss has T + 1 entries (the objective before each step
  // and after the last). Deterministic: the same inputs give bit-identical outputs.
  virtual UnrollResult<float> unroll(const OptimizerHyper& hyper, const std::vector<float>& w,
                                     const Task<float>& task, Trajectory<float>& traj, int T,
                                     GradMode mode) = 0;

  // Runs an analytical optimizer from task.x0 for `steps` steps: steps + 1 mean objectives.
  virtual std::vector<double> run_baseline(const BaselineSpec& spec, const Task<float>& task,
                                           int steps) = 0;
};

std::unique_ptr<Backend> make_cpu_backend();
// "cpu", "cuda" or "auto" (cuda when a device is present, else cpu). Throws std::invalid_argument
// naming the allowed values, or std::runtime_error when cuda is asked for and unavailable.
std::unique_ptr<Backend> make_backend(const std::string& which);
bool cuda_available();  // built with CUDA and a device is present

}  // namespace ml2o
