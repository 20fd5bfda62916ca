// A learned optimizer on an objective the engine does not know: a user's function, called back for
// its value and gradient (the Python binding's numpy and torch optimizers). The per-coordinate math
// is cell.hpp's, as in every unroll; what differs is that the gradient comes from outside.
//
// The meta-gradient of an unroll on such an objective treats the optimizee gradient fed to the
// optimizer as a constant input (GradMode::gradient_constant, the engine's default): it needs only
// the objective's gradient at each iterate, never its Hessian.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "ml2o/lopt.hpp"
#include "ml2o/meta.hpp"

namespace ml2o {

// One coordinate's recurrent state as floats (m, v, h1, c1, h2, c2): how callers hold it.
constexpr int kCoordStateFloats = 2 + 4 * kHidden;
static_assert(sizeof(CoordState<float>) == kCoordStateFloats * sizeof(float),
              "CoordState<float> must be plain floats");

// One learned update of n coordinates in place: x[i] += delta(g[i], state[i]) with global step k
// (>= 1; the first update of a trajectory is k = 1). Deterministic for any thread count.
void learned_step(const LearnedOptimizer& opt, float* x, const float* g, CoordState<float>* state,
                  int64_t n, int64_t k);

// The objective: returns f(x) and writes grad f(x) into g (x.size() values).
using ExternalObjective = std::function<float(const std::vector<float>& x, std::vector<float>& g)>;

// Where an optimization of an external objective stands.
struct ExternalTrajectory {
  std::vector<float> x;
  std::vector<CoordState<float>> coord;
  int64_t k = 1;
};
ExternalTrajectory start_external(const std::vector<float>& x0);

struct ExternalUnroll {
  float meta_loss = 0;            // sum_{t=0..T} f(x_t), summed in float as the engine's unrolls
  std::vector<double> step_loss;  // f(x_t), t = 0..T
  std::vector<float> grad;        // d meta_loss / d weights (gradient constant); empty unless asked
};

// T learned steps from traj (advanced in place), calling f at x_0..x_T. Memory: the recurrent
// state of every coordinate at every step (T * x.size() * 328 bytes) when the gradient is wanted.
ExternalUnroll unroll_external(const LearnedOptimizer& opt, ExternalTrajectory& traj, int T,
                               const ExternalObjective& f, bool want_grad);

// Test-time adaptation on an external objective: `adapt` (meta.hpp) with the objective in place of
// a task: K Adam updates of the weights, each from the meta-gradient of a plan.unroll-step unroll;
// trajectories restart from x0 every plan.trajectory steps and after a non-finite update (skipped).
// plan.mode must be gradient_constant.
AdaptResult adapt_external(const AdaptPlan& plan, const LearnedOptimizer& start,
                           const std::vector<float>& x0, const ExternalObjective& f, int K);

}  // namespace ml2o
