// The CUDA backend: tasks, trajectories, weight vectors and Adam moments live on the device
// (uploaded once, read back only for checkpoints and outputs); it runs the fused unroll kernels
// (unroll.cu), the vector kernels (vector_ops.cu) and the baselines (baselines.cu), and reduces
// per-block partials in a fixed order.
//
// One unroll with a meta-gradient = 3 launches: forward (T steps, writes the tape), backward
// (T steps, per-block weight-gradient partials), one cub::DeviceSegmentedReduce over
// [P weight rows + T + 1 loss rows][blocks]. Forward-only = 2 launches. The number of blocks
// depends only on (N, d), so results are bit-identical run to run and across GPUs of the same
// architecture.
#include <cub/device/device_segmented_reduce.cuh>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <memory>
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

std::atomic<int64_t> g_launches{0}, g_memcpys{0}, g_bytes{0}, g_peak{0};
std::atomic<bool> g_poison{false};
std::atomic<double> g_last_kernel_ms{0.0};
std::atomic<int> g_variant_override{0};  // 0: ML2O_CUDA_KERNEL or the default

// ML2O_CUDA_KERNEL, read once: unset or empty = kDefaultKernelVariant, "v1" / "v2", else an error.
int env_kernel_variant() {
  static const int v = [] {
    const char* e = std::getenv("ML2O_CUDA_KERNEL");
    if (e == nullptr || *e == '\0') return kDefaultKernelVariant;
    const std::string s(e);
    if (s == "v1") return 1;
    if (s == "v2") return 2;
    return -1;
  }();
  if (v < 0)
    throw std::runtime_error(std::string("cuda backend: ML2O_CUDA_KERNEL='") +
                             std::getenv("ML2O_CUDA_KERNEL") + "' is not a kernel variant (v1 or v2)");
  return v;
}

void check_task_shape(const Task<float>& t) {
  const int64_t N = t.spec.instances;
  const int d = t.spec.dim;
  if (N < 1 || d < 1)
    throw std::invalid_argument("cuda backend: a task needs instances >= 1 and dim >= 1");
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

// ---- objects held on the device ------------------------------------------------------------------
// Every object is used on the backend's one stream, so operations on it are ordered.
class CudaTask final : public BackendTask {
 public:
  CudaTask(const Task<float>& t, cudaStream_t s) : BackendTask(t.spec), host(t), geo(make_geometry(t.spec.instances, t.spec.dim)) {
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
  Task<float> host;  // kept for the baselines' Lipschitz constants and host-reference HVPs
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

class CudaBackend final : public Backend {
 public:
  CudaBackend() {
    if (!cuda_device_present()) throw std::runtime_error("cuda backend: no CUDA device is visible");
    (void)kernel_variant();  // an invalid ML2O_CUDA_KERNEL fails here, before any work
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
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "cuda"; }
  std::string device() const override { return device_; }
  BackendCaps caps() const override {
    return BackendCaps{HvpSupport::host_reference,
                       "Hessian-vector products (M-L2O second order) run on the CPU's Dual<double> "
                       "reference: operands are copied to the host"};
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
    std::vector<UnrollLoss> out;
    out.reserve(items.size());
    ML2O_CUDA_CHECK(cudaEventRecord(start_, stream_));
    for (const UnrollItem& it : items) out.push_back(unroll_item(hyper, it, T, mode));
    ML2O_CUDA_CHECK(cudaEventRecord(stop_, stream_));
    ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));
    record_kernel_time();
    return out;
  }

  void hvp(const OptimizerHyper& hyper, const BackendTrajectory& start, const BackendVector& w,
           const BackendVector& v, int T, GradMode mode, BackendVector& out) override {
    const auto& task = mine<const CudaTask>(start.task());
    out.write(hvp_dual(hyper, w.read(), task.host, start.read(), T, v.read(), mode));
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
    ptrs_.ensure(sizeof(const float*) * ptrs.size());
    to_device(ptrs_.as<void>(), ptrs.data(), sizeof(const float*) * ptrs.size(), stream_);
    launch_mean(o.data(), ptrs_.as<const float*>(), static_cast<int>(ptrs.size()),
                static_cast<int64_t>(o.size()), stream_);
    ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));  // ptrs lives on this frame
  }

  bool all_finite(const BackendVector& v) override {
    const auto& x = mine<const CudaVector>(v);
    const int one = 1;
    to_device(flag_.as<int>(), &one, sizeof(int), stream_);
    launch_finite(x.data(), static_cast<int64_t>(x.size()), flag_.as<int>(), stream_);
    int ok = 0;
    to_host(&ok, flag_.as<int>(), sizeof(int), stream_);
    ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return ok == 1;
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
                                   int steps) override {
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
  // One item: forward (and backward) kernels on the trajectory's own device buffers, then the
  // segmented sum of the per-block partials; the gradient stays on the device.
  UnrollLoss unroll_item(const OptimizerHyper& hyper, const UnrollItem& it, int T, GradMode mode) {
    const auto& task = mine<const CudaTask>(*it.task);
    auto& traj = mine<CudaTrajectory>(*it.traj);
    const auto& w = mine<const CudaVector>(*it.w);
    if (&traj.task() != it.task) throw std::logic_error("cuda backend: trajectory of another task");
    const int P = param_count(hyper.arch);
    if (static_cast<int>(w.size()) != P)
      throw std::invalid_argument("cuda unroll: " + std::to_string(w.size()) + " weights, but " +
                                  arch_name(hyper.arch) + " has " + std::to_string(P));
    const bool backward = mode != GradMode::none;
    CudaVector* grad = backward ? &mine<CudaVector>(*it.grad) : nullptr;
    if (backward && static_cast<int>(grad->size()) != P)
      throw std::invalid_argument("cuda unroll: the gradient vector has the wrong size");
    const int64_t N = task.spec().instances;
    const int64_t C = task.coordinates();
    const Geometry& geo = task.geo;
    const int64_t loss_row0 = backward ? P : 0;
    const int64_t rows = loss_row0 + T + 1;
    const size_t tape_bytes = backward ? sizeof(float) * static_cast<size_t>(T) * kTapeFields * C : 0;
    reserve_scratch(N, task.spec().dim, T, tape_bytes, rows * geo.blocks, rows, backward ? C : 0);
    const int64_t* offsets = segment_offsets(rows, geo.blocks);
    if (g_poison.load()) {  // an element the kernels fail to write reads back as NaN
      poison(partial_, sizeof(float) * rows * geo.blocks);
      poison(reduced_, sizeof(float) * rows);
      if (backward) {
        poison(tape_, tape_bytes);
        poison(gT_, sizeof(float) * C);
      }
    }
    UnrollArgs a;
    a.hyper = hyper;
    a.w = w.data();
    a.P = P;
    a.task = task.view();
    a.x = traj.x.as<float>();
    a.coord = traj.coord.as<CoordState<float>>();
    a.k0 = traj.k;
    a.T = T;
    a.ipb = geo.ipb;
    a.blocks = geo.blocks;
    a.tape = backward && T > 0 ? tape_.as<float>() : nullptr;
    a.gT = backward ? gT_.as<float>() : nullptr;
    a.partial = partial_.as<float>();
    a.loss_row0 = loss_row0;
    const float inv_n = 1.0f / static_cast<float>(static_cast<double>(N));  // as unroll_cpu
    a.inv_n = inv_n;
    a.second = mode == GradMode::second_derivatives;
    const int variant = kernel_variant();
    launch_unroll_forward(a, geo, stream_, variant);
    if (backward) launch_unroll_backward(a, geo, stream_, variant);
    segmented_sum(partial_.as<float>(), reduced_.as<float>(), rows, offsets);
    if (backward) copy_on_device(grad->data(), reduced_.as<float>(), sizeof(float) * P, stream_);
    std::vector<float> losses(T + 1);
    to_host(losses.data(), reduced_.as<float>() + loss_row0, sizeof(float) * (T + 1), stream_);
    ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));
    traj.k += T;
    // Assemble exactly as unroll_cpu does from its per-chunk sums.
    UnrollLoss out;
    out.step_loss.assign(T + 1, 0.0);
    for (int t = 0; t <= T; ++t) {
      const float step = losses[t] * inv_n;
      out.step_loss[t] = static_cast<double>(step);
      out.meta_loss += step;
    }
    return out;
  }

  // Grows the scratch buffers, refusing up front (with the estimate) what cannot fit.
  void reserve_scratch(int64_t N, int d, int T, size_t tape_bytes, int64_t partial_floats,
                       int64_t rows, int64_t gT_floats) {
    const size_t need = grow_bytes(partial_, sizeof(float) * partial_floats) +
                        grow_bytes(tape_, tape_bytes) + grow_bytes(gT_, sizeof(float) * gT_floats);
    size_t free_b = 0, total_b = 0;
    if (need > 0 && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess && need > free_b)
      throw std::runtime_error(
          "cuda unroll of " + std::to_string(N) + " instances x d = " + std::to_string(d) + " x T = " +
          std::to_string(T) + " needs " + gib(need) + " more device memory (BPTT tape " + gib(tape_bytes) +
          ", 336 B per coordinate-step) but " + gib(free_b) + " of " + gib(total_b) +
          " is free; lower the instances or the unroll length");
    partial_.ensure(sizeof(float) * partial_floats);
    reduced_.ensure(sizeof(float) * rows);
    if (tape_bytes) tape_.ensure(tape_bytes);
    if (gT_floats) gT_.ensure(sizeof(float) * gT_floats);
  }

  // offsets[i] = i * blocks, i = 0..rows: segment i of a [rows][blocks] array.
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

  // out[i] = sum of in[offsets[i] .. offsets[i+1]), a fixed-order tree per segment (no atomics).
  template <class T> void segmented_sum(const T* in, T* out, int64_t rows, const int64_t* offsets) {
    size_t bytes = 0;
    ML2O_CUDA_CHECK(cub::DeviceSegmentedReduce::Sum(nullptr, bytes, in, out, rows, offsets,
                                                    offsets + 1, stream_));
    cub_tmp_.ensure(std::max<size_t>(bytes, 16));
    ML2O_CUDA_CHECK(cub::DeviceSegmentedReduce::Sum(cub_tmp_.as<void>(), bytes, in, out, rows,
                                                    offsets, offsets + 1, stream_));
    ML2O_CUDA_CHECK_LAUNCH("cub::DeviceSegmentedReduce::Sum");
    count_launch();
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
  DeviceBuffer tape_, gT_, partial_, reduced_, offsets_, cub_tmp_, ptrs_, flag_;
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
  if (variant < 0 || variant > 2)
    throw std::invalid_argument("cuda_set_kernel_variant: " + std::to_string(variant) +
                                " is not 0 (ML2O_CUDA_KERNEL / default), 1 or 2");
  cuda::g_variant_override.store(variant);
}

int cuda_kernel_variant() { return cuda::kernel_variant(); }

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
