// Throughput of the unroll (forward + BPTT), of the long forward-only evaluation, and of the
// paper-size meta-iteration (L2O, M-L2O first and second order).
//
//   bench_unroll [--backend cuda|cpu] [--budget-s SECONDS] [--kernels v1,v2[,v3-lab]]
//
// Prints one JSON line per configuration on stdout (diagnostics on stderr). A coordinate-step is
// one coordinate advanced one optimizer step; for a gradient unroll it counts the forward and the
// backward of that step. Timing: one warm-up call (task upload, allocations), then repeated calls
// until at least 3 and about 1 s, the median reported: `ms_per_iter` is the wall time of one
// Backend::unroll call on backend-held state (task, trajectory, weights and gradient stay on the
// device; only the T + 1 losses come back), `kernel_ms` the device time of its launches measured
// with CUDA events. With CUDA, the sweep from 8k coordinates on, the other shapes and the long
// evaluation run the unroll kernels of `--kernels` (`kernel`: v1, v2 by default; v2 uses v1's
// kernels for d > 128; v3-lab is the unverified lab forward of kernels/lab/ with v2's backward);
// the paper-size meta-iterations run v2 with and without CUDA graphs and v1 with
// them (`graphs`). Without a CUDA device (or build) `--backend cuda` prints a message and exits 0.
// On the CPU, `device` names the unroll path: the tiled SIMD float path and its instruction set
// (docs/cpu.md); `ML2O_CPU_UNROLL=reference bench_unroll --backend cpu` times the scalar reference.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ml2o/backend.hpp"
#include "ml2o/lopt.hpp"
#ifdef ML2O_HAVE_CUDA
#include "ml2o/cuda_backend.hpp"
#endif

namespace {

using namespace ml2o;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

const char* mode_name(GradMode m) {
  return m == GradMode::none ? "none" : m == GradMode::gradient_constant ? "gradient_constant"
                                                                       : "second_derivatives";
}

struct Config {
  Arch arch = Arch::rnnprop;
  Family family = Family::lasso;
  int d = 10;
  int64_t instances = 13;
  int T = 20;
  GradMode mode = GradMode::gradient_constant;
  std::string label = "sweep";
  int kernel = 0;  // CUDA unroll kernel variant: 0 = the backend's default, 1 = v1, 2 = v2, 3 = v3-lab
};

std::string variant_name(int v) { return v == 3 ? "v3-lab" : "v" + std::to_string(v); }

// Selects the CUDA kernel variant for the following backend calls and returns its name.
std::string use_kernel(bool cuda, int variant) {
#ifdef ML2O_HAVE_CUDA
  if (cuda) {
    cuda_set_kernel_variant(variant);
    return variant_name(cuda_kernel_variant());
  }
#else
  (void)variant;
#endif
  (void)cuda;
  return "";
}

struct Stats {
  int64_t launches = 0, memcpys = 0, graph_launches = 0, peak_bytes = 0;
  double kernel_ms = 0.0;
  size_t mem_free = 0, mem_total = 0;
};

Stats read_stats(bool cuda) {
  Stats s;
#ifdef ML2O_HAVE_CUDA
  if (cuda) {
    const CudaStats c = cuda_stats();
    s.launches = c.launches;
    s.memcpys = c.memcpys;
    s.graph_launches = c.graph_launches;
    s.peak_bytes = c.peak_device_bytes;
    s.kernel_ms = c.last_kernel_ms;
    s.mem_free = c.mem_free;
    s.mem_total = c.mem_total;
  }
#else
  (void)cuda;
#endif
  return s;
}

void reset_peak(bool cuda) {
#ifdef ML2O_HAVE_CUDA
  if (cuda) cuda_reset_peak();
#else
  (void)cuda;
#endif
}

Task<float> make_task(const TaskSpec& spec, bool cuda) {
#ifdef ML2O_HAVE_CUDA
  if (cuda) return cuda_sample_task(spec);  // bit-identical to sample_task<float>, faster
#else
  (void)cuda;
#endif
  return sample_task<float>(spec);
}

TaskSpec spec_of(Family f, int d, int64_t N, uint64_t seed) {
  TaskSpec s;
  s.family = f;
  s.dim = d;
  s.instances = N;
  s.seed = seed;
  if (f == Family::rosenbrock) s.x0_scale = 1.0;
  return s;
}

// Runs one configuration on a fresh backend (so the peak memory is this configuration's own).
// Returns the median wall seconds per call.
double run_config_or_throw(const std::string& which, const Config& c, double* est_next) {
  const bool cuda = which == "cuda";
  std::string kernel = use_kernel(cuda, c.kernel);
  if ((kernel == "v2" || kernel == "v3-lab") && c.d > 128) kernel += " (v1 kernels: d > 128)";
  auto be = make_backend(which);
  OptimizerHyper hyper;
  hyper.arch = c.arch;
  const std::vector<float> w = init_optimizer(hyper, 1).weights;
  // Task, trajectory, weights and gradient live on the backend: a call moves no trajectory.
  const auto task = be->upload(make_task(spec_of(c.family, c.d, c.instances, 2), cuda));
  const auto traj = be->trajectory(*task);
  const auto wv = upload_vector(*be, w);
  const auto grad = be->vector(w.size());
  const UnrollItem item{task.get(), traj.get(), wv.get(), c.mode == GradMode::none ? nullptr : grad.get()};
  const std::span<const UnrollItem> items(&item, 1);
  const int64_t coords = c.instances * c.d;

  reset_peak(cuda);
  (void)be->unroll(hyper, items, c.T, c.mode);  // warm-up: allocations
  std::vector<double> wall, kern;
  int64_t launches = 0, memcpys = 0;
  const auto t_all = Clock::now();
  while (wall.size() < 3 || (seconds_since(t_all) < 1.0 && wall.size() < 20)) {
    const Stats before = read_stats(cuda);
    const auto t0 = Clock::now();
    (void)be->unroll(hyper, items, c.T, c.mode);
    wall.push_back(seconds_since(t0));
    const Stats after = read_stats(cuda);
    kern.push_back(after.kernel_ms);
    launches = after.launches - before.launches;
    memcpys = after.memcpys - before.memcpys;
  }
  const Stats st = read_stats(cuda);
  const double s = median(wall);
  const double steps = double(coords) * c.T;
  nlohmann::json j;
  j["bench"] = "unroll";
  j["config"] = c.label;
  j["backend"] = be->name();
  if (cuda) j["kernel"] = kernel;
  j["device"] = be->device();
  j["arch"] = arch_name(c.arch);
  j["family"] = family_name(c.family);
  j["mode"] = mode_name(c.mode);
  j["d"] = c.d;
  j["instances"] = c.instances;
  j["coordinates"] = coords;
  j["T"] = c.T;
  j["repeats"] = wall.size();
  j["ms_per_iter"] = s * 1e3;
  j["coord_steps_per_s"] = steps / s;
  if (cuda) {
    const double k = median(kern);
    j["kernel_ms"] = k;
    j["kernel_coord_steps_per_s"] = k > 0 ? steps / (k * 1e-3) : 0.0;
    j["launches_per_iter"] = launches;
    j["memcpys_per_iter"] = memcpys;
    j["peak_device_mb"] = double(st.peak_bytes) / 1e6;
    j["device_used_mb"] = double(st.mem_total - st.mem_free) / 1e6;
    j["tape_mb"] = c.mode == GradMode::none ? 0.0 : double(c.T) * 84 * 4 * double(coords) / 1e6;
  }
  std::cout << j.dump() << std::endl;
  if (est_next) *est_next = s;
  return s;
}

// A failing configuration (out of memory, say) is reported as a JSON line; the others still run.
double run_config(const std::string& which, const Config& c, double* est_next) {
  try {
    return run_config_or_throw(which, c, est_next);
  } catch (const std::exception& e) {
    std::cerr << "bench_unroll: " << c.label << " d=" << c.d << " instances=" << c.instances
              << " failed: " << e.what() << "\n";
    std::cout << nlohmann::json{{"bench", "unroll"}, {"config", c.label}, {"d", c.d},
                                {"instances", c.instances}, {"T", c.T}, {"error", e.what()}}
                     .dump()
              << std::endl;
    return -1.0;
  }
}

// What a paper-size meta-iteration runs: the trainer's meta-step (host/meta/trainer.cpp).
enum class MetaMethod { l2o, ml2o_first_order, ml2o_second_order };
const char* meta_method_name(MetaMethod m) {
  return m == MetaMethod::l2o ? "l2o" : m == MetaMethod::ml2o_first_order ? "ml2o_first_order"
                                                                         : "ml2o_second_order";
}

// Sets the CUDA graph mode (1 off, 2 on, 0 default) and returns "on" / "off".
std::string use_graphs(bool cuda, int mode) {
#ifdef ML2O_HAVE_CUDA
  if (cuda) {
    cuda_set_graphs(mode);
    return cuda_graphs() ? "on" : "off";
  }
#else
  (void)mode;
#endif
  (void)cuda;
  return "";
}

// The paper's training set: three LASSO tasks (sigma 0.1, 0.5, 1.0) x 128 instances x d = 10, T = 20.
// One meta-iteration as the trainer runs it, everything on the backend:
//   l2o:        copy the trajectories, one batched unroll of the 3 tasks, mean, finiteness, Adam;
//   ml2o_*:     adapted weights = w, support unroll (batched), inner SGD step (axpy) per task,
//               query unroll (batched) at the adapted weights, [second order: one batched HVP of the
//               3 tasks + axpy per task], mean, finiteness, Adam.
// The committed trajectories are not advanced (the trainer swaps them in; the device work per
// iteration is the same).
void run_meta_iteration(const std::string& which, int variant, int graphs, MetaMethod method) {
  const bool cuda = which == "cuda";
  const std::string kernel = use_kernel(cuda, variant);
  const std::string graph_mode = use_graphs(cuda, graphs);
  auto be = make_backend(which);
  OptimizerHyper hyper;
  const std::vector<float> w = init_optimizer(hyper, 1).weights;
  const bool ml2o = method != MetaMethod::l2o, second = method == MetaMethod::ml2o_second_order;
  const GradMode mode = second ? GradMode::second_derivatives : GradMode::gradient_constant;
  const float inner_lr = 1e-3f;
  const size_t n = 3;
  std::vector<std::unique_ptr<BackendTask>> tasks;
  std::vector<std::unique_ptr<BackendTrajectory>> trajs, work, seg;
  std::vector<std::unique_ptr<BackendVector>> grads, adapted, inner_point, hv;
  std::vector<const BackendVector*> grad_ptrs;
  const auto wv = upload_vector(*be, w);
  const auto step_grad = be->vector(w.size());
  const auto adam = be->adam(w.size());
  for (double sigma : {0.1, 0.5, 1.0}) {
    TaskSpec s = spec_of(Family::lasso, 10, 128, 3);
    s.sigma = sigma;
    tasks.push_back(be->upload(make_task(s, cuda)));
    trajs.push_back(be->trajectory(*tasks.back()));
    work.push_back(be->trajectory(*tasks.back()));
    seg.push_back(be->trajectory(*tasks.back()));
    grads.push_back(be->vector(w.size()));
    adapted.push_back(be->vector(w.size()));
    inner_point.push_back(be->vector(w.size()));
    hv.push_back(be->vector(w.size()));
    grad_ptrs.push_back(grads.back().get());
  }
  const auto items = [&](std::vector<std::unique_ptr<BackendTrajectory>>& t, bool at_adapted) {
    std::vector<UnrollItem> out;
    for (size_t i = 0; i < n; ++i)
      out.push_back(UnrollItem{tasks[i].get(), t[i].get(), at_adapted ? adapted[i].get() : wv.get(), grads[i].get()});
    return out;
  };
  double unroll_kernel_ms = 0.0;  // device time of this iteration's unroll calls
  const auto unroll = [&](const std::vector<UnrollItem>& it) {
    (void)be->unroll(hyper, it, 20, mode);
    unroll_kernel_ms += read_stats(cuda).kernel_ms;
  };
  const auto meta_iteration = [&] {
    unroll_kernel_ms = 0.0;
    if (!ml2o) {
      for (size_t i = 0; i < n; ++i) work[i]->assign(*trajs[i]);
      unroll(items(work, false));
    } else {
      for (size_t i = 0; i < n; ++i) {
        adapted[i]->assign(*wv);
        seg[i]->assign(*trajs[i]);
      }
      unroll(items(seg, true));
      for (size_t i = 0; i < n; ++i) {
        if (second) inner_point[i]->assign(*adapted[i]);
        be->axpy(*adapted[i], -inner_lr, *grads[i]);
        work[i]->assign(*seg[i]);
      }
      unroll(items(seg, true));
      if (second) {
        std::vector<HvpItem> h;
        for (size_t i = 0; i < n; ++i) h.push_back(HvpItem{trajs[i].get(), inner_point[i].get(), grads[i].get(), hv[i].get()});
        be->hvp(hyper, h, 20, mode);
        for (size_t i = 0; i < n; ++i) be->axpy(*grads[i], -inner_lr, *hv[i]);
      }
    }
    be->mean(*step_grad, grad_ptrs);
    if (be->all_finite(*step_grad)) be->adam_step(*wv, *step_grad, *adam, AdamHyper{});
  };
  reset_peak(cuda);
  meta_iteration();  // warm-up: allocations, plan tables
  meta_iteration();  // CUDA graphs are captured on a layout's second run
  std::vector<double> wall, kern;
  int64_t launches = 0, memcpys = 0, graph_launches = 0;
  const auto t_all = Clock::now();
  while (wall.size() < 5 || (seconds_since(t_all) < 1.0 && wall.size() < 200)) {
    const Stats before = read_stats(cuda);
    const auto t0 = Clock::now();
    meta_iteration();
    wall.push_back(seconds_since(t0));
    kern.push_back(unroll_kernel_ms);
    const Stats after = read_stats(cuda);
    launches = after.launches - before.launches;
    memcpys = after.memcpys - before.memcpys;
    graph_launches = after.graph_launches - before.graph_launches;
  }
  const double s = median(wall);
  nlohmann::json j;
  j["bench"] = "unroll";
  j["config"] = "paper_size_meta_iteration";
  j["method"] = meta_method_name(method);
  j["backend"] = be->name();
  if (cuda) {
    j["kernel"] = kernel;
    j["graphs"] = graph_mode;
  }
  j["device"] = be->device();
  j["arch"] = "rnnprop";
  j["family"] = "lasso";
  j["mode"] = mode_name(mode);
  j["tasks"] = n;
  j["d"] = 10;
  j["instances"] = 128;
  j["coordinates"] = 3 * 1280;
  j["T"] = 20;
  j["repeats"] = wall.size();
  j["ms_per_iter"] = s * 1e3;
  j["coord_steps_per_s"] = 3 * 1280 * 20 / s;
  if (cuda) {
    j["unroll_kernel_ms"] = median(kern);  // the unroll calls' device time (not the HVP's)
    j["launches_per_iter"] = launches;
    j["graph_launches_per_iter"] = graph_launches;
    j["memcpys_per_iter"] = memcpys;
    j["peak_device_mb"] = double(read_stats(cuda).peak_bytes) / 1e6;
  }
  std::cout << j.dump() << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
  std::string which = "cuda";
  double budget = 60.0;
  std::vector<int> kernels = {1, 2};  // the unroll variants timed with CUDA
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--backend" && i + 1 < argc) {
      which = argv[++i];
    } else if (a == "--budget-s" && i + 1 < argc) {
      budget = std::stod(argv[++i]);
    } else if (a == "--kernels" && i + 1 < argc) {
      kernels.clear();
      std::string list = argv[++i];
      for (size_t at = 0; at <= list.size();) {
        const size_t comma = std::min(list.find(',', at), list.size());
        const std::string k = list.substr(at, comma - at);
        if (k == "v1") kernels.push_back(1);
        else if (k == "v2") kernels.push_back(2);
        else if (k == "v3-lab") kernels.push_back(3);
        else {
          std::cerr << "bench_unroll: --kernels takes a comma-separated list of v1, v2, v3-lab, not '" << k << "'\n";
          return 2;
        }
        at = comma + 1;
      }
    } else if (a == "--help" || a == "-h") {
      std::cout << "usage: bench_unroll [--backend cuda|cpu] [--budget-s SECONDS] [--kernels v1,v2[,v3-lab]]\n"
                   "  --kernels: the CUDA unroll variants to time (default v1,v2; v3-lab is the\n"
                   "  unverified lab forward of kernels/lab/ with v2's backward, docs/kernels.md)\n";
      return 0;
    } else {
      std::cerr << "bench_unroll: unknown argument '" << a << "' (see --help)\n";
      return 2;
    }
  }
  if (which != "cuda" && which != "cpu") {
    std::cerr << "bench_unroll: --backend must be cuda or cpu, not '" << which << "'\n";
    return 2;
  }
  const bool cuda = which == "cuda";
  if (cuda && !cuda_available()) {
#ifdef ML2O_HAVE_CUDA
    const char* why = "no CUDA device is visible";
#else
    const char* why = "this build has no CUDA support";
#endif
    std::cerr << "bench_unroll: " << why << "; nothing to measure (use --backend cpu for the CPU)\n";
    std::cout << nlohmann::json{{"bench", "unroll"}, {"backend", "cuda"}, {"skipped", why}}.dump()
              << std::endl;
    return 0;
  }
  try {
    const auto t_start = Clock::now();
    auto left = [&] { return budget - seconds_since(t_start); };
    // 1. The sweep: RNNprop on LASSO d = 10, T = 20 with the meta-gradient, growing batches.
    const std::vector<int64_t> sweep = cuda ? std::vector<int64_t>{128, 1024, 8192, 65536, 262144,
                                                                  1048576, 4194304}
                                            : std::vector<int64_t>{128, 1024, 8192};
    double per_coord = 0.0;  // seconds per coordinate of the last size
    for (const int64_t target : sweep) {
      Config c;
      c.d = 10;
      c.instances = std::max<int64_t>(1, target / c.d);
      const int64_t coords = c.instances * c.d;
      // v1 and v2 from 8k coordinates on (the default variant below), each timed the same way
      const std::vector<int> variants =
          cuda && coords >= 8192 ? kernels : std::vector<int>{0};
      // warm-up + >= 3 timed calls per variant, predicted from the slower variant of the last size;
      // keep ~35% of the budget for the rest
      if (per_coord > 0 &&
          5.0 * per_coord * coords * double(variants.size()) > left() - 0.35 * budget) {
        std::cerr << "bench_unroll: stopping the sweep before " << coords
                  << " coordinates (time budget)\n";
        break;
      }
      bool failed = false;
      double worst = 0.0;
      for (const int v : variants) {
        c.kernel = v;
        const double s = run_config(which, c, nullptr);
        if (s < 0) failed = true;
        worst = std::max(worst, s / double(coords));
      }
      if (failed) break;  // failed (reported): larger sizes would fail too
      per_coord = worst;
    }
    // 2. Other shapes at one size: modes, archs, families, a large d.
    const int64_t mid = cuda ? 65536 : 1024;
    std::vector<Config> extra;
    {
      Config c;
      c.label = "shapes";
      c.instances = mid / 10;
      c.mode = GradMode::second_derivatives;
      extra.push_back(c);
      c.mode = GradMode::gradient_constant;
      c.arch = Arch::dmlstm;
      extra.push_back(c);
      c.arch = Arch::rnnprop;
      c.family = Family::rosenbrock;
      c.d = 2;
      c.instances = mid / 2;
      extra.push_back(c);
      c.family = Family::quadratic;
      c.d = 256;
      c.instances = std::max<int64_t>(1, mid / 256);
      extra.push_back(c);
    }
    for (Config& c : extra) {
      for (const int v : cuda ? kernels : std::vector<int>{0}) {
        if (left() < 0.25 * budget) break;
        c.kernel = v;
        run_config(which, c, nullptr);
      }
    }
    // 3. The long forward-only evaluation (the paper's 1,000 steps, theta frozen).
    {
      Config c;
      c.label = "long_eval";
      c.mode = GradMode::none;
      c.T = 1000;
      c.instances = (cuda ? 65536 : 130) / 10;
      for (const int v : cuda ? kernels : std::vector<int>{0}) {
        c.kernel = v;
        if (left() > 0.1 * budget) run_config(which, c, nullptr);
      }
    }
    // 4. The paper's size: one meta-iteration of L2O and of M-L2O first and second order; on CUDA
    //    with v2 and graphs (the default), v2 without graphs, and v1 with graphs.
    struct Variant {
      int kernel, graphs;
    };
    const std::vector<Variant> paper = cuda ? std::vector<Variant>{{2, 2}, {2, 1}, {1, 2}}
                                            : std::vector<Variant>{{0, 0}};
    for (const MetaMethod m : {MetaMethod::l2o, MetaMethod::ml2o_first_order, MetaMethod::ml2o_second_order})
      for (const Variant& v : paper) {
        if (!cuda && m == MetaMethod::ml2o_second_order) continue;  // the Dual<double> CPU HVP: minutes
        run_meta_iteration(which, v.kernel, v.graphs, m);
      }
    use_kernel(cuda, 0);
    use_graphs(cuda, 0);
  } catch (const std::exception& e) {
    std::cerr << "bench_unroll: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
