// The CUDA backend: tasks, trajectories, weight vectors and Adam moments live on the device
// (uploaded once, read back only for checkpoints and outputs); it runs the fused unroll kernels
// (unroll.cu), the vector kernels (vector_ops.cu) and the baselines (baselines.cu), and reduces
// per-block partials in a fixed order.
//
// One batched unroll (every item of the call) = one launch sequence, laid out by the plan
// (unroll_plan.hpp): upload of the items' arguments, forward launch(es), backward launch(es) with a
// meta-gradient, one cub::DeviceSegmentedReduce over every item's [P weight rows + T + 1 loss
// rows][blocks], one scatter of the gradient rows into the items' vectors, one download of every
// item's losses, one stream sync. A Hessian-vector product is the same sequence on the Dual<float>
// kernels, without the download and the sync. A sequence seen twice (same layout and scratch
// buffers) is captured as a CUDA graph and replayed from then on. The number of blocks of an item
// depends only on its (N, d), so results are bit-identical run to run, batched or alone, and across
// GPUs of the same architecture.
#include <cub/device/device_segmented_reduce.cuh>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "launch.cuh"
#include "ml2o/cuda_backend.hpp"
#include "ml2o/lopt.hpp"
#include "ml2o/unroll.hpp"

namespace ml2o {
namespace cuda {
namespace {

// Bytes a grow-only buffer would add to reach `bytes`.
size_t grow_bytes(const DeviceBuffer& b, size_t bytes) { return bytes > b.bytes() ? bytes : 0; }

std::string gib(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", double(bytes) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

std::atomic<int64_t> g_launches{0}, g_memcpys{0}, g_bytes{0}, g_peak{0}, g_graph_launches{0};
std::atomic<bool> g_poison{false};
std::atomic<double> g_last_kernel_ms{0.0};
std::atomic<int> g_variant_override{0};  // 0: ML2O_CUDA_KERNEL or the default
std::atomic<int> g_graphs_override{0};   // 0: ML2O_CUDA_GRAPHS or the default, 1: off, 2: on
constexpr bool kDefaultGraphs = true;

// ML2O_CUDA_KERNEL, read once: unset or empty = kDefaultKernelVariant, "v1" / "v2" / "v3-lab"
// (opt-in, unverified on hardware: kernels/lab/), else an error.
int env_kernel_variant() {
  static const int v = [] {
    const char* e = std::getenv("ML2O_CUDA_KERNEL");
    if (e == nullptr || *e == '\0') return kDefaultKernelVariant;
    const std::string s(e);
    if (s == "v1") return 1;
    if (s == "v2") return 2;
    if (s == "v3-lab") return 3;
    return -1;
  }();
  if (v < 0)
    throw std::runtime_error(std::string("cuda backend: ML2O_CUDA_KERNEL='") +
                             std::getenv("ML2O_CUDA_KERNEL") + "' is not a kernel variant (v1, v2 or v3-lab)");
  return v;
}

// ML2O_CUDA_GRAPHS, read once: unset or empty = kDefaultGraphs, "on" / "off", else an error.
bool graphs_enabled() {
  const int o = g_graphs_override.load();
  if (o != 0) return o == 2;
  static const int v = [] {
    const char* e = std::getenv("ML2O_CUDA_GRAPHS");
    if (e == nullptr || *e == '\0') return kDefaultGraphs ? 1 : 0;
    const std::string s(e);
    if (s == "on") return 1;
    if (s == "off") return 0;
    return -1;
  }();
  if (v < 0)
    throw std::runtime_error(std::string("cuda backend: ML2O_CUDA_GRAPHS='") +
                             std::getenv("ML2O_CUDA_GRAPHS") + "' is not on or off");
  return v == 1;
}

void check_task_shape(const Task<float>& t) {
  const int64_t N = t.spec.instances;
  const int d = t.spec.dim;
  if (N < 1 || d < 1)
    throw std::invalid_argument("cuda backend: a task needs instances >= 1 and dim >= 1");
  if (t.spec.family == Family::mlp)  // caps().mlp_family: make_backend picks the CPU for "auto"
    throw std::invalid_argument("the cuda backend does not run the mlp family yet (its gradients "
                                "exist in kernels/mlp.cu but are not wired into the unroll); "
                                "use run.backend = \"cpu\" or \"auto\"");
  const bool matrix = t.spec.family == Family::lasso || t.spec.family == Family::quadratic;
  const size_t nd = static_cast<size_t>(N) * d;
  if (matrix && (t.A.size() != nd * d || t.b.size() != nd))
    throw std::invalid_argument("cuda backend: task A / b sizes do not match instances x dim");
  if (t.x0.size() != nd) throw std::invalid_argument("cuda backend: task x0 size does not match instances x dim");
  if (t.spec.family == Family::rosenbrock && d != 2)
    throw std::invalid_argument("cuda backend: rosenbrock needs dim = 2");
}

void to_device(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  if (bytes == 0) return;
  ML2O_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
  ++g_memcpys;
}
void to_host(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  if (bytes == 0) return;
  ML2O_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
  ++g_memcpys;
}
void copy_on_device(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  if (bytes == 0) return;
  ML2O_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s));
  ++g_memcpys;
}

// Grow-only page-locked host memory: the source / target of copies that a CUDA graph replays.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() {
    if (ptr_) cudaFreeHost(ptr_);
  }
  void ensure(size_t bytes) {
    if (bytes <= bytes_) return;
    if (ptr_) cudaFreeHost(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
    ML2O_CUDA_CHECK(cudaMallocHost(&ptr_, bytes));
    bytes_ = bytes;
  }
  template <class T> T* as() const { return static_cast<T*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// ---- objects held on the device ------------------------------------------------------------------
// Every object is used on the backend's one stream, so operations on it are ordered.
class CudaTask final : public BackendTask {
 public:
  CudaTask(const Task<float>& t, cudaStream_t s) : BackendTask(t.spec), geo(make_geometry(t.spec.instances, t.spec.dim)) {
    A.ensure(sizeof(float) * t.A.size());
    b.ensure(sizeof(float) * t.b.size());
    x0.ensure(sizeof(float) * t.x0.size());
    to_device(A.as<float>(), t.A.data(), sizeof(float) * t.A.size(), s);
    to_device(b.as<float>(), t.b.data(), sizeof(float) * t.b.size(), s);
    to_device(x0.as<float>(), t.x0.data(), sizeof(float) * t.x0.size(), s);
  }
  TaskView<float> view() const {
    const TaskSpec& sp = spec();
    return TaskView<float>{sp.family, sp.dim, sp.instances, A.bytes() ? A.as<float>() : nullptr,
                           b.bytes() ? b.as<float>() : nullptr, static_cast<float>(sp.lam),
                           static_cast<float>(sp.alpha)};
  }
  Geometry geo;
  DeviceBuffer A, b, x0;
};

class CudaTrajectory final : public BackendTrajectory {
 public:
  CudaTrajectory(const CudaTask& task, cudaStream_t s) : BackendTrajectory(task), stream_(s) {
    const size_t C = static_cast<size_t>(task.coordinates());
    x.ensure(sizeof(float) * C);
    coord.ensure(sizeof(CoordState<float>) * C);
    restart();
  }
  void restart() override {
    const auto& t = static_cast<const CudaTask&>(task());
    const size_t C = static_cast<size_t>(t.coordinates());
    copy_on_device(x.as<float>(), t.x0.as<float>(), sizeof(float) * C, stream_);
    ML2O_CUDA_CHECK(cudaMemsetAsync(coord.as<void>(), 0, sizeof(CoordState<float>) * C, stream_));
    k = 1;
  }
  void assign(const BackendTrajectory& from) override;
  Trajectory<float> read() const override {
    const size_t C = static_cast<size_t>(task().coordinates());
    Trajectory<float> t;
    t.x.resize(C);
    t.coord.resize(C);
    t.k = k;
    to_host(t.x.data(), x.as<float>(), sizeof(float) * C, stream_);
    to_host(t.coord.data(), coord.as<CoordState<float>>(), sizeof(CoordState<float>) * C, stream_);
    ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return t;
  }
  void write(const Trajectory<float>& t) override {
    const size_t C = static_cast<size_t>(task().coordinates());
    if (t.x.size() != C || t.coord.size() != C)
      throw std::invalid_argument("cuda backend: trajectory of " + std::to_string(t.x.size()) +
                                  " coordinates written to a task of " + std::to_string(C));
    to_device(x.as<float>(), t.x.data(), sizeof(float) * C, stream_);
    to_device(coord.as<CoordState<float>>(), t.coord.data(), sizeof(CoordState<float>) * C, stream_);
    ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));  // t may be freed when we return
    k = t.k;
  }
  DeviceBuffer x, coord;
  int64_t k = 1;

 private:
  cudaStream_t stream_;
};

class CudaVector final : public BackendVector {
 public:
  CudaVector(size_t n, cudaStream_t s) : BackendVector(n), stream_(s) {
    buf.ensure(sizeof(float) * std::max<size_t>(n, 1));
    ML2O_CUDA_CHECK(cudaMemsetAsync(buf.as<void>(), 0, sizeof(float) * n, s));
  }
  std::vector<float> read() const override {
    std::vector<float> v(size());
    to_host(v.data(), buf.as<float>(), sizeof(float) * size(), stream_);
    ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return v;
  }
  void write(const std::vector<float>& v) override {
    if (v.size() != size())
      throw std::invalid_argument("cuda backend: vector of " + std::to_string(v.size()) +
                                  " values written to one of " + std::to_string(size()));
    to_device(buf.as<float>(), v.data(), sizeof(float) * size(), stream_);
    ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void assign(const BackendVector& from) override;
  float* data() const { return buf.as<float>(); }
  DeviceBuffer buf;

 private:
  cudaStream_t stream_;
};

class CudaAdam final : public BackendAdam {
 public:
  CudaAdam(size_t n, cudaStream_t s) : n_(n), stream_(s) {
    m.ensure(sizeof(double) * std::max<size_t>(n, 1));
    v.ensure(sizeof(double) * std::max<size_t>(n, 1));
    zero();
  }
  AdamState read() const override {
    AdamState st;
    st.t = t;
    if (t == 0) return st;  // as the host reference: no moments before the first step
    st.m.resize(n_);
    st.v.resize(n_);
    to_host(st.m.data(), m.as<double>(), sizeof(double) * n_, stream_);
    to_host(st.v.data(), v.as<double>(), sizeof(double) * n_, stream_);
    ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return st;
  }
  void write(const AdamState& st) override {
    if (st.m.size() != st.v.size() || (!st.m.empty() && st.m.size() != n_))
      throw std::invalid_argument("cuda backend: Adam moments of " + std::to_string(st.m.size()) +
                                  " values for " + std::to_string(n_) + " weights");
    if (st.m.empty()) {
      zero();
    } else {
      to_device(m.as<double>(), st.m.data(), sizeof(double) * n_, stream_);
      to_device(v.as<double>(), st.v.data(), sizeof(double) * n_, stream_);
      ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));
    }
    t = st.t;
  }
  DeviceBuffer m, v;
  int64_t t = 0;

 private:
  void zero() {
    ML2O_CUDA_CHECK(cudaMemsetAsync(m.as<void>(), 0, sizeof(double) * n_, stream_));
    ML2O_CUDA_CHECK(cudaMemsetAsync(v.as<void>(), 0, sizeof(double) * n_, stream_));
  }
  size_t n_;
  cudaStream_t stream_;
};

template <class T, class B> T& mine(B& obj) {
  auto* p = dynamic_cast<T*>(&obj);
  if (!p) throw std::logic_error("cuda backend: an object created by another backend was passed in");
  return *p;
}

void CudaTrajectory::assign(const BackendTrajectory& from) {
  const auto& f = mine<const CudaTrajectory>(from);
  if (&f.task() != &task()) throw std::logic_error("cuda backend: assign between trajectories of different tasks");
  const size_t C = static_cast<size_t>(task().coordinates());
  copy_on_device(x.as<float>(), f.x.as<float>(), sizeof(float) * C, stream_);
  copy_on_device(coord.as<void>(), f.coord.as<void>(), sizeof(CoordState<float>) * C, stream_);
  k = f.k;
}

void CudaVector::assign(const BackendVector& from) {
  const auto& f = mine<const CudaVector>(from);
  if (f.size() != size()) throw std::logic_error("cuda backend: assign between vectors of different sizes");
  copy_on_device(buf.as<float>(), f.buf.as<float>(), sizeof(float) * size(), stream_);
}

// One cached batch layout: its device tables, buffers and (once seen twice) its CUDA graph.
struct PlanEntry {
  UnrollPlan plan;
  DeviceBuffer tables;   // int64: first_block[n + 1] | segment begin[rows] | segment end[rows]
  DeviceBuffer args;     // UnrollArgs[n], uploaded from args_host by every run
  DeviceBuffer reduced;  // float[total_rows]
  DeviceBuffer cub_tmp;
  size_t cub_bytes = 0;
  PinnedBuffer args_host, losses_host;
  cudaEvent_t args_free = nullptr;  // recorded after each run: args_host may be rewritten
  // The graph: valid for the scratch pointers and poison setting in `key`.
  struct Key {
    const float* tape;
    const float* gT;
    const float* partial;
    bool poison;
    bool operator==(const Key&) const = default;
  };
  std::optional<Key> seen;  // a plain run with this key happened: the next one captures
  std::optional<Key> key;   // the key `exec` was captured with
  cudaGraphExec_t exec = nullptr;
  int64_t launches = 0, memcpys = 0;  // per run of the sequence
  uint64_t last_used = 0;

  PlanEntry() { ML2O_CUDA_CHECK(cudaEventCreateWithFlags(&args_free, cudaEventDisableTiming)); }
  PlanEntry(const PlanEntry&) = delete;
  PlanEntry& operator=(const PlanEntry&) = delete;
  ~PlanEntry() {
    if (exec) cudaGraphExecDestroy(exec);
    cudaEventDestroy(args_free);
  }
  int64_t* first_block() const { return tables.as<int64_t>(); }
  int64_t* seg_begin() const { return first_block() + plan.items() + 1; }
  int64_t* seg_end() const { return seg_begin() + plan.total_rows; }
};
constexpr size_t kPlanCacheSize = 8;  // layouts kept (a meta-step uses 2-3: support/query, HVP, eval)

class CudaBackend final : public Backend {
 public:
  CudaBackend() {
    if (!cuda_device_present()) throw std::runtime_error("cuda backend: no CUDA device is visible");
    (void)kernel_variant();  // an invalid ML2O_CUDA_KERNEL or ML2O_CUDA_GRAPHS fails here
    (void)graphs_enabled();
    ML2O_CUDA_CHECK(cudaGetDevice(&dev_));
    cudaDeviceProp prop;
    ML2O_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev_));
    device_ = prop.name;
    ML2O_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    ML2O_CUDA_CHECK(cudaEventCreate(&start_));
    ML2O_CUDA_CHECK(cudaEventCreate(&stop_));
    flag_.ensure(sizeof(int));
  }
  ~CudaBackend() override {
    cudaStreamSynchronize(stream_);
    cache_.clear();
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "cuda"; }
  std::string device() const override { return device_; }
  BackendCaps caps() const override {
    return BackendCaps{HvpSupport::device, /*mlp_family=*/false,
                       "Hessian-vector products by Dual<float> forward-over-reverse on the device "
                       "(the v1 kernels)"};
  }

  std::unique_ptr<BackendTask> upload(const Task<float>& task) override {
    check_task_shape(task);
    auto t = std::make_unique<CudaTask>(task, stream_);
    ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the host task may be freed when we return
    return t;
  }
  std::unique_ptr<BackendTrajectory> trajectory(const BackendTask& task) override {
    return std::make_unique<CudaTrajectory>(mine<const CudaTask>(task), stream_);
  }
  std::unique_ptr<BackendVector> vector(size_t n) override { return std::make_unique<CudaVector>(n, stream_); }
  std::unique_ptr<BackendAdam> adam(size_t n) override { return std::make_unique<CudaAdam>(n, stream_); }

  std::vector<UnrollLoss> unroll(const OptimizerHyper& hyper, std::span<const UnrollItem> items,
                                 int T, GradMode mode) override {
    if (T < 0) throw std::invalid_argument("cuda unroll: T must be >= 0");
    if (items.empty()) return {};
    const bool backward = mode != GradMode::none;
    std::vector<PlanShape> shapes;
    std::vector<PlanInput> in;
    std::vector<CudaTrajectory*> trajs;
    std::vector<const void*> written;  // trajectories and gradients: each at most once per call
    for (const UnrollItem& it : items) {
      const auto& task = mine<const CudaTask>(*it.task);
      auto& traj = mine<CudaTrajectory>(*it.traj);
      const auto& w = mine<const CudaVector>(*it.w);
      if (&traj.task() != it.task) throw std::logic_error("cuda backend: trajectory of another task");
      check_weights(hyper, w, "weights");
      CudaVector* grad = nullptr;
      if (backward) {
        if (!it.grad) throw std::logic_error("cuda backend: a meta-gradient unroll needs a grad vector");
        grad = &mine<CudaVector>(*it.grad);
        check_weights(hyper, *grad, "gradient vector");
        written.push_back(grad);
      }
      written.push_back(&traj);
      shapes.push_back(PlanShape{task.spec().instances, task.spec().dim});
      in.push_back(PlanInput{task.view(), traj.x.as<float>(), traj.coord.as<CoordState<float>>(), traj.k,
                             w.data(), nullptr, grad ? grad->data() : nullptr});
      trajs.push_back(&traj);
    }
    std::sort(written.begin(), written.end());
    if (std::adjacent_find(written.begin(), written.end()) != written.end())
      throw std::logic_error("cuda unroll: two items of one call share a trajectory or a gradient vector");
    const UnrollPlan plan = plan_unroll(hyper.arch, shapes, T, mode, kernel_variant(), false);
    PlanEntry& e = run_plan(hyper, plan, in);
    ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));
    record_kernel_time();
    for (CudaTrajectory* t : trajs) t->k += T;
    return assemble(plan, std::span<const float>(e.losses_host.as<float>(), plan.loss_rows));
  }

  // Asynchronous: the products land in the `out` vectors on the stream, like the vector operations.
  void hvp(const OptimizerHyper& hyper, std::span<const HvpItem> items, int T, GradMode mode) override {
    if (items.empty()) return;
    std::vector<PlanShape> shapes;
    std::vector<PlanInput> in;
    std::vector<const void*> outs;
    for (const HvpItem& it : items) {
      const auto& traj = mine<const CudaTrajectory>(*it.start);
      const auto& task = static_cast<const CudaTask&>(traj.task());
      const auto& wv = mine<const CudaVector>(*it.w);
      const auto& vv = mine<const CudaVector>(*it.v);
      auto& ov = mine<CudaVector>(*it.out);
      check_weights(hyper, wv, "weights");
      check_weights(hyper, vv, "direction v");
      check_weights(hyper, ov, "output vector");
      shapes.push_back(PlanShape{task.spec().instances, task.spec().dim});
      // The Dual kernels only read the trajectory: its start stays unchanged.
      in.push_back(PlanInput{task.view(), traj.x.as<float>(), traj.coord.as<CoordState<float>>(), traj.k,
                             wv.data(), vv.data(), ov.data()});
      outs.push_back(&ov);
    }
    std::sort(outs.begin(), outs.end());
    if (std::adjacent_find(outs.begin(), outs.end()) != outs.end())
      throw std::logic_error("cuda hvp: two items of one call share an output vector");
    const UnrollPlan plan = plan_unroll(hyper.arch, shapes, T, mode, /*variant=*/1, /*dual=*/true);
    run_plan(hyper, plan, in);
  }

  void axpy(BackendVector& y, float a, const BackendVector& x) override {
    auto& yv = mine<CudaVector>(y);
    const auto& xv = mine<const CudaVector>(x);
    if (xv.size() != yv.size()) throw std::logic_error("cuda axpy: sizes differ");
    launch_axpy(yv.data(), a, xv.data(), static_cast<int64_t>(yv.size()), stream_);
  }

  void mean(BackendVector& out, std::span<const BackendVector* const> in) override {
    auto& o = mine<CudaVector>(out);
    std::vector<const float*> ptrs;
    for (const BackendVector* b : in) {
      const auto& v = mine<const CudaVector>(*b);
      if (v.size() != o.size()) throw std::logic_error("cuda mean: sizes differ");
      ptrs.push_back(v.data());
    }
    if (ptrs.empty()) {
      ML2O_CUDA_CHECK(cudaMemsetAsync(o.data(), 0, sizeof(float) * o.size(), stream_));
      return;
    }
    if (ptrs != mean_ptrs_) {  // a meta-step averages the same vectors every time: upload once
      ptrs_.ensure(sizeof(const float*) * ptrs.size());
      to_device(ptrs_.as<void>(), ptrs.data(), sizeof(const float*) * ptrs.size(), stream_);
      ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));  // ptrs lives on this frame
      mean_ptrs_ = ptrs;
    }
    launch_mean(o.data(), ptrs_.as<const float*>(), static_cast<int>(ptrs.size()),
                static_cast<int64_t>(o.size()), stream_);
  }

  bool all_finite(const BackendVector& v) override {
    const auto& x = mine<const CudaVector>(v);
    ML2O_CUDA_CHECK(cudaMemsetAsync(flag_.as<int>(), 0, sizeof(int), stream_));
    launch_finite(x.data(), static_cast<int64_t>(x.size()), flag_.as<int>(), stream_);
    int bad = 0;
    to_host(&bad, flag_.as<int>(), sizeof(int), stream_);
    ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return bad == 0;
  }

  void adam_step(BackendVector& w, const BackendVector& grad, BackendAdam& st,
                 const AdamHyper& h) override {
    auto& wv = mine<CudaVector>(w);
    const auto& gv = mine<const CudaVector>(grad);
    auto& s = mine<CudaAdam>(st);
    ++s.t;
    const AdamCorrection c = adam_correction(h, s.t);
    AdamArgs a{wv.data(), gv.data(), s.m.as<double>(), s.v.as<double>(),
               static_cast<int64_t>(wv.size()), h.lr, h.beta1, h.beta2, h.eps, c.c1, c.c2};
    launch_adam(a, stream_);
  }

  std::vector<double> run_baseline(const BaselineSpec& spec, const Task<float>& task,
                                   int steps, IterateSnapshots* snaps) override {
    if (snaps) throw std::invalid_argument("cuda backend: baseline iterate snapshots are CPU only");
    if (steps < 0)
      throw std::invalid_argument("baseline: steps must be >= 0, got " + std::to_string(steps));
    const bool proximal = spec.kind == BaselineKind::ista || spec.kind == BaselineKind::fista;
    if (proximal && task.spec.family != Family::lasso)
      throw std::invalid_argument(std::string("baseline '") + baseline_name(spec.kind) +
                                  "' is for the lasso family only, not '" +
                                  family_name(task.spec.family) + "'");
    const auto held = upload(task);
    const auto& rt = static_cast<const CudaTask&>(*held);
    const int64_t N = task.spec.instances;
    const Geometry& geo = rt.geo;
    const int64_t rows = static_cast<int64_t>(steps) + 1;

    // Step-dependent coefficients in double, rounded once (as run_baseline_cpu).
    std::vector<float> coef(3 * static_cast<size_t>(steps));
    double t_fista = 1.0;
    for (int k = 1; k <= steps; ++k) {
      const double t_next = 0.5 * (1.0 + std::sqrt(1.0 + 4.0 * t_fista * t_fista));
      coef[3 * (k - 1) + 0] = static_cast<float>(1.0 - std::pow(spec.beta1, k));
      coef[3 * (k - 1) + 1] = static_cast<float>(1.0 - std::pow(spec.beta2, k));
      coef[3 * (k - 1) + 2] = static_cast<float>((t_fista - 1.0) / t_next);
      t_fista = t_next;
    }
    coef_.ensure(sizeof(float) * coef.size());
    bpartial_.ensure(sizeof(double) * rows * geo.blocks);
    breduced_.ensure(sizeof(double) * rows);
    const int64_t* offsets = segment_offsets(rows, geo.blocks);
    if (g_poison.load()) {
      poison(bpartial_, sizeof(double) * rows * geo.blocks);
      poison(breduced_, sizeof(double) * rows);
    }
    if (!coef.empty()) to_device(coef_.as<float>(), coef.data(), sizeof(float) * coef.size(), stream_);
    if (proximal) {
      const std::vector<double> L = lipschitz_constants(task);
      lip_.ensure(sizeof(double) * N);
      to_device(lip_.as<double>(), L.data(), sizeof(double) * N, stream_);
    }

    BaselineArgs a;
    a.kind = spec.kind;
    a.task = rt.view();
    a.x0 = rt.x0.as<float>();
    a.lipschitz = proximal ? lip_.as<double>() : nullptr;
    a.lam = task.spec.lam;
    a.coef = coef_.as<float>();
    a.lr = static_cast<float>(spec.lr);
    a.mu = static_cast<float>(spec.momentum);
    a.b1 = static_cast<float>(spec.beta1);
    a.b2 = static_cast<float>(spec.beta2);
    a.eps = static_cast<float>(spec.eps);
    a.decay = static_cast<float>(spec.rms_decay);
    a.one_b1 = static_cast<float>(1.0 - spec.beta1);
    a.one_b2 = static_cast<float>(1.0 - spec.beta2);
    a.one_decay = static_cast<float>(1.0 - spec.rms_decay);
    a.steps = steps;
    a.ipb = geo.ipb;
    a.blocks = geo.blocks;
    a.partial = bpartial_.as<double>();

    ML2O_CUDA_CHECK(cudaEventRecord(start_, stream_));
    launch_baseline(a, geo, stream_);
    segmented_sum(bpartial_.as<double>(), breduced_.as<double>(), rows, offsets);
    ML2O_CUDA_CHECK(cudaEventRecord(stop_, stream_));
    std::vector<double> sums(rows);
    to_host(sums.data(), breduced_.as<double>(), sizeof(double) * rows, stream_);
    ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));
    record_kernel_time();
    for (double& s : sums) s /= static_cast<double>(N);
    return sums;
  }

 private:
  void check_weights(const OptimizerHyper& hyper, const CudaVector& v, const char* what) const {
    const int P = param_count(hyper.arch);
    if (static_cast<int>(v.size()) != P)
      throw std::invalid_argument("cuda backend: the " + std::string(what) + " has " +
                                  std::to_string(v.size()) + " values, but " + arch_name(hyper.arch) +
                                  " has " + std::to_string(P) + " weights");
  }

  // Runs a plan's launch sequence on the stream (no sync): binds the inputs to the shared scratch,
  // writes the arguments to the layout's pinned buffer, then replays its graph, captures one, or
  // launches directly. Returns the layout's entry (its losses_host holds the losses after a sync).
  PlanEntry& run_plan(const OptimizerHyper& hyper, const UnrollPlan& plan, std::span<const PlanInput> in) {
    reserve_scratch(plan);
    PlanEntry& e = entry_for(plan);
    const std::vector<UnrollArgs> args =
        bind_args(hyper, plan, in, PlanScratch{tape_.as<float>(), gT_.as<float>(), partial_.as<float>()});
    ML2O_CUDA_CHECK(cudaEventSynchronize(e.args_free));  // the previous run has read args_host
    std::memcpy(e.args_host.as<void>(), args.data(), sizeof(UnrollArgs) * args.size());
    const PlanEntry::Key key{tape_.as<float>(), gT_.as<float>(), partial_.as<float>(), g_poison.load()};
    const bool graphs = graphs_enabled();
    ML2O_CUDA_CHECK(cudaEventRecord(start_, stream_));
    if (graphs && e.exec && e.key == key) {
      ML2O_CUDA_CHECK(cudaGraphLaunch(e.exec, stream_));
      ++g_graph_launches;
      g_launches += e.launches;
      g_memcpys += e.memcpys;
    } else if (graphs && e.seen == key) {
      capture(e, key);
    } else {
      const int64_t l0 = g_launches.load(), m0 = g_memcpys.load();
      record(e);
      e.launches = g_launches.load() - l0;
      e.memcpys = g_memcpys.load() - m0;
      e.seen = key;
    }
    ML2O_CUDA_CHECK(cudaEventRecord(stop_, stream_));
    ML2O_CUDA_CHECK(cudaEventRecord(e.args_free, stream_));
    return e;
  }

  // The launch sequence of a layout (also what a capture records).
  void record(PlanEntry& e) {
    const UnrollPlan& p = e.plan;
    const int n = static_cast<int>(p.items());
    UnrollArgs* args = e.args.as<UnrollArgs>();
    to_device(args, e.args_host.as<void>(), sizeof(UnrollArgs) * n, stream_);
    if (g_poison.load()) {  // an element the kernels fail to write reads back as NaN
      poison(partial_, sizeof(float) * p.partial_floats);
      poison(e.reduced, sizeof(float) * p.total_rows);
      if (p.backward) {
        poison(tape_, sizeof(float) * p.tape_floats);
        poison(gT_, sizeof(float) * p.gT_floats);
      }
    }
    for (const bool backward : {false, true}) {
      if (backward && !p.backward) break;
      for (const LaunchGroup& g : p.groups)
        launch_unroll_group(g, BatchArgs{args, e.first_block(), n, g.block0}, p.P, p.dual, backward, stream_);
    }
    segmented_sum(partial_.as<float>(), e.reduced.as<float>(), p.total_rows, e.seg_begin(), e.seg_end(),
                  e.cub_tmp, e.cub_bytes);
    if (p.backward) launch_scatter_rows(e.reduced.as<float>(), args, n, p.P, stream_);
    if (!p.dual) to_host(e.losses_host.as<void>(), e.reduced.as<float>(), sizeof(float) * p.loss_rows, stream_);
  }

  // Captures the sequence as a graph (replacing the layout's previous one) and launches it.
  void capture(PlanEntry& e, const PlanEntry::Key& key) {
    if (e.exec) {
      ML2O_CUDA_CHECK(cudaGraphExecDestroy(e.exec));
      e.exec = nullptr;
      e.key.reset();
    }
    cudaGraph_t graph = nullptr;
    const int64_t l0 = g_launches.load(), m0 = g_memcpys.load();
    ML2O_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    try {
      record(e);
    } catch (...) {
      (void)cudaStreamEndCapture(stream_, &graph);  // leave the stream usable
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    ML2O_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    e.launches = g_launches.load() - l0;  // counted once here: this capture's own launch below
    e.memcpys = g_memcpys.load() - m0;
    const cudaError_t err = cudaGraphInstantiate(&e.exec, graph, 0);
    cudaGraphDestroy(graph);
    ML2O_CUDA_CHECK(err);
    e.key = key;
    ML2O_CUDA_CHECK(cudaGraphLaunch(e.exec, stream_));
    ++g_graph_launches;
  }

  // The cached entry of the plan's layout, building it (tables uploaded once) when new.
  PlanEntry& entry_for(const UnrollPlan& plan) {
    for (auto& e : cache_)
      if (e->plan.same_layout(plan)) {
        e->last_used = ++tick_;
        return *e;
      }
    if (plan.total_rows > 0x7fffffffLL)
      throw std::runtime_error("cuda unroll: " + std::to_string(plan.total_rows) +
                               " reduction rows in one call; split the batch");
    if (cache_.size() >= kPlanCacheSize) {
      ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the evicted graph may still run
      cache_.erase(std::min_element(cache_.begin(), cache_.end(), [](const auto& a, const auto& b) {
        return a->last_used < b->last_used;
      }));
    }
    auto e = std::make_unique<PlanEntry>();
    e->plan = plan;
    std::vector<int64_t> begin, end;
    cuda::segment_offsets(plan, begin, end);
    std::vector<int64_t> tables(plan.first_block);
    tables.insert(tables.end(), begin.begin(), begin.end());
    tables.insert(tables.end(), end.begin(), end.end());
    e->tables.ensure(sizeof(int64_t) * tables.size());
    to_device(e->tables.as<void>(), tables.data(), sizeof(int64_t) * tables.size(), stream_);
    const size_t n = plan.items();
    e->args.ensure(sizeof(UnrollArgs) * n);
    e->args_host.ensure(sizeof(UnrollArgs) * n);
    e->losses_host.ensure(sizeof(float) * std::max<int64_t>(plan.loss_rows, 1));
    e->reduced.ensure(sizeof(float) * std::max<int64_t>(plan.total_rows, 1));
    ML2O_CUDA_CHECK(cub::DeviceSegmentedReduce::Sum(nullptr, e->cub_bytes, static_cast<const float*>(nullptr),
                                                    static_cast<float*>(nullptr), static_cast<int>(plan.total_rows),
                                                    e->seg_begin(), e->seg_end(), stream_));
    e->cub_tmp.ensure(std::max<size_t>(e->cub_bytes, 16));
    ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));  // `tables` lives on this frame
    e->last_used = ++tick_;
    cache_.push_back(std::move(e));
    return *cache_.back();
  }

  // Grows the shared scratch to the plan's needs, refusing up front (with the estimate) what
  // cannot fit.
  void reserve_scratch(const UnrollPlan& p) {
    const size_t tape_bytes = sizeof(float) * static_cast<size_t>(p.tape_floats);
    const size_t gT_bytes = sizeof(float) * static_cast<size_t>(p.gT_floats);
    const size_t partial_bytes = sizeof(float) * static_cast<size_t>(p.partial_floats);
    const size_t need = grow_bytes(partial_, partial_bytes) + grow_bytes(tape_, tape_bytes) + grow_bytes(gT_, gT_bytes);
    size_t free_b = 0, total_b = 0;
    if (need > 0 && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess && need > free_b) {
      int64_t coords = 0;
      for (const PlanShape& s : p.shapes) coords += s.instances * s.dim;
      throw std::runtime_error(
          std::string(p.dual ? "cuda hvp" : "cuda unroll") + " of " + std::to_string(p.items()) +
          " item(s), " + std::to_string(coords) + " coordinates x T = " + std::to_string(p.T) + " needs " +
          gib(need) + " more device memory (BPTT tape " + gib(tape_bytes) + ", " +
          (p.dual ? "672" : "336") + " B per coordinate-step) but " + gib(free_b) + " of " + gib(total_b) +
          " is free; lower the instances or the unroll length");
    }
    if (need > 0) ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));  // a buffer in use may be freed
    partial_.ensure(std::max<size_t>(partial_bytes, 4));
    if (tape_bytes) tape_.ensure(tape_bytes);
    if (gT_bytes) gT_.ensure(gT_bytes);
  }

  // Baselines: offsets[i] = i * blocks, i = 0..rows (segment i of a [rows][blocks] array).
  const int64_t* segment_offsets(int64_t rows, int64_t blocks) {
    if (rows > offsets_rows_ || blocks != offsets_blocks_) {
      std::vector<int64_t> h(rows + 1);
      for (int64_t i = 0; i <= rows; ++i) h[i] = i * blocks;
      offsets_.ensure(sizeof(int64_t) * (rows + 1));
      to_device(offsets_.as<int64_t>(), h.data(), sizeof(int64_t) * (rows + 1), stream_);
      ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));  // h lives on this frame
      offsets_rows_ = rows;
      offsets_blocks_ = blocks;
    }
    return offsets_.as<int64_t>();
  }

  // out[i] = sum of in[begin[i] .. end[i]), a fixed-order tree per segment (no atomics).
  template <class T>
  void segmented_sum(const T* in, T* out, int64_t rows, const int64_t* begin, const int64_t* end,
                     DeviceBuffer& tmp, size_t bytes) {
    ML2O_CUDA_CHECK(cub::DeviceSegmentedReduce::Sum(tmp.as<void>(), bytes, in, out, static_cast<int>(rows),
                                                    begin, end, stream_));
    ML2O_CUDA_CHECK_LAUNCH("cub::DeviceSegmentedReduce::Sum");
    count_launch();
  }
  template <class T> void segmented_sum(const T* in, T* out, int64_t rows, const int64_t* offsets) {
    size_t bytes = 0;
    ML2O_CUDA_CHECK(cub::DeviceSegmentedReduce::Sum(nullptr, bytes, in, out, static_cast<int>(rows), offsets,
                                                    offsets + 1, stream_));
    cub_tmp_.ensure(std::max<size_t>(bytes, 16));
    segmented_sum(in, out, rows, offsets, offsets + 1, cub_tmp_, bytes);
  }

  void poison(DeviceBuffer& buf, size_t bytes) {
    if (bytes == 0) return;
    ML2O_CUDA_CHECK(cudaMemsetAsync(buf.as<void>(), 0xFF, bytes, stream_));  // all-ones = NaN
  }
  void record_kernel_time() {
    float ms = 0.0f;
    ML2O_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    g_last_kernel_ms.store(ms);
  }

  int dev_ = 0;
  std::string device_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
  DeviceBuffer tape_, gT_, partial_;  // unroll / HVP scratch shared by every layout
  std::vector<std::unique_ptr<PlanEntry>> cache_;
  uint64_t tick_ = 0;
  DeviceBuffer offsets_, cub_tmp_, ptrs_, flag_;
  std::vector<const float*> mean_ptrs_;  // what ptrs_ holds
  DeviceBuffer coef_, lip_, bpartial_, breduced_;
  int64_t offsets_rows_ = -1, offsets_blocks_ = -1;
};

}  // namespace

void count_launch() { ++g_launches; }

void count_alloc(std::ptrdiff_t bytes) {
  const int64_t now = (g_bytes += bytes);
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}

}  // namespace cuda

bool cuda_device_present() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error state (no driver, no device)
    return false;
  }
  return n > 0;
}

std::unique_ptr<Backend> make_cuda_backend() { return std::make_unique<cuda::CudaBackend>(); }

CudaStats cuda_stats() {
  CudaStats s;
  s.launches = cuda::g_launches.load();
  s.memcpys = cuda::g_memcpys.load();
  s.device_bytes = cuda::g_bytes.load();
  s.peak_device_bytes = cuda::g_peak.load();
  s.last_kernel_ms = cuda::g_last_kernel_ms.load();
  s.graph_launches = cuda::g_graph_launches.load();
  if (cuda_device_present()) {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
      s.mem_free = free_b;
      s.mem_total = total_b;
    } else {
      (void)cudaGetLastError();
    }
  }
  return s;
}

void cuda_reset_peak() { cuda::g_peak.store(cuda::g_bytes.load()); }

void cuda_set_poison(bool on) { cuda::g_poison.store(on); }

void cuda_set_kernel_variant(int variant) {
  if (variant < 0 || variant > 3)
    throw std::invalid_argument("cuda_set_kernel_variant: " + std::to_string(variant) +
                                " is not 0 (ML2O_CUDA_KERNEL / default), 1, 2 or 3 (v3-lab)");
  cuda::g_variant_override.store(variant);
}

int cuda_kernel_variant() { return cuda::kernel_variant(); }

void cuda_set_graphs(int mode) {
  if (mode < 0 || mode > 2)
    throw std::invalid_argument("cuda_set_graphs: " + std::to_string(mode) +
                                " is not 0 (ML2O_CUDA_GRAPHS / default), 1 (off) or 2 (on)");
  cuda::g_graphs_override.store(mode);
}

bool cuda_graphs() { return cuda::graphs_enabled(); }

namespace cuda {
int kernel_variant() {
  const int o = g_variant_override.load();
  return o != 0 ? o : env_kernel_variant();
}
}  // namespace cuda

Task<float> cuda_sample_task(const TaskSpec& spec) {
  if (spec.family == Family::rosenbrock && spec.dim != 2)
    throw std::invalid_argument("rosenbrock needs dim = 2");
  if (spec.dim < 1 || spec.instances < 0)
    throw std::invalid_argument("cuda_sample_task: dim must be >= 1 and instances >= 0");
  if (!cuda_device_present()) throw std::runtime_error("cuda_sample_task: no CUDA device is visible");
  Task<float> t;
  t.spec = spec;
  const size_t nd = static_cast<size_t>(spec.instances) * spec.dim;
  const bool matrix = spec.family == Family::lasso || spec.family == Family::quadratic;
  t.x0.resize(nd);
  if (matrix) {
    t.A.resize(nd * spec.dim);
    t.b.resize(nd);
  }
  if (nd == 0) return t;
  cuda::DeviceBuffer A, b, x0;
  if (matrix) {
    A.ensure(sizeof(float) * t.A.size());
    b.ensure(sizeof(float) * t.b.size());
  }
  x0.ensure(sizeof(float) * nd);
  cuda::launch_sample_task(spec, matrix ? A.as<float>() : nullptr, matrix ? b.as<float>() : nullptr,
                           x0.as<float>(), cudaStreamLegacy);
  if (matrix) {
    ML2O_CUDA_CHECK(cudaMemcpy(t.A.data(), A.as<float>(), sizeof(float) * t.A.size(),
                               cudaMemcpyDeviceToHost));
    ML2O_CUDA_CHECK(cudaMemcpy(t.b.data(), b.as<float>(), sizeof(float) * t.b.size(),
                               cudaMemcpyDeviceToHost));
  }
  ML2O_CUDA_CHECK(cudaMemcpy(t.x0.data(), x0.as<float>(), sizeof(float) * nd, cudaMemcpyDeviceToHost));
  return t;
}

}  // namespace ml2o
