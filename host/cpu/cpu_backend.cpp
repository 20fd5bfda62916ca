// The CPU backend: state held in host memory; unrolls by the fast float path (fast_unroll.hpp,
// checked against unroll_cpu<float> by tests/test_cpu_fast.cpp), Hessian-vector products and
// baselines by the reference math (hvp_dual, run_baseline_cpu). Its objects are plain host data,
// so reads and writes are copies.
#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "fast_unroll.hpp"
#include "ml2o/backend.hpp"
#include "ml2o/unroll.hpp"

namespace ml2o {

namespace {

class CpuTask final : public BackendTask {
 public:
  explicit CpuTask(const Task<float>& t) : BackendTask(t.spec), data(t) {}
  Task<float> data;
};

class CpuTrajectory final : public BackendTrajectory {
 public:
  explicit CpuTrajectory(const CpuTask& task) : BackendTrajectory(task), t(start_trajectory(task.data.x0)) {}
  void restart() override { t = start_trajectory(static_cast<const CpuTask&>(task()).data.x0); }
  void assign(const BackendTrajectory& from) override;
  Trajectory<float> read() const override { return t; }
  void write(const Trajectory<float>& in) override {
    const size_t C = size_t(task().coordinates());
    if (in.x.size() != C || in.coord.size() != C)
      throw std::invalid_argument("trajectory of " + std::to_string(in.x.size()) +
                                  " coordinates written to a task of " + std::to_string(C));
    t = in;
  }
  Trajectory<float> t;
};

class CpuVector final : public BackendVector {
 public:
  explicit CpuVector(size_t n) : BackendVector(n), v(n, 0.0f) {}
  std::vector<float> read() const override { return v; }
  void write(const std::vector<float>& in) override {
    if (in.size() != size())
      throw std::invalid_argument("vector of " + std::to_string(in.size()) + " values written to one of " +
                                  std::to_string(size()));
    v = in;
  }
  void assign(const BackendVector& from) override;
  std::vector<float> v;
};

class CpuAdam final : public BackendAdam {
 public:
  explicit CpuAdam(size_t n) : n_(n) {}
  AdamState read() const override { return s; }
  void write(const AdamState& in) override {
    if (in.m.size() != in.v.size() || (!in.m.empty() && in.m.size() != n_))
      throw std::invalid_argument("Adam moments of " + std::to_string(in.m.size()) + "/" +
                                  std::to_string(in.v.size()) + " values for " + std::to_string(n_) +
                                  " weights");
    s = in;
  }
  AdamState s;

 private:
  size_t n_;
};

// Objects come back through the interface; one made by another backend is a programming error.
template <class T, class B> T& mine(B& obj) {
  auto* p = dynamic_cast<T*>(&obj);
  if (!p) throw std::logic_error("cpu backend: an object created by another backend was passed in");
  return *p;
}

void CpuTrajectory::assign(const BackendTrajectory& from) {
  const auto& f = mine<const CpuTrajectory>(from);
  if (&f.task() != &task()) throw std::logic_error("cpu backend: assign between trajectories of different tasks");
  t = f.t;
}

void CpuVector::assign(const BackendVector& from) {
  const auto& f = mine<const CpuVector>(from);
  if (f.size() != size()) throw std::logic_error("cpu backend: assign between vectors of different sizes");
  v = f.v;
}

// ML2O_CPU_UNROLL (docs/cpu.md) picks the unroll: auto (default: the widest instruction set the
// CPU runs), avx512, avx2, generic, or reference (the scalar unroll_cpu<float>, for comparisons).
std::string unroll_choice() {
  const char* env = std::getenv("ML2O_CPU_UNROLL");
  const std::string v = env && *env ? env : "auto";
  if (v == "reference") return v;
  if (v != "auto" && v != "avx512" && v != "avx2" && v != "generic")
    throw std::invalid_argument("environment variable ML2O_CPU_UNROLL: unknown value '" + v +
                                "' (allowed: auto, avx512, avx2, generic, reference)");
  try {
    cpu_fast::set_isa(v);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("environment variable ML2O_CPU_UNROLL=" + v + ": " + e.what());
  }
  return cpu_fast::isa();
}

class CpuBackend final : public Backend {
 public:
  CpuBackend() : unroll_(unroll_choice()) {}
  std::string name() const override { return "cpu"; }
  std::string device() const override { return "CPU (OpenMP, " + unroll_name() + ")"; }
  BackendCaps caps() const override {
    return BackendCaps{HvpSupport::device,
                       "unrolls by the " + unroll_name() +
                           "; Hessian-vector products by Dual<double> forward-over-reverse"};
  }

  std::unique_ptr<BackendTask> upload(const Task<float>& task) override {
    return std::make_unique<CpuTask>(task);
  }
  std::unique_ptr<BackendTrajectory> trajectory(const BackendTask& task) override {
    return std::make_unique<CpuTrajectory>(mine<const CpuTask>(task));
  }
  std::unique_ptr<BackendVector> vector(size_t n) override { return std::make_unique<CpuVector>(n); }
  std::unique_ptr<BackendAdam> adam(size_t n) override { return std::make_unique<CpuAdam>(n); }

  std::vector<UnrollLoss> unroll(const OptimizerHyper& hyper, std::span<const UnrollItem> items,
                                 int T, GradMode mode) override {
    std::vector<UnrollLoss> out;
    out.reserve(items.size());
    for (const UnrollItem& it : items) {
      auto& traj = mine<CpuTrajectory>(*it.traj);
      const auto& task = mine<const CpuTask>(*it.task);
      if (&traj.task() != it.task) throw std::logic_error("cpu backend: trajectory of another task");
      // Every GradMode runs on the fast path (the scalar unroll_cpu is its test oracle).
      auto r = unroll_ == "reference"
                   ? unroll_cpu(hyper, mine<const CpuVector>(*it.w).v, view_of(task.data), traj.t, T, mode)
                   : cpu_fast::unroll(hyper, mine<const CpuVector>(*it.w).v, view_of(task.data), traj.t,
                                      T, mode, workspace_);
      if (mode != GradMode::none) {
        if (!it.grad) throw std::logic_error("cpu backend: a meta-gradient unroll needs a grad vector");
        mine<CpuVector>(*it.grad).v = std::move(r.grad);
      }
      out.push_back(UnrollLoss{r.meta_loss, std::move(r.step_loss)});
    }
    return out;
  }

  void hvp(const OptimizerHyper& hyper, std::span<const HvpItem> items, int T, GradMode mode) override {
    for (const HvpItem& it : items) {
      const auto& task = mine<const CpuTask>(it.start->task());
      mine<CpuVector>(*it.out).v = hvp_dual(hyper, mine<const CpuVector>(*it.w).v, task.data,
                                            mine<const CpuTrajectory>(*it.start).t, T,
                                            mine<const CpuVector>(*it.v).v, mode);
    }
  }

  void axpy(BackendVector& y, float a, const BackendVector& x) override {
    auto& yv = mine<CpuVector>(y).v;
    const auto& xv = mine<const CpuVector>(x).v;
    for (size_t p = 0; p < yv.size(); ++p) yv[p] += a * xv[p];
  }

  void mean(BackendVector& out, std::span<const BackendVector* const> in) override {
    auto& o = mine<CpuVector>(out).v;
    std::fill(o.begin(), o.end(), 0.0f);
    const float n = float(in.size());
    for (const BackendVector* b : in) {
      const auto& v = mine<const CpuVector>(*b).v;
      for (size_t p = 0; p < o.size(); ++p) o[p] += v[p] / n;
    }
  }

  bool all_finite(const BackendVector& v) override { return ml2o::all_finite(mine<const CpuVector>(v).v); }

  void adam_step(BackendVector& w, const BackendVector& grad, BackendAdam& st,
                 const AdamHyper& h) override {
    adam_update(mine<CpuVector>(w).v, mine<const CpuVector>(grad).v, mine<CpuAdam>(st).s, h);
  }

  std::vector<double> run_baseline(const BaselineSpec& spec, const Task<float>& task,
                                   int steps) override {
    return run_baseline_cpu(spec, task, steps);
  }

 private:
  std::string unroll_name() const {
    return unroll_ == "reference" ? "scalar reference unroll" : "tiled " + unroll_ + " float unroll";
  }
  std::string unroll_;             // "reference" or the fast path's instruction set
  cpu_fast::Workspace workspace_;  // the fast unroll's buffers, reused across calls
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace ml2o
