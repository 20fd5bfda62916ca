// The CUDA backend: keeps tasks resident on the device, runs the fused unroll kernels (unroll.cu)
// and the baselines (baselines.cu), and reduces per-block partials in a fixed order.
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

// 64-bit content hash, 8 bytes at a time (a cache key, not a checksum of record).
uint64_t hash_bytes(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  size_t i = 0;
  auto mix = [&h](uint64_t w) {
    h ^= w;
    h *= 0x9E3779B97F4A7C15ull;
    h ^= h >> 31;
  };
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    mix(w);
  }
  uint64_t tail = 0;
  for (int s = 0; i < n; ++i, s += 8) tail |= static_cast<uint64_t>(p[i]) << s;
  mix(tail ^ (static_cast<uint64_t>(n) << 56));
  return h;
}
template <class T> uint64_t hash_value(uint64_t h, const T& v) { return hash_bytes(h, &v, sizeof v); }

uint64_t task_key(const Task<float>& t) {
  const TaskSpec& s = t.spec;
  uint64_t h = 0xcbf29ce484222325ull;
  h = hash_value(h, static_cast<int>(s.family));
  h = hash_value(h, s.dim);
  h = hash_value(h, s.instances);
  h = hash_value(h, s.sigma);
  h = hash_value(h, s.lam);
  h = hash_value(h, s.b_lo);
  h = hash_value(h, s.b_hi);
  h = hash_value(h, s.x0_scale);
  h = hash_value(h, s.alpha);
  h = hash_value(h, s.seed);
  h = hash_value(h, t.A.size());
  h = hash_bytes(h, t.A.data(), t.A.size() * sizeof(float));
  h = hash_value(h, t.b.size());
  h = hash_bytes(h, t.b.data(), t.b.size() * sizeof(float));
  return h;
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
  if (t.spec.family == Family::rosenbrock && d != 2)
    throw std::invalid_argument("cuda backend: rosenbrock needs dim = 2");
}

struct ResidentTask {
  uint64_t key = 0;
  TaskSpec spec;
  DeviceBuffer A, b;
  uint64_t last_use = 0;
  TaskView<float> view() const {
    return TaskView<float>{spec.family, spec.dim, spec.instances,
                           A.bytes() ? A.as<float>() : nullptr, b.bytes() ? b.as<float>() : nullptr,
                           static_cast<float>(spec.lam), static_cast<float>(spec.alpha)};
  }
};

constexpr size_t kTaskCacheEntries = 8;

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
  }
  ~CudaBackend() override {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "cuda"; }
  std::string device() const override { return device_; }

  UnrollResult<float> unroll(const OptimizerHyper& hyper, const std::vector<float>& w,
                             const Task<float>& task, Trajectory<float>& traj, int T,
                             GradMode mode) override {
    const int P = param_count(hyper.arch);
    if (static_cast<int>(w.size()) != P)
      throw std::invalid_argument("cuda unroll: " + std::to_string(w.size()) + " weights, but " +
                                  arch_name(hyper.arch) + " has " + std::to_string(P));
    if (T < 0) throw std::invalid_argument("cuda unroll: T must be >= 0");
    check_task_shape(task);
    const int64_t N = task.spec.instances;
    const int d = task.spec.dim;
    const int64_t C = N * d;
    if (static_cast<int64_t>(traj.x.size()) != C || static_cast<int64_t>(traj.coord.size()) != C)
      throw std::invalid_argument("cuda unroll: trajectory size does not match the task");
    const Geometry geo = make_geometry(N, d);
    const ResidentTask& rt = resident(task);
    const bool backward = mode != GradMode::none;
    const int64_t loss_row0 = backward ? P : 0;
    const int64_t rows = loss_row0 + T + 1;

    // Refuse up front, with the estimate, what cannot fit, rather than fail halfway.
    const size_t tape_bytes = backward ? sizeof(float) * static_cast<size_t>(T) * kTapeFields * C : 0;
    const size_t need = grow_bytes(w_, sizeof(float) * P) + grow_bytes(x_, sizeof(float) * C) +
                        grow_bytes(coord_, sizeof(CoordState<float>) * C) +
                        grow_bytes(partial_, sizeof(float) * rows * geo.blocks) +
                        grow_bytes(tape_, tape_bytes) + grow_bytes(gT_, backward ? sizeof(float) * C : 0);
    size_t free_b = 0, total_b = 0;
    if (need > 0 && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess && need > free_b)
      throw std::runtime_error(
          "cuda unroll of " + std::to_string(N) + " instances x d = " + std::to_string(d) + " x T = " +
          std::to_string(T) + " needs " + gib(need) + " more device memory (BPTT tape " + gib(tape_bytes) +
          ", 336 B per coordinate-step) but " + gib(free_b) + " of " + gib(total_b) +
          " is free; lower the instances or the unroll length");

    w_.ensure(sizeof(float) * P);
    x_.ensure(sizeof(float) * C);
    coord_.ensure(sizeof(CoordState<float>) * C);
    partial_.ensure(sizeof(float) * rows * geo.blocks);
    reduced_.ensure(sizeof(float) * rows);
    if (backward) {
      tape_.ensure(sizeof(float) * static_cast<size_t>(T) * kTapeFields * C);
      gT_.ensure(sizeof(float) * C);
    }
    const int64_t* offsets = segment_offsets(rows, geo.blocks);
    if (g_poison.load()) {  // an element the kernels fail to write reads back as NaN
      poison(partial_, sizeof(float) * rows * geo.blocks);
      poison(reduced_, sizeof(float) * rows);
      if (backward) {
        poison(tape_, sizeof(float) * static_cast<size_t>(T) * kTapeFields * C);
        poison(gT_, sizeof(float) * C);
      }
    }
    upload(w_.as<float>(), w.data(), sizeof(float) * P);
    upload(x_.as<float>(), traj.x.data(), sizeof(float) * C);
    upload(coord_.as<CoordState<float>>(), traj.coord.data(), sizeof(CoordState<float>) * C);

    UnrollArgs a;
    a.hyper = hyper;
    a.w = w_.as<float>();
    a.P = P;
    a.task = rt.view();
    a.x = x_.as<float>();
    a.coord = coord_.as<CoordState<float>>();
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

    ML2O_CUDA_CHECK(cudaEventRecord(start_, stream_));
    const int variant = kernel_variant();
    launch_unroll_forward(a, geo, stream_, variant);
    if (backward) launch_unroll_backward(a, geo, stream_, variant);
    segmented_sum(partial_.as<float>(), reduced_.as<float>(), rows, offsets);
    ML2O_CUDA_CHECK(cudaEventRecord(stop_, stream_));

    std::vector<float> reduced(rows);
    download(reduced.data(), reduced_.as<float>(), sizeof(float) * rows);
    download(traj.x.data(), x_.as<float>(), sizeof(float) * C);
    download(traj.coord.data(), coord_.as<CoordState<float>>(), sizeof(CoordState<float>) * C);
    ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));
    record_kernel_time();

    // Assemble exactly as unroll_cpu does from its per-chunk sums.
    traj.k += T;
    UnrollResult<float> out;
    out.step_loss.assign(T + 1, 0.0);
    for (int t = 0; t <= T; ++t) {
      const float step = reduced[loss_row0 + t] * inv_n;
      out.step_loss[t] = static_cast<double>(step);
      out.meta_loss += step;
    }
    if (backward) out.grad.assign(reduced.begin(), reduced.begin() + P);
    return out;
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
    check_task_shape(task);
    const int64_t N = task.spec.instances;
    const int d = task.spec.dim;
    const int64_t C = N * d;
    if (static_cast<int64_t>(task.x0.size()) != C)
      throw std::invalid_argument("baseline: task.x0 has the wrong size");
    const Geometry geo = make_geometry(N, d);
    const ResidentTask& rt = resident(task);
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
    x_.ensure(sizeof(float) * C);
    coef_.ensure(sizeof(float) * coef.size());
    bpartial_.ensure(sizeof(double) * rows * geo.blocks);
    breduced_.ensure(sizeof(double) * rows);
    const int64_t* offsets = segment_offsets(rows, geo.blocks);
    if (g_poison.load()) {
      poison(bpartial_, sizeof(double) * rows * geo.blocks);
      poison(breduced_, sizeof(double) * rows);
    }
    upload(x_.as<float>(), task.x0.data(), sizeof(float) * C);
    if (!coef.empty()) upload(coef_.as<float>(), coef.data(), sizeof(float) * coef.size());
    if (proximal) {
      const std::vector<double> L = lipschitz_constants(task);
      lip_.ensure(sizeof(double) * N);
      upload(lip_.as<double>(), L.data(), sizeof(double) * N);
    }

    BaselineArgs a;
    a.kind = spec.kind;
    a.task = rt.view();
    a.x0 = x_.as<float>();
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
    download(sums.data(), breduced_.as<double>(), sizeof(double) * rows);
    ML2O_CUDA_CHECK(cudaStreamSynchronize(stream_));
    record_kernel_time();
    for (double& s : sums) s /= static_cast<double>(N);
    return sums;
  }

 private:
  // The task's A and b on the device, uploaded once per distinct content.
  const ResidentTask& resident(const Task<float>& task) {
    const uint64_t key = task_key(task);
    ++use_clock_;
    for (auto& e : cache_)
      if (e->key == key) {
        e->last_use = use_clock_;
        return *e;
      }
    if (cache_.size() >= kTaskCacheEntries) {
      auto lru = std::min_element(cache_.begin(), cache_.end(), [](const auto& a, const auto& b) {
        return a->last_use < b->last_use;
      });
      cache_.erase(lru);
    }
    auto e = std::make_unique<ResidentTask>();
    e->key = key;
    e->spec = task.spec;
    e->last_use = use_clock_;
    if (!task.A.empty()) {
      e->A.ensure(sizeof(float) * task.A.size());
      upload(e->A.as<float>(), task.A.data(), sizeof(float) * task.A.size());
    }
    if (!task.b.empty()) {
      e->b.ensure(sizeof(float) * task.b.size());
      upload(e->b.as<float>(), task.b.data(), sizeof(float) * task.b.size());
    }
    cache_.push_back(std::move(e));
    return *cache_.back();
  }

  // offsets[i] = i * blocks, i = 0..rows: segment i of a [rows][blocks] array.
  const int64_t* segment_offsets(int64_t rows, int64_t blocks) {
    if (rows > offsets_rows_ || blocks != offsets_blocks_) {
      std::vector<int64_t> h(rows + 1);
      for (int64_t i = 0; i <= rows; ++i) h[i] = i * blocks;
      offsets_.ensure(sizeof(int64_t) * (rows + 1));
      upload(offsets_.as<int64_t>(), h.data(), sizeof(int64_t) * (rows + 1));
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

  void upload(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    ML2O_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    ++g_memcpys;
  }
  void download(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    ML2O_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    ++g_memcpys;
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
  std::vector<std::unique_ptr<ResidentTask>> cache_;
  uint64_t use_clock_ = 0;
  DeviceBuffer w_, x_, coord_, tape_, gT_, partial_, reduced_, offsets_, cub_tmp_;
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
