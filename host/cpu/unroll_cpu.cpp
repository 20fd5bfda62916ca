#include "ml2o/unroll.hpp"

#include <algorithm>
#include <stdexcept>

#include "ml2o/dual.hpp"
#include "ml2o/lopt.hpp"

namespace ml2o {

int instances_per_chunk(int dim) { return std::max(1, 256 / std::max(1, dim)); }

namespace {

// One chunk of whole instances [n0, n1): forward T steps storing the tape, then BPTT.
template <class S>
void unroll_chunk(const OptimizerHyper& hyper, const S* w, const TaskView<S>& task,
                  Trajectory<S>& traj, int T, GradMode mode, int64_t n0, int64_t n1,
                  S* loss, S* grad) {
  const int d = task.dim;
  const int64_t c0 = n0 * d, nc = (n1 - n0) * d;
  const S inv_n = S(1) / S(double(task.instances));
  const bool backward = mode != GradMode::none;
  std::vector<StepTape<S>> tape(backward ? size_t(T) * nc : size_t(nc));
  std::vector<S> g_hist(size_t(T + 1) * nc), x_hist(backward ? size_t(T + 1) * nc : 0);
  std::vector<S> scratch(d);
  S* x = traj.x.data() + c0;
  const bool mlp = task.family == Family::mlp;
  MlpEvaluator<S> mlp_eval(task);

  for (int t = 0; t <= T; ++t) {
    S* g = g_hist.data() + size_t(t) * nc;
    for (int64_t n = n0; n < n1; ++n) {
      const S* xn = x + (n - n0) * d;
      if (mlp) {  // the minibatch of the update this gradient feeds, global step k + t
        loss[t] += mlp_eval.loss_grad(n, traj.k + t, xn, g + (n - n0) * d);
        continue;
      }
      loss[t] += instance_objective(task, n, xn);
      instance_gradient(task, n, xn, g + (n - n0) * d, scratch.data());
    }
    if (backward) std::copy(x, x + nc, x_hist.begin() + size_t(t) * nc);
    if (t == T) break;
    StepTape<S>* tp = tape.data() + (backward ? size_t(t) * nc : 0);
    // With the gradient as a constant input it carries no derivative of any order (so the
    // forward-over-reverse HVP matches autodiff's stop_gradient); the loss term keeps its own.
    const bool g_is_constant = mode != GradMode::second_derivatives;
    for (int64_t c = 0; c < nc; ++c)
      x[c] += optimizer_step_forward(hyper, w, g_is_constant ? stop_gradient(g[c]) : g[c],
                                     traj.k + t, traj.coord[c0 + c], tp[c]);
  }
  if (!backward) return;

  const bool second = mode == GradMode::second_derivatives;
  std::vector<CoordAdjoint<S>> adj(nc, CoordAdjoint<S>{});
  std::vector<S> ax(nc), dg(nc), hv(nc);
  const S* gT = g_hist.data() + size_t(T) * nc;
  for (int64_t c = 0; c < nc; ++c) ax[c] = gT[c] * inv_n;
  StepGrads<S> sg;
  for (int t = T - 1; t >= 0; --t) {
    const StepTape<S>* tp = tape.data() + size_t(t) * nc;
    for (int64_t c = 0; c < nc; ++c) {
      dg[c] = optimizer_step_backward(hyper, w, tp[c], ax[c], second, adj[c], sg);
      accumulate_weight_grad(hyper, tp[c], sg, grad);
    }
    const S* g = g_hist.data() + size_t(t) * nc;
    if (second) {
      const S* xt = x_hist.data() + size_t(t) * nc;
      for (int64_t n = n0; n < n1; ++n) {
        const int64_t o = (n - n0) * d;
        instance_hvp(task, n, xt + o, dg.data() + o, hv.data() + o, scratch.data());
      }
      for (int64_t c = 0; c < nc; ++c) ax[c] += g[c] * inv_n + hv[c];
    } else {
      for (int64_t c = 0; c < nc; ++c) ax[c] += g[c] * inv_n;
    }
  }
}

}  // namespace

int64_t chunk_count(int64_t instances, int dim) {
  const int64_t per = instances_per_chunk(dim);
  return (instances + per - 1) / per;
}

template <class S>
ChunkPartials<S> unroll_chunks(const OptimizerHyper& hyper, const std::vector<S>& w,
                               const TaskView<S>& task, Trajectory<S>& traj, int T, GradMode mode,
                               int64_t first, int64_t last) {
  if (task.family == Family::mlp) {  // refused here, outside the parallel region
    if (!task.mlp) throw std::invalid_argument("unroll: an mlp task without its data");
    if (mode == GradMode::second_derivatives || !mlp_scalar_supported<S>)
      throw std::invalid_argument(
          "the mlp family has no second derivatives: use train.grad_mode = \"gradient_constant\" "
          "and ml2o.meta_gradient = \"first_order\"");
  }
  const int64_t per = instances_per_chunk(task.dim);
  const size_t P = w.size();
  const bool backward = mode != GradMode::none;
  ChunkPartials<S> out;
  out.first = first;
  out.last = last;
  out.loss.assign(size_t(last - first) * (T + 1), S(0));
  if (backward) out.grad.assign(size_t(last - first) * P, S(0));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t ch = first; ch < last; ++ch) {
    const int64_t n0 = ch * per, n1 = std::min(task.instances, n0 + per);
    const size_t i = size_t(ch - first);
    unroll_chunk(hyper, w.data(), task, traj, T, mode, n0, n1, out.loss.data() + i * (T + 1),
                 backward ? out.grad.data() + i * P : nullptr);
  }
  return out;
}

template <class S>
UnrollResult<S> reduce_chunks(std::span<const ChunkPartials<S>* const> parts, int64_t instances,
                              int T, size_t P, GradMode mode) {
  const bool backward = mode != GradMode::none;
  UnrollResult<S> out;
  out.step_loss.assign(T + 1, 0.0);
  std::vector<S> step(T + 1, S(0));
  if (backward) out.grad.assign(P, S(0));
  int64_t next = 0;
  for (const ChunkPartials<S>* part : parts) {
    if (part->first != next) throw std::logic_error("reduce_chunks: chunk partials out of order");
    next = part->last;
    for (int64_t i = 0; i < part->last - part->first; ++i) {
      for (int t = 0; t <= T; ++t) step[t] += part->loss[size_t(i) * (T + 1) + t];
      if (backward)
        for (size_t p = 0; p < P; ++p) out.grad[p] += part->grad[size_t(i) * P + p];
    }
  }
  const S inv_n = S(1) / S(double(instances));
  for (int t = 0; t <= T; ++t) {
    step[t] *= inv_n;
    out.step_loss[t] = static_cast<double>(value_of(step[t]));
    out.meta_loss += step[t];
  }
  return out;
}

// Per-chunk partials, summed in chunk order: the result is the same for any thread count, and
// for any split of the chunks between processes (dist.hpp).
template <class S>
UnrollResult<S> unroll_cpu(const OptimizerHyper& hyper, const std::vector<S>& w,
                           const TaskView<S>& task, Trajectory<S>& traj, int T, GradMode mode) {
  const ChunkPartials<S> all =
      unroll_chunks(hyper, w, task, traj, T, mode, 0, chunk_count(task.instances, task.dim));
  traj.k += T;
  const ChunkPartials<S>* parts[] = {&all};
  return reduce_chunks<S>(parts, task.instances, T, w.size(), mode);
}

#define ML2O_INSTANTIATE_CHUNKS(S)                                                                  \
  template ChunkPartials<S> unroll_chunks(const OptimizerHyper&, const std::vector<S>&,            \
                                          const TaskView<S>&, Trajectory<S>&, int, GradMode,       \
                                          int64_t, int64_t);                                       \
  template UnrollResult<S> reduce_chunks(std::span<const ChunkPartials<S>* const>, int64_t, int,   \
                                         size_t, GradMode);
ML2O_INSTANTIATE_CHUNKS(float)
ML2O_INSTANTIATE_CHUNKS(Dual<double>)
#undef ML2O_INSTANTIATE_CHUNKS

template UnrollResult<float> unroll_cpu(const OptimizerHyper&, const std::vector<float>&,
                                        const TaskView<float>&, Trajectory<float>&, int, GradMode);
template UnrollResult<double> unroll_cpu(const OptimizerHyper&, const std::vector<double>&,
                                         const TaskView<double>&, Trajectory<double>&, int, GradMode);
// Dual<float>: the float reference of the CUDA backend's Hessian-vector product (tests).
template UnrollResult<Dual<float>> unroll_cpu(const OptimizerHyper&, const std::vector<Dual<float>>&,
                                              const TaskView<Dual<float>>&, Trajectory<Dual<float>>&,
                                              int, GradMode);
template UnrollResult<Dual<double>> unroll_cpu(const OptimizerHyper&,
                                               const std::vector<Dual<double>>&,
                                               const TaskView<Dual<double>>&,
                                               Trajectory<Dual<double>>&, int, GradMode);

}  // namespace ml2o
