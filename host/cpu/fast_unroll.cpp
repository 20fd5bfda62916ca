// The fast float unroll's driver: work split, the optimizee's per-instance math (scalar, as the
// reference), the tape in tile records, the fixed-order reductions, and the choice of kernels.
#include "fast_unroll.hpp"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <new>
#include <stdexcept>

namespace ml2o::cpu_fast {

float* Buffer::get(size_t n) {
  if (n > n_ || !p_) {
    const size_t bytes = ((std::max<size_t>(n, 1) * sizeof(float) + 63) / 64) * 64;
    p_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    if (!p_) throw std::bad_alloc();
    n_ = n;
  }
  return p_.get();
}

namespace {

bool cpu_runs(const Kernels& k) {
  if (!k.forward) return false;  // not built for this target
  const std::string name = k.isa;
  if (name == "generic") return true;
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (name == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (name == "avx512")
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("fma");
#endif
  return false;
}

const Kernels* widest() {
  for (const Kernels* k : {&kernels_avx512(), &kernels_avx2()})
    if (cpu_runs(*k)) return k;
  return &kernels_generic();
}

std::atomic<const Kernels*> g_kernels{nullptr};

const Kernels& active() {
  const Kernels* k = g_kernels.load();
  if (!k) {
    k = widest();
    g_kernels.store(k);
  }
  return *k;
}

// Instances per chunk: a function of (d, N) only. About 48..96 coordinates (the tape of a chunk
// stays in L2), at least 4 chunks when there are 4 instances (so that small batches still use
// every core), and among those the count that wastes the fewest padded lanes.
int64_t instances_per_chunk(int d, int64_t N) {
  int64_t cap = std::max<int64_t>(1, 96 / d);
  cap = std::min(cap, std::max<int64_t>(1, (N + 3) / 4));
  int64_t best = cap;
  double best_use = 0.0;
  for (int64_t per = cap; per >= std::max<int64_t>(1, cap / 2); --per) {
    const int64_t c = per * d;
    const double use = double(c) / double((c + kTile - 1) / kTile * kTile);
    if (use > best_use + 1e-12) {
      best_use = use;
      best = per;
    }
  }
  return best;
}

struct Plan {
  int64_t per, chunks, groups, tiles;  // tiles: of the largest chunk
  int T;
  bool backward, second;
  size_t record_rows() const { return size_t(backward ? T : 1) * tiles * rec::rows; }
};

struct ChunkArgs {
  const Kernels& kn;
  const Net& net;
  const TaskView<float>& task;
  Trajectory<float>& traj;
  const Plan& plan;
  const float* bc;  // [T]
  float inv_n;
};

// One chunk of whole instances [n0, n1): forward T steps (tape in records), then BPTT; the
// chunk's losses go to loss[0..T] and its weight gradient to dw, in a fixed order.
void run_chunk(const ChunkArgs& a, Workspace::PerThread& ws, int64_t n0, int64_t n1, float* loss,
               float* dw) {
  const TaskView<float>& task = a.task;
  const Plan& p = a.plan;
  const int T = p.T, d = task.dim;
  const int64_t c0 = n0 * d, nc = (n1 - n0) * d, ntile = (nc + kTile - 1) / kTile, L = ntile * kTile;
  float* recs = ws.records.get(p.record_rows() * kTile);
  float* states = ws.states.get(size_t(p.tiles) * st::rows * kTile);
  float* g_hist = ws.g_hist.get(size_t(p.backward ? T + 1 : 1) * p.tiles * kTile);
  float* x_hist = p.second ? ws.x_hist.get(size_t(T) * p.tiles * kTile) : nullptr;
  float* delta = ws.delta.get(size_t(p.tiles) * kTile);
  float* scratch = ws.scratch.get(size_t(d));
  float* x = a.traj.x.data() + c0;
  CoordState<float>* cs = a.traj.coord.data() + c0;

  // state in: tile rows, padded lanes zero (inert: zero gradient in, zero adjoint out)
  const auto lane = [&](float* base, int64_t c, int row) -> float& {
    return base[((c / kTile) * st::rows + row) * kTile + c % kTile];
  };
  std::fill(states, states + L * st::rows, 0.0f);
  for (int64_t c = 0; c < nc; ++c) {
    lane(states, c, st::m) = cs[c].m;
    lane(states, c, st::v) = cs[c].v;
    for (int h = 0; h < kHidden; ++h) {
      lane(states, c, st::h1 + h) = cs[c].h1[h];
      lane(states, c, st::c1 + h) = cs[c].c1[h];
      lane(states, c, st::h2 + h) = cs[c].h2[h];
      lane(states, c, st::c2 + h) = cs[c].c2[h];
    }
  }
  const size_t rec_floats = size_t(rec::rows) * kTile;
  for (int t = 0; t <= T; ++t) {
    float* g = g_hist + (p.backward ? size_t(t) * L : 0);
    std::fill(g + nc, g + L, 0.0f);
    for (int64_t n = n0; n < n1; ++n) {
      const float* xn = x + (n - n0) * d;
      loss[t] += instance_objective(task, n, xn);
      instance_gradient(task, n, xn, g + (n - n0) * d, scratch);
    }
    if (t == T) break;
    if (p.second) std::copy(x, x + nc, x_hist + size_t(t) * nc);
    for (int64_t tile = 0; tile < ntile; ++tile) {
      float* r = recs + ((p.backward ? size_t(t) * ntile : 0) + tile) * rec_floats;
      a.kn.forward(a.net, a.bc[t], g + tile * kTile, states + tile * st::rows * kTile, r,
                   delta + tile * kTile);
    }
    for (int64_t c = 0; c < nc; ++c) x[c] += delta[c];
  }
  for (int64_t c = 0; c < nc; ++c) {
    cs[c].m = lane(states, c, st::m);
    cs[c].v = lane(states, c, st::v);
    for (int h = 0; h < kHidden; ++h) {
      cs[c].h1[h] = lane(states, c, st::h1 + h);
      cs[c].c1[h] = lane(states, c, st::c1 + h);
      cs[c].h2[h] = lane(states, c, st::h2 + h);
      cs[c].c2[h] = lane(states, c, st::c2 + h);
    }
  }
  if (!p.backward) return;

  float* adj = ws.adjoints.get(size_t(p.tiles) * st::rows * kTile);
  float* ax = ws.ax.get(size_t(p.tiles) * kTile);
  float* dg = ws.dg.get(size_t(p.tiles) * kTile);
  float* hv = p.second ? ws.hv.get(size_t(p.tiles) * kTile) : nullptr;
  std::fill(adj, adj + L * st::rows, 0.0f);
  std::fill(ax, ax + L, 0.0f);
  const float* gT = g_hist + size_t(T) * L;
  for (int64_t c = 0; c < nc; ++c) ax[c] = gT[c] * a.inv_n;
  for (int t = T - 1; t >= 0; --t) {
    for (int64_t tile = 0; tile < ntile; ++tile)
      a.kn.backward(a.net, a.bc[t], recs + (size_t(t) * ntile + tile) * rec_floats,
                    adj + tile * st::rows * kTile, ax + tile * kTile, p.second, dg + tile * kTile);
    const float* g = g_hist + size_t(t) * L;
    if (p.second) {
      const float* xt = x_hist + size_t(t) * nc;
      for (int64_t n = n0; n < n1; ++n) {
        const int64_t o = (n - n0) * d;
        instance_hvp(task, n, xt + o, dg + o, hv + o, scratch);
      }
      for (int64_t c = 0; c < nc; ++c) ax[c] += g[c] * a.inv_n + hv[c];
    } else {
      for (int64_t c = 0; c < nc; ++c) ax[c] += g[c] * a.inv_n;
    }
  }
  a.kn.weight_grad(a.net, recs, int64_t(T) * ntile, dw);
}

}  // namespace

void set_isa(const std::string& name) {
  if (name == "auto") {
    g_kernels.store(widest());
    return;
  }
  for (const Kernels* k : {&kernels_generic(), &kernels_avx2(), &kernels_avx512()}) {
    if (name != k->isa) continue;
    if (!cpu_runs(*k)) throw std::invalid_argument("cpu fast unroll: this CPU (or build) cannot run '" + name + "'");
    g_kernels.store(k);
    return;
  }
  throw std::invalid_argument("cpu fast unroll: unknown instruction set '" + name +
                              "' (allowed: auto, avx512, avx2, generic)");
}

std::string isa() { return active().isa; }

std::vector<std::string> runnable_isas() {
  std::vector<std::string> out;
  for (const Kernels* k : {&kernels_generic(), &kernels_avx2(), &kernels_avx512()})
    if (cpu_runs(*k)) out.push_back(k->isa);
  return out;
}

namespace {

Plan plan_for(int d, int64_t N, int T, GradMode mode) {
  Plan p;
  p.T = T;
  p.backward = mode != GradMode::none;
  p.second = mode == GradMode::second_derivatives;
  p.per = instances_per_chunk(d, N);
  p.chunks = (N + p.per - 1) / p.per;
  p.groups = std::min<int64_t>(p.chunks, kMaxGroups);
  p.tiles = (p.per * d + kTile - 1) / kTile;
  return p;
}

// The chunks of group gi: consecutive, fixed by the task's shape.
std::pair<int64_t, int64_t> group_chunks(const Plan& p, int64_t gi) {
  return {gi * p.chunks / p.groups, (gi + 1) * p.chunks / p.groups};
}

}  // namespace

int64_t group_count(int d, int64_t N) { return plan_for(d, N, 1, GradMode::none).groups; }

std::pair<int64_t, int64_t> group_instances(int d, int64_t N, int64_t gi) {
  const Plan p = plan_for(d, N, 1, GradMode::none);
  const auto [c0, c1] = group_chunks(p, gi);
  return {std::min(N, c0 * p.per), std::min(N, c1 * p.per)};
}

ChunkPartials<float> unroll_groups(const OptimizerHyper& hyper, const std::vector<float>& w,
                                   const TaskView<float>& task, Trajectory<float>& traj, int T,
                                   GradMode mode, Workspace& ws, int64_t first, int64_t last,
                                   int threads) {
  const Kernels& kn = active();
  Net net;
  net.arch = hyper.arch;
  net.in_dim = hyper.arch == Arch::rnnprop ? kHidden : 2;
  net.w = w.data();
  net.out_scale = float(hyper.output_scale);
  net.dm_p = float(hyper.dm_p);
  net.dm_scale = float(hyper.dm_scale);
  net.exp_neg_p = std::exp(-net.dm_p);
  net.exp_p = std::exp(net.dm_p);

  const int d = task.dim;
  const int64_t N = task.instances;
  const Plan p = plan_for(d, N, T, mode);
  if (first < 0 || last > p.groups || first > last)
    throw std::logic_error("cpu fast unroll: group range outside the task's groups");
  const int64_t G = last - first;
  const size_t P = w.size();
  float* bc = ws.bc.get(size_t(std::max(T, 1)));  // RNNprop's bias correction, as the reference's
  for (int t = 0; t < T; ++t)
    bc[t] = 1.0f - float(std::pow(kRnnpropBeta, static_cast<double>(traj.k + t)));
  const float inv_n = 1.0f / float(double(N));

  // Buffers sized here, outside the parallel region: nothing is allocated once they are warm.
  // Default thread count: OpenMP's, but one thread per kMinStepsPerThread coordinate-steps at most:
  // below ~2 ms of work a fork-join costs more than it saves on a shared machine (a descheduled
  // thread stalls the barrier). Results do not depend on it.
  constexpr int64_t kMinStepsPerThread = 2048;
  const int64_t work = N * d * std::max(T, 1);
  const int64_t want = threads > 0 ? threads
                                   : std::min<int64_t>(omp_get_max_threads(),
                                                       std::max<int64_t>(1, work / kMinStepsPerThread));
  const int nt = int(std::max<int64_t>(1, std::min<int64_t>(want, G)));
  if (ws.threads.size() < size_t(nt)) ws.threads.resize(nt);
  for (int i = 0; i < nt; ++i) {
    Workspace::PerThread& pt = ws.threads[i];
    const size_t L = size_t(p.tiles) * kTile;
    pt.records.get(p.record_rows() * kTile);
    pt.states.get(L * st::rows);
    pt.g_hist.get((p.backward ? T + 1 : 1) * L);
    if (p.second) pt.x_hist.get(size_t(T) * L);
    pt.delta.get(L);
    pt.scratch.get(size_t(d));
    if (p.backward) {
      pt.adjoints.get(L * st::rows);
      pt.ax.get(L);
      pt.dg.get(L);
      if (p.second) pt.hv.get(L);
    }
  }
  ChunkPartials<float> out;
  out.first = first;
  out.last = last;
  out.loss.assign(size_t(G) * (T + 1), 0.0f);
  if (p.backward) out.grad.assign(size_t(G) * P, 0.0f);

  const ChunkArgs args{kn, net, task, traj, p, bc, inv_n};
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int64_t gi = first; gi < last; ++gi) {
    Workspace::PerThread& pt = ws.threads[omp_get_thread_num()];
    const auto [c0, c1] = group_chunks(p, gi);
    const size_t row = size_t(gi - first);
    for (int64_t ch = c0; ch < c1; ++ch) {
      const int64_t n0 = ch * p.per, n1 = std::min(N, n0 + p.per);
      run_chunk(args, pt, n0, n1, out.loss.data() + row * (T + 1),
                p.backward ? out.grad.data() + row * P : nullptr);
    }
  }
  return out;
}

UnrollResult<float> unroll(const OptimizerHyper& hyper, const std::vector<float>& w,
                           const TaskView<float>& task, Trajectory<float>& traj, int T,
                           GradMode mode, Workspace& ws, int threads) {
  // Group partials summed in group order (fixed by the task's shape): unroll_cpu's assembly.
  const ChunkPartials<float> all =
      unroll_groups(hyper, w, task, traj, T, mode, ws, 0, group_count(task.dim, task.instances), threads);
  traj.k += T;
  const ChunkPartials<float>* parts[] = {&all};
  return reduce_chunks<float>(parts, task.instances, T, w.size(), mode);
}

}  // namespace ml2o::cpu_fast
