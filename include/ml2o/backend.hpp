// A backend runs the float32 math of meta-training and owns the state that math works on: tasks,
// trajectories, weight-sized vectors and Adam moments live where the backend computes (host memory
// for the CPU, device memory for CUDA). They reach the host only when read for a checkpoint or an
// output. Orchestration (host/meta, host/protocol) talks to a backend only through this interface,
// and a backend that lacks an operation says so in caps() instead of falling back silently.
#pragma once
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ml2o/adam.hpp"
#include "ml2o/baselines.hpp"
#include "ml2o/lopt.hpp"
#include "ml2o/unroll.hpp"

namespace ml2o {

// A sampled task held by a backend (uploaded once, used by many unrolls).
class BackendTask {
 public:
  virtual ~BackendTask() = default;
  const TaskSpec& spec() const { return spec_; }
  int64_t coordinates() const { return spec_.instances * int64_t(spec_.dim); }

 protected:
  explicit BackendTask(const TaskSpec& spec) : spec_(spec) {}

 private:
  TaskSpec spec_;
};

// Where one task's trajectory stands: iterate, per-coordinate recurrent state and global step k.
class BackendTrajectory {
 public:
  virtual ~BackendTrajectory() = default;
  virtual void restart() = 0;                              // the task's x0, zero state, k = 1
  virtual void assign(const BackendTrajectory& from) = 0;  // a copy of another of the same task
  virtual Trajectory<float> read() const = 0;              // to the host (checkpoints)
  virtual void write(const Trajectory<float>& t) = 0;      // from the host; sizes are checked
  const BackendTask& task() const { return *task_; }

 protected:
  explicit BackendTrajectory(const BackendTask& task) : task_(&task) {}

 private:
  const BackendTask* task_;
};

// A float vector the size of a weight vector: weights, gradients, Hessian-vector products.
class BackendVector {
 public:
  virtual ~BackendVector() = default;
  virtual std::vector<float> read() const = 0;
  virtual void write(const std::vector<float>& v) = 0;  // size is checked
  virtual void assign(const BackendVector& from) = 0;
  size_t size() const { return size_; }

 protected:
  explicit BackendVector(size_t n) : size_(n) {}

 private:
  size_t size_;
};

// Adam's moments (double) and step count for one weight vector.
class BackendAdam {
 public:
  virtual ~BackendAdam() = default;
  virtual AdamState read() const = 0;
  virtual void write(const AdamState& s) = 0;  // empty moments (t = 0) or the vector's size
};

// One item of a batched unroll: advance `traj` (a trajectory of `task`) T steps with weights `w`;
// with a meta-gradient, d(meta-loss)/dw goes to `grad`.
struct UnrollItem {
  const BackendTask* task = nullptr;
  BackendTrajectory* traj = nullptr;
  const BackendVector* w = nullptr;
  BackendVector* grad = nullptr;  // required unless mode == GradMode::none
};

// One item of a batched Hessian-vector product (Backend::hvp).
struct HvpItem {
  const BackendTrajectory* start = nullptr;
  const BackendVector* w = nullptr;
  const BackendVector* v = nullptr;
  BackendVector* out = nullptr;
};

struct UnrollLoss {
  float meta_loss = 0.0f;         // sum_{t=0..T} mean_n f_n(x_t), summed in float as the reference
  std::vector<double> step_loss;  // mean_n f_n(x_t), t = 0..T
};

// How a backend computes M-L2O's exact second-order term.
enum class HvpSupport {
  device,          // on the backend itself
  host_reference,  // by the CPU's Dual<double> reference (copies the operands to the host)
};
const char* hvp_support_name(HvpSupport h);

struct BackendCaps {
  HvpSupport hvp = HvpSupport::device;
  bool mlp_family = true;  // runs tasks of the mlp family (CPU: yes; CUDA: not yet)
  std::string notes;  // one line for `ml2o info` and the run's first lines
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;    // "cpu" or "cuda"
  virtual std::string device() const = 0;  // human-readable device description
  virtual BackendCaps caps() const = 0;

  // ---- state owned by the backend ----
  virtual std::unique_ptr<BackendTask> upload(const Task<float>& task) = 0;
  virtual std::unique_ptr<BackendTrajectory> trajectory(const BackendTask& task) = 0;  // at x0
  virtual std::unique_ptr<BackendVector> vector(size_t n) = 0;                        // zeros
  virtual std::unique_ptr<BackendAdam> adam(size_t n) = 0;  // zero moments, t = 0

  // ---- operations ----
  // Advances every item T steps, with the meta-gradient unless mode is none. Items may share a
  // task, weights or nothing; each item's result is bit-identical to running it alone, and the
  // same inputs always give bit-identical outputs. step_loss has T + 1 entries per item.
  virtual std::vector<UnrollLoss> unroll(const OptimizerHyper& hyper,
                                         std::span<const UnrollItem> items, int T,
                                         GradMode mode) = 0;

  // For every item: out = (d^2 L / dw^2) v, L the meta-loss of a T-step unroll of `start` (left
  // unchanged) with weights w; how it is computed is caps().hvp. Batched like unroll (M-L2O's
  // second order needs one per task and inner step); each result is that of the item alone.
  virtual void hvp(const OptimizerHyper& hyper, std::span<const HvpItem> items, int T,
                   GradMode mode) = 0;

  // Small vector math where the vectors live, in fixed element order (float arithmetic as the
  // host reference writes it).
  virtual void axpy(BackendVector& y, float a, const BackendVector& x) = 0;  // y += a * x
  // out = ((0 + in_0 / n) + in_1 / n) + ..., n = in.size(), summed in item order.
  virtual void mean(BackendVector& out, std::span<const BackendVector* const> in) = 0;
  virtual bool all_finite(const BackendVector& v) = 0;
  // One Adam update (adam_update's arithmetic): w -= lr * mhat / (sqrt(vhat) + eps).
  virtual void adam_step(BackendVector& w, const BackendVector& grad, BackendAdam& st,
                         const AdamHyper& h) = 0;

  // An analytical optimizer from task.x0 for `steps` steps: steps + 1 mean objectives, and the
  // iterates at snaps->steps when snaps is given.
  virtual std::vector<double> run_baseline(const BaselineSpec& spec, const Task<float>& task,
                                           int steps, IterateSnapshots* snaps = nullptr) = 0;
};

std::unique_ptr<Backend> make_cpu_backend();
// "cpu", "cuda" or "auto" (cuda when a device is present, else cpu). Throws std::invalid_argument
// naming the allowed values, or std::runtime_error when cuda is asked for and unavailable. With
// `mlp` (the run has tasks of the mlp family, which only the CPU backend runs so far), "auto" means
// the CPU and "cuda" is refused.
std::unique_ptr<Backend> make_backend(const std::string& which, bool mlp = false);
bool cuda_available();  // built with CUDA and a device is present

// ---- host-data conveniences over the interface (tests, benches, one-off commands) ----
// One unroll of host data: uploads the task, runs, reads the trajectory back into `traj`.
UnrollResult<float> unroll_once(Backend& backend, const OptimizerHyper& hyper,
                                const std::vector<float>& w, const Task<float>& task,
                                Trajectory<float>& traj, int T, GradMode mode);
std::unique_ptr<BackendVector> upload_vector(Backend& backend, const std::vector<float>& v);

}  // namespace ml2o
