// Truncated unrolls of a learned optimizer on a task, and their meta-gradient (BPTT), on the CPU.
// This is the reference every kernel is checked against; templated on the scalar so that double
// is the oracle and Dual<double> gives exact Hessian-vector products.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "ml2o/cell.hpp"
#include "ml2o/dual.hpp"
#include "ml2o/optimizee.hpp"

namespace ml2o {

// Where a trajectory stands: iterate, per-coordinate recurrent state, and the global step k of
// the next update (1 at the start of a trajectory; RNNprop's bias correction uses it).
template <class S> struct Trajectory {
  std::vector<S> x;                   // [N * d], instance-major
  std::vector<CoordState<S>> coord;   // [N * d]
  int64_t k = 1;
};

// Fresh trajectory from x0: zero LSTM state and moments.
template <class S> Trajectory<S> start_trajectory(const std::vector<S>& x0) {
  Trajectory<S> tr;
  tr.x = x0;
  tr.coord.assign(x0.size(), CoordState<S>{});
  return tr;
}

template <class To, class From> Trajectory<To> cast_trajectory(const Trajectory<From>& t) {
  Trajectory<To> out;
  out.x.assign(t.x.begin(), t.x.end());
  out.k = t.k;
  out.coord.resize(t.coord.size());
  for (size_t c = 0; c < t.coord.size(); ++c) {
    out.coord[c].m = To(t.coord[c].m);
    out.coord[c].v = To(t.coord[c].v);
    for (int h = 0; h < kHidden; ++h) {
      out.coord[c].h1[h] = To(t.coord[c].h1[h]); out.coord[c].c1[h] = To(t.coord[c].c1[h]);
      out.coord[c].h2[h] = To(t.coord[c].h2[h]); out.coord[c].c2[h] = To(t.coord[c].c2[h]);
    }
  }
  return out;
}

// How the meta-gradient treats the optimizee gradient g fed to the optimizer.
enum class GradMode {
  none,                // forward only
  gradient_constant,   // g is an input with no derivative (the reference's choice)
  second_derivatives,  // dg/dx = Hessian, through the family's Hessian-vector product
};

template <class S> struct UnrollResult {
  S meta_loss = S(0);                // sum_{t=0..T} mean_n f_n(x_t)
  std::vector<double> step_loss;     // mean_n f_n(x_t), t = 0..T
  std::vector<S> grad;               // d meta_loss / d weights (empty for GradMode::none)
};

// Advances traj by T steps with weights w (size param_count(hyper.arch)).
template <class S>
UnrollResult<S> unroll_cpu(const OptimizerHyper& hyper, const std::vector<S>& w,
                           const TaskView<S>& task, Trajectory<S>& traj, int T, GradMode mode);

// Exact Hessian-vector product of the meta-loss of a T-step unroll from `start` by
// forward-over-reverse: the BPTT pass run on Dual<double> whose weight tangents are v. The CPU
// reference of Backend::hvp, in any precision S of the weights.
template <class S, class TaskScalar>
std::vector<S> hvp_dual(const OptimizerHyper& hyper, const std::vector<S>& w,
                        const Task<TaskScalar>& task, const Trajectory<S>& start, int T,
                        const std::vector<S>& v, GradMode mode) {
  using D = Dual<double>;
  std::vector<D> wd(w.size());
  for (size_t p = 0; p < w.size(); ++p) wd[p] = D(double(w[p]), double(v[p]));
  const Task<D> td = cast_task<D>(task);
  Trajectory<D> traj = cast_trajectory<D>(start);
  const auto r = unroll_cpu(hyper, wd, view_of(td), traj, T, mode);
  std::vector<S> out(w.size());
  for (size_t p = 0; p < w.size(); ++p) out[p] = S(r.grad[p].d);
  return out;
}

// Instances per work chunk: a function of d only, so the reduction order (and the result) does
// not depend on the number of threads or processes.
int instances_per_chunk(int dim);
int64_t chunk_count(int64_t instances, int dim);

// The partial sums of chunks [first, last) of one unroll: per chunk, the T + 1 objective sums
// (sum_n f_n(x_t) over its instances) and, with a meta-gradient, its P weight-gradient sums.
template <class S> struct ChunkPartials {
  int64_t first = 0, last = 0;
  std::vector<S> loss;  // [(last - first) * (T + 1)], chunk-major
  std::vector<S> grad;  // [(last - first) * P], empty for GradMode::none
};

// unroll_cpu in two halves, for processes that each own some chunks (dist.hpp): advances only the
// coordinates of chunks [first, last) of traj (traj.k is the caller's), and sums partials that
// cover chunks 0.. in order, each chunk's after the previous one's, exactly as unroll_cpu does.
template <class S>
ChunkPartials<S> unroll_chunks(const OptimizerHyper& hyper, const std::vector<S>& w,
                               const TaskView<S>& task, Trajectory<S>& traj, int T, GradMode mode,
                               int64_t first, int64_t last);
template <class S>
UnrollResult<S> reduce_chunks(std::span<const ChunkPartials<S>* const> parts, int64_t instances,
                              int T, size_t P, GradMode mode);

}  // namespace ml2o
