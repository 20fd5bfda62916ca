// The CPU backend: state held in host memory; unrolls by the fast float path (fast_unroll.hpp,
// checked against unroll_cpu<float> by tests/test_cpu_fast.cpp) or, for the mlp family and with
// ML2O_CPU_UNROLL=reference, the scalar reference unroll_cpu; Hessian-vector products and
// baselines by the reference math (hvp_dual, run_baseline_cpu). Its objects are plain host data,
// so reads and writes are copies.
//
// In a distributed run (dist.hpp) every rank holds every task and full-size trajectories, but
// advances only the coordinates of its own work units of each task (the fast path's groups, or
// the reference's chunks); the per-unit partial sums are all-gathered and added in unit order, so
// losses and gradients are those of one process. A trajectory's other units are stale on this rank
// until read() collects them from their owners.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "fast_unroll.hpp"
#include "ml2o/backend.hpp"
#include "ml2o/dist.hpp"
#include "ml2o/unroll.hpp"

namespace ml2o {

namespace {

class CpuTask final : public BackendTask {
 public:
  CpuTask(const Task<float>& t, bool fast_unroll) : BackendTask(t.spec), data(t), fast(fast_unroll) {}
  Task<float> data;
  bool fast;  // unrolled by the fast path (else by the scalar reference)
};

// A task's instances cut into the work units that ranks own and partial sums cover: the fast
// path's groups, or the reference unroll's chunks. Fixed by the task's shape alone.
struct WorkUnits {
  bool fast = false;
  int dim = 0;
  int64_t instances = 0, count = 0;
  std::pair<int64_t, int64_t> instances_of(int64_t u) const {  // [begin, end)
    if (fast) return cpu_fast::group_instances(dim, instances, u);
    const int64_t per = instances_per_chunk(dim);
    return {std::min(instances, u * per), std::min(instances, (u + 1) * per)};
  }
};

WorkUnits reference_units(const TaskSpec& s) {
  return {false, s.dim, s.instances, chunk_count(s.instances, s.dim)};
}

WorkUnits work_units(const CpuTask& t) {
  const TaskSpec& s = t.spec();
  return t.fast ? WorkUnits{true, s.dim, s.instances, cpu_fast::group_count(s.dim, s.instances)}
                : reference_units(s);
}

class CpuTrajectory final : public BackendTrajectory {
 public:
  explicit CpuTrajectory(const CpuTask& task) : BackendTrajectory(task), t(start_trajectory(task.data.x0)) {}
  void restart() override { t = start_trajectory(static_cast<const CpuTask&>(task()).data.x0); }
  void assign(const BackendTrajectory& from) override;
  Trajectory<float> read() const override;
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


template <class T> void put(std::string& out, const std::vector<T>& v) {
  static_assert(std::is_trivially_copyable_v<T>);
  out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}
template <class T> void take(const std::string& in, size_t& at, std::vector<T>& v, size_t n) {
  if (at + n * sizeof(T) > in.size()) throw std::logic_error("cpu backend: short distributed message");
  v.resize(n);
  std::memcpy(static_cast<void*>(v.data()), in.data() + at, n * sizeof(T));
  at += n * sizeof(T);
}

// Every rank's coordinates of the chunks it owns, assembled into one trajectory.
Trajectory<float> CpuTrajectory::read() const {
  if (dist::size() == 1) return t;
  const WorkUnits units = work_units(static_cast<const CpuTask&>(task()));
  const int64_t chunks = units.count;
  auto coords = [&](dist::Range r) {  // units are consecutive: their coordinates are one range
    if (r.count() == 0) return std::pair<size_t, size_t>(0, 0);
    const int64_t c0 = units.instances_of(r.begin).first * units.dim;
    const int64_t c1 = units.instances_of(r.end - 1).second * units.dim;
    return std::pair<size_t, size_t>(size_t(c0), size_t(c1));
  };
  const auto [m0, m1] = coords(dist::my_share(chunks));
  std::string own;
  put(own, std::vector<float>(t.x.begin() + m0, t.x.begin() + m1));
  put(own, std::vector<CoordState<float>>(t.coord.begin() + m0, t.coord.begin() + m1));
  const std::vector<std::string> all = dist::allgather(own);
  Trajectory<float> out = t;
  for (int r = 0; r < dist::size(); ++r) {
    const auto [c0, c1] = coords(dist::share(chunks, r, dist::size()));
    size_t at = 0;
    std::vector<float> x;
    std::vector<CoordState<float>> st;
    take(all[r], at, x, c1 - c0);
    take(all[r], at, st, c1 - c0);
    std::copy(x.begin(), x.end(), out.x.begin() + c0);
    std::copy(st.begin(), st.end(), out.coord.begin() + c0);
  }
  return out;
}

// One batched call's partials from every rank, summed per item in unit order. own[i] holds this
// rank's units of item i; units[i] is how its task is cut.
template <class S>
std::vector<UnrollResult<S>> reduce_everywhere(const std::vector<ChunkPartials<S>>& own,
                                               const std::vector<WorkUnits>& units, int T,
                                               size_t P, GradMode mode) {
  std::vector<UnrollResult<S>> out;
  if (dist::size() == 1) {
    for (size_t i = 0; i < own.size(); ++i) {
      const ChunkPartials<S>* parts[] = {&own[i]};
      out.push_back(reduce_chunks<S>(parts, units[i].instances, T, P, mode));
    }
    return out;
  }
  const bool backward = mode != GradMode::none;
  std::string bytes;
  for (const auto& m : own) {
    put(bytes, m.loss);
    put(bytes, m.grad);
  }
  const std::vector<std::string> all = dist::allgather(bytes);
  std::vector<size_t> at(all.size(), 0);
  for (size_t i = 0; i < own.size(); ++i) {
    const int64_t chunks = units[i].count;
    std::vector<ChunkPartials<S>> theirs(all.size());
    std::vector<const ChunkPartials<S>*> parts;
    for (size_t r = 0; r < all.size(); ++r) {
      const dist::Range range = dist::share(chunks, int(r), int(all.size()));
      ChunkPartials<S>& p = theirs[r];
      p.first = range.begin;
      p.last = range.end;
      take(all[r], at[r], p.loss, size_t(range.count()) * (T + 1));
      take(all[r], at[r], p.grad, backward ? size_t(range.count()) * P : 0);
      parts.push_back(&p);
    }
    out.push_back(reduce_chunks<S>(parts, units[i].instances, T, P, mode));
  }
  return out;
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
    return BackendCaps{HvpSupport::device, /*mlp_family=*/true,
                       "unrolls by the " + unroll_name() +
                           " (mlp tasks: the scalar reference); Hessian-vector products by "
                           "Dual<double> forward-over-reverse"};
  }

  std::unique_ptr<BackendTask> upload(const Task<float>& task) override {
    return std::make_unique<CpuTask>(task, unroll_ != "reference" && task.spec.family != Family::mlp);
  }
  std::unique_ptr<BackendTrajectory> trajectory(const BackendTask& task) override {
    return std::make_unique<CpuTrajectory>(mine<const CpuTask>(task));
  }
  std::unique_ptr<BackendVector> vector(size_t n) override { return std::make_unique<CpuVector>(n); }
  std::unique_ptr<BackendAdam> adam(size_t n) override { return std::make_unique<CpuAdam>(n); }

  std::vector<UnrollLoss> unroll(const OptimizerHyper& hyper, std::span<const UnrollItem> items,
                                 int T, GradMode mode) override {
    std::vector<ChunkPartials<float>> own;
    std::vector<WorkUnits> units;
    for (const UnrollItem& it : items) {
      auto& traj = mine<CpuTrajectory>(*it.traj);
      const auto& task = mine<const CpuTask>(*it.task);
      if (&traj.task() != it.task) throw std::logic_error("cpu backend: trajectory of another task");
      if (mode != GradMode::none && !it.grad)
        throw std::logic_error("cpu backend: a meta-gradient unroll needs a grad vector");
      units.push_back(work_units(task));
      const dist::Range r = dist::my_share(units.back().count);
      const auto& w = mine<const CpuVector>(*it.w).v;
      own.push_back(task.fast ? cpu_fast::unroll_groups(hyper, w, view_of(task.data), traj.t, T, mode,
                                                        workspace_, r.begin, r.end)
                              : unroll_chunks(hyper, w, view_of(task.data), traj.t, T, mode, r.begin, r.end));
      traj.t.k += T;
    }
    const size_t P = items.empty() ? 0 : items[0].w->size();
    std::vector<UnrollLoss> out;
    out.reserve(items.size());
    std::vector<UnrollResult<float>> sums = reduce_everywhere(own, units, T, P, mode);
    for (size_t i = 0; i < items.size(); ++i) {
      if (items[i].w->size() != P) throw std::logic_error("cpu backend: items with weights of different sizes");
      if (mode != GradMode::none) mine<CpuVector>(*items[i].grad).v = std::move(sums[i].grad);
      out.push_back(UnrollLoss{sums[i].meta_loss, std::move(sums[i].step_loss)});
    }
    return out;
  }

  // Forward-over-reverse (hvp_dual's arithmetic), each rank on its own chunks.
  void hvp(const OptimizerHyper& hyper, std::span<const HvpItem> items, int T, GradMode mode) override {
    using D = Dual<double>;
    std::vector<ChunkPartials<D>> own;
    std::vector<WorkUnits> units;
    for (const HvpItem& it : items) {
      const auto& task = mine<const CpuTask>(it.start->task());
      const auto& w = mine<const CpuVector>(*it.w).v;
      const auto& v = mine<const CpuVector>(*it.v).v;
      std::vector<D> wd(w.size());
      for (size_t p = 0; p < w.size(); ++p) wd[p] = D(double(w[p]), double(v[p]));
      const Task<D> td = cast_task<D>(task.data);
      // The whole start (read() gathers it): the reference chunks need not be this rank's units.
      Trajectory<D> traj = cast_trajectory<D>(mine<const CpuTrajectory>(*it.start).read());
      units.push_back(reference_units(task.spec()));
      const dist::Range r = dist::my_share(units.back().count);
      own.push_back(unroll_chunks(hyper, wd, view_of(td), traj, T, mode, r.begin, r.end));
    }
    const size_t P = items.empty() ? 0 : items[0].w->size();
    std::vector<UnrollResult<D>> sums = reduce_everywhere(own, units, T, P, mode);
    for (size_t i = 0; i < items.size(); ++i) {
      auto& out = mine<CpuVector>(*items[i].out).v;
      out.resize(P);
      for (size_t p = 0; p < P; ++p) out[p] = float(sums[i].grad[p].d);
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
                                   int steps, IterateSnapshots* snaps) override {
    return run_baseline_cpu(spec, task, steps, nullptr, snaps);
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
