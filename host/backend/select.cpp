// Choosing a backend, and the host-data conveniences every backend shares.
#include <stdexcept>

#include "ml2o/backend.hpp"
#include "ml2o/dist.hpp"

#ifdef ML2O_HAVE_CUDA
#include "ml2o/cuda_backend.hpp"
#endif

namespace ml2o {

const char* hvp_support_name(HvpSupport h) {
  return h == HvpSupport::device ? "on the backend" : "on the CPU (Dual<double> reference)";
}

bool cuda_available() {
#ifdef ML2O_HAVE_CUDA
  return cuda_device_present();
#else
  return false;
#endif
}

std::unique_ptr<Backend> make_backend(const std::string& which, bool mlp) {
  if (which == "cpu" || (mlp && which == "auto")) return make_cpu_backend();
  if (mlp && which == "cuda")
    throw std::invalid_argument("run.backend = \"cuda\": the cuda backend does not run the mlp "
                                "family yet; allowed for mlp tasks: \"cpu\", \"auto\" (= cpu)");
  if (which == "cuda" || which == "auto") {
    // Only the CPU backend shares its work between the processes of a distributed run.
    if (dist::size() > 1) {
      if (which == "cuda")
        throw std::invalid_argument("backend 'cuda' is not distributed over processes yet (allowed under "
                                    "mpirun with more than one process: cpu, auto; docs/distributed.md)");
      return make_cpu_backend();
    }
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

std::unique_ptr<BackendVector> upload_vector(Backend& backend, const std::vector<float>& v) {
  auto out = backend.vector(v.size());
  out->write(v);
  return out;
}

UnrollResult<float> unroll_once(Backend& backend, const OptimizerHyper& hyper,
                                const std::vector<float>& w, const Task<float>& task,
                                Trajectory<float>& traj, int T, GradMode mode) {
  const auto t = backend.upload(task);
  const auto tr = backend.trajectory(*t);
  tr->write(traj);
  const auto wv = upload_vector(backend, w);
  const auto grad = backend.vector(mode == GradMode::none ? 0 : w.size());
  const UnrollItem item{t.get(), tr.get(), wv.get(), mode == GradMode::none ? nullptr : grad.get()};
  auto losses = backend.unroll(hyper, std::span<const UnrollItem>(&item, 1), T, mode);
  UnrollResult<float> out;
  out.meta_loss = losses[0].meta_loss;
  out.step_loss = std::move(losses[0].step_loss);
  if (mode != GradMode::none) out.grad = grad->read();
  traj = tr->read();
  return out;
}

}  // namespace ml2o
