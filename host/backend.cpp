#include "ml2o/backend.hpp"

#include <stdexcept>

#ifdef ML2O_HAVE_CUDA
#include "ml2o/cuda_backend.hpp"
#endif

namespace ml2o {

namespace {

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  std::string device() const override { return "CPU reference (OpenMP)"; }
  UnrollResult<float> unroll(const OptimizerHyper& hyper, const std::vector<float>& w,
                             const Task<float>& task, Trajectory<float>& traj, int T,
                             GradMode mode) override {
    return unroll_cpu(hyper, w, view_of(task), traj, T, mode);
  }
  std::vector<double> run_baseline(const BaselineSpec& spec, const Task<float>& task,
                                   int steps) override {
    return run_baseline_cpu(spec, task, steps);
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

bool cuda_available() {
#ifdef ML2O_HAVE_CUDA
  return cuda_device_present();
#else
  return false;
#endif
}

std::unique_ptr<Backend> make_backend(const std::string& which) {
  if (which == "cpu") return make_cpu_backend();
  if (which == "cuda" || which == "auto") {
#ifdef ML2O_HAVE_CUDA
    if (cuda_device_present()) return make_cuda_backend();
    if (which == "cuda")
      throw std::invalid_argument("backend 'cuda' requested but no CUDA device is visible (allowed here: cpu, auto)");
#else
    if (which == "cuda")
      throw std::invalid_argument("backend 'cuda' requested but this build has no CUDA support "
                               "(configure with nvcc available and -DML2O_CUDA=ON)");
#endif
    return make_cpu_backend();
  }
  throw std::invalid_argument("unknown backend '" + which + "' (allowed: cpu, cuda, auto)");
}

}  // namespace ml2o
