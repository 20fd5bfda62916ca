// Learned steps, unrolls and adaptation on an external objective (include/ml2o/external.hpp).
// The backward pass mirrors unroll_cpu's (host/cpu/unroll_cpu.cpp) with the gradient a constant:
// the adjoint of x_T is g_T, and each step t adds g_t after its backward. Per-coordinate work is
// split into fixed chunks whose weight gradients are summed in chunk order, so results do not
// depend on the thread count.
#include "ml2o/external.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace ml2o {

namespace {

constexpr int64_t kChunk = 256;  // coordinates per work chunk (fixed: the reduction order)

void check_weights(const LearnedOptimizer& opt) {
  if (opt.weights.size() != size_t(param_count(opt.hyper.arch)))
    throw std::invalid_argument(std::string("learned optimizer: ") + arch_name(opt.hyper.arch) +
                                " needs " + std::to_string(param_count(opt.hyper.arch)) +
                                " weights, got " + std::to_string(opt.weights.size()));
}

float call_objective(const ExternalObjective& f, const std::vector<float>& x, std::vector<float>& g) {
  g.assign(x.size(), 0.0f);
  const float loss = f(x, g);
  if (g.size() != x.size())
    throw std::invalid_argument("objective: the gradient has " + std::to_string(g.size()) +
                                " values for " + std::to_string(x.size()) + " parameters");
  return loss;
}

}  // namespace

void learned_step(const LearnedOptimizer& opt, float* x, const float* g, CoordState<float>* state,
                  int64_t n, int64_t k) {
  check_weights(opt);
  if (k < 1) throw std::invalid_argument("learned step: k must be >= 1, got " + std::to_string(k));
  const float* w = opt.weights.data();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    StepTape<float> tape;
    x[i] += optimizer_step_forward(opt.hyper, w, g[i], k, state[i], tape);
  }
}

ExternalTrajectory start_external(const std::vector<float>& x0) {
  return ExternalTrajectory{x0, std::vector<CoordState<float>>(x0.size(), CoordState<float>{}), 1};
}

ExternalUnroll unroll_external(const LearnedOptimizer& opt, ExternalTrajectory& traj, int T,
                               const ExternalObjective& f, bool want_grad) {
  check_weights(opt);
  if (T < 1) throw std::invalid_argument("unroll: T must be >= 1, got " + std::to_string(T));
  const int64_t n = int64_t(traj.x.size());
  const float* w = opt.weights.data();
  ExternalUnroll out;
  // g_hist[t]: the gradient at x_t; states[t]: the recurrent state before step t (for the backward
  // pass, which recomputes each step's tape from it instead of storing the tapes).
  std::vector<std::vector<float>> g_hist(T + 1);
  std::vector<std::vector<CoordState<float>>> states;
  const int64_t k0 = traj.k;
  for (int t = 0; t <= T; ++t) {
    const float loss = call_objective(f, traj.x, g_hist[t]);
    out.step_loss.push_back(double(loss));
    out.meta_loss += loss;
    if (t == T) break;
    if (want_grad) states.push_back(traj.coord);
    learned_step(opt, traj.x.data(), g_hist[t].data(), traj.coord.data(), n, traj.k);
    ++traj.k;
  }
  if (!want_grad) return out;

  const size_t P = opt.weights.size();
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<std::vector<float>> grad(chunks);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    grad[ch].assign(P, 0.0f);
    const int64_t c0 = ch * kChunk, c1 = std::min(n, c0 + kChunk);
    std::vector<CoordAdjoint<float>> adj(c1 - c0, CoordAdjoint<float>{});
    std::vector<float> ax(g_hist[T].begin() + c0, g_hist[T].begin() + c1);
    StepTape<float> tape;
    StepGrads<float> sg;
    for (int t = T - 1; t >= 0; --t) {
      for (int64_t c = c0; c < c1; ++c) {
        CoordState<float> st = states[t][c];
        optimizer_step_forward(opt.hyper, w, g_hist[t][c], k0 + t, st, tape);
        optimizer_step_backward(opt.hyper, w, tape, ax[c - c0], false, adj[c - c0], sg);
        accumulate_weight_grad(opt.hyper, tape, sg, grad[ch].data());
      }
      for (int64_t c = c0; c < c1; ++c) ax[c - c0] += g_hist[t][c];
    }
  }
  out.grad.assign(P, 0.0f);
  for (int64_t ch = 0; ch < chunks; ++ch)
    for (size_t p = 0; p < P; ++p) out.grad[p] += grad[ch][p];
  return out;
}

AdaptResult adapt_external(const AdaptPlan& plan, const LearnedOptimizer& start,
                           const std::vector<float>& x0, const ExternalObjective& f, int K) {
  check_weights(start);
  if (plan.unroll < 1 || plan.trajectory < plan.unroll || plan.trajectory % plan.unroll != 0)
    throw std::invalid_argument("adapt: the trajectory must be a positive multiple of the unroll");
  if (plan.mode != GradMode::gradient_constant)
    throw std::invalid_argument(std::string("adapt on an external objective: the meta-gradient "
                                            "treats the gradient as a constant (grad_mode = "
                                            "gradient_constant), got ") + grad_mode_name(plan.mode));
  if (K < 0) throw std::invalid_argument("adapt: K must be >= 0, got " + std::to_string(K));
  const int per_trajectory = plan.trajectory / plan.unroll;
  AdaptResult r{start, 0};
  AdamState adam;
  ExternalTrajectory traj = start_external(x0);
  for (int k = 0; k < K; ++k) {
    if (k % per_trajectory == 0) traj = start_external(x0);
    ExternalTrajectory next = traj;
    const ExternalUnroll u = unroll_external(r.opt, next, plan.unroll, f, true);
    if (std::isfinite(u.meta_loss) && all_finite(u.grad)) {
      adam_update(r.opt.weights, u.grad, adam, plan.adam);
      traj = std::move(next);
    } else {
      ++r.skipped;  // skipped update; restart the trajectory from x0
      traj = start_external(x0);
    }
  }
  return r;
}

}  // namespace ml2o
