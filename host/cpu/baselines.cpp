// Analytical baselines on the CPU (docs/method.md section 7): SGD, Momentum, Adam, RMSProp, ISTA, FISTA.
//
// Precision: iterates, gradients and optimizer state are float32 like the learned optimizers'
// (gradients and objectives come from the shared instance_gradient / instance_objective); every
// coefficient (learning rate, bias corrections, 1/L, lam/L) is computed in double and rounded to
// float once. The reported objective is the mean over instances, summed in instance order in
// double, so the result does not depend on the number of threads. Non-finite objectives are
// returned as they are: the caller decides what divergence means.
#include "ml2o/baselines.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace ml2o {

const char* baseline_name(BaselineKind k) {
  switch (k) {
    case BaselineKind::sgd: return "sgd";
    case BaselineKind::momentum: return "momentum";
    case BaselineKind::adam: return "adam";
    case BaselineKind::rmsprop: return "rmsprop";
    case BaselineKind::ista: return "ista";
    case BaselineKind::fista: return "fista";
  }
  return "?";
}

bool parse_baseline(const std::string& name, BaselineKind* out) {
  for (BaselineKind k : {BaselineKind::sgd, BaselineKind::momentum, BaselineKind::adam,
                         BaselineKind::rmsprop, BaselineKind::ista, BaselineKind::fista})
    if (name == baseline_name(k)) {
      *out = k;
      return true;
    }
  return false;
}

namespace {

// Largest eigenvalue of the symmetric positive semi-definite d x d matrix M (row-major, double).
// Power iteration on M^(2^s) by repeated squaring (each squaring doubles the number of power
// steps, so the error (lambda2/lambda1)^(2^s) falls below rounding in a few dozen squarings), then
// the Rayleigh quotient of the dominant direction, refined by plain power steps. Deterministic:
// no random start vector (the start is the largest column of the converged power of M, which lies
// in the dominant eigenspace and cannot be orthogonal to it).
double largest_eigenvalue_psd(std::vector<double> M, int d) {
  double scale = 0.0;
  for (double v : M) scale = std::max(scale, std::abs(v));
  if (!(scale > 0.0)) return 0.0;  // zero matrix (or NaN entries: let NaN through below)
  if (!std::isfinite(scale)) return scale;
  const std::vector<double> M0 = M;
  auto normalise = [&](std::vector<double>& P) {
    double m = 0.0;
    for (double v : P) m = std::max(m, std::abs(v));
    for (double& v : P) v /= m;
  };
  normalise(M);
  std::vector<double> P(M.size());
  for (int s = 0; s < 64; ++s) {
    for (int i = 0; i < d; ++i)
      for (int j = 0; j < d; ++j) {
        double acc = 0.0;
        for (int k = 0; k < d; ++k) acc += M[i * d + k] * M[k * d + j];
        P[i * d + j] = acc;
      }
    normalise(P);
    double change = 0.0;
    for (size_t e = 0; e < P.size(); ++e) change = std::max(change, std::abs(P[e] - M[e]));
    M.swap(P);
    if (change < 1e-15) break;
  }
  // Dominant direction: the column of the converged power with the largest norm.
  int best = 0;
  double best_norm = -1.0;
  for (int j = 0; j < d; ++j) {
    double n2 = 0.0;
    for (int i = 0; i < d; ++i) n2 += M[i * d + j] * M[i * d + j];
    if (n2 > best_norm) {
      best_norm = n2;
      best = j;
    }
  }
  std::vector<double> v(d), w(d);
  for (int i = 0; i < d; ++i) v[i] = M[i * d + best];
  double lambda = 0.0;
  for (int it = 0; it < 200; ++it) {
    double vv = 0.0, vw = 0.0;
    for (int i = 0; i < d; ++i) {
      double acc = 0.0;
      for (int k = 0; k < d; ++k) acc += M0[i * d + k] * v[k];
      w[i] = acc;
      vv += v[i] * v[i];
      vw += v[i] * acc;
    }
    const double next = vw / vv;
    const bool done = it > 0 && std::abs(next - lambda) <= 1e-15 * std::abs(next);
    lambda = next;
    if (done) break;
    double wn = 0.0;
    for (double a : w) wn = std::max(wn, std::abs(a));
    if (!(wn > 0.0)) break;
    for (int i = 0; i < d; ++i) v[i] = w[i] / wn;
  }
  return lambda;
}

void check_steps(int steps) {
  if (steps < 0) throw std::invalid_argument("baseline: steps must be >= 0, got " + std::to_string(steps));
}

}  // namespace

std::vector<double> lipschitz_constants(const Task<float>& task) {
  const int d = task.spec.dim;
  const int64_t N = task.spec.instances;
  if (task.spec.family != Family::lasso && task.spec.family != Family::quadratic)
    throw std::invalid_argument(std::string("lipschitz_constants: family '") +
                                family_name(task.spec.family) +
                                "' has no matrix A (allowed: lasso, quadratic)");
  if (task.A.size() != static_cast<size_t>(N) * d * d)
    throw std::invalid_argument("lipschitz_constants: task.A has the wrong size");
  std::vector<double> L(N);
#pragma omp parallel if (N * d >= 256)
  {
    std::vector<double> AtA(static_cast<size_t>(d) * d);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const float* A = task.A.data() + n * d * d;
      for (int i = 0; i < d; ++i)
        for (int j = 0; j < d; ++j) {
          double acc = 0.0;
          for (int r = 0; r < d; ++r) acc += double(A[r * d + i]) * double(A[r * d + j]);
          AtA[i * d + j] = acc;
        }
      L[n] = largest_eigenvalue_psd(AtA, d);
    }
  }
  return L;
}

std::vector<double> run_baseline_cpu(const BaselineSpec& spec, const Task<float>& task, int steps,
                                     std::vector<float>* final_x, IterateSnapshots* snaps) {
  check_steps(steps);
  const bool proximal = spec.kind == BaselineKind::ista || spec.kind == BaselineKind::fista;
  if (proximal && task.spec.family != Family::lasso)
    throw std::invalid_argument(std::string("baseline '") + baseline_name(spec.kind) +
                                "' is for the lasso family only, not '" +
                                family_name(task.spec.family) + "'");
  const TaskView<float> view = view_of(task);
  const int d = view.dim;
  const int64_t N = view.instances;
  const size_t nc = static_cast<size_t>(N) * d;
  const bool mlp = task.spec.family == Family::mlp;
  if (mlp && !task.mlp) throw std::invalid_argument("baseline: an mlp task without its data");
  if (task.x0.size() != nc) throw std::invalid_argument("baseline: task.x0 has the wrong size");

  // The smooth part of LASSO (1/2 ||Ax - b||^2): the same task viewed as a quadratic.
  TaskView<float> smooth = view;
  smooth.family = Family::quadratic;
  std::vector<double> L;
  if (proximal) L = lipschitz_constants(task);

  // Step-dependent coefficients (the same for every instance), in double, rounded once.
  const float lr = static_cast<float>(spec.lr);
  const float mu = static_cast<float>(spec.momentum);
  const float b1 = static_cast<float>(spec.beta1), b2 = static_cast<float>(spec.beta2);
  const float one_b1 = static_cast<float>(1.0 - spec.beta1), one_b2 = static_cast<float>(1.0 - spec.beta2);
  const float eps = static_cast<float>(spec.eps);
  const float decay = static_cast<float>(spec.rms_decay);
  const float one_decay = static_cast<float>(1.0 - spec.rms_decay);
  std::vector<float> bc1(steps + 1), bc2(steps + 1), extrapolate(steps + 1);
  double t_fista = 1.0;  // FISTA's t_k
  for (int k = 1; k <= steps; ++k) {
    bc1[k] = static_cast<float>(1.0 - std::pow(spec.beta1, k));
    bc2[k] = static_cast<float>(1.0 - std::pow(spec.beta2, k));
    const double t_next = 0.5 * (1.0 + std::sqrt(1.0 + 4.0 * t_fista * t_fista));
    extrapolate[k] = static_cast<float>((t_fista - 1.0) / t_next);
    t_fista = t_next;
  }

  // One instance's whole trajectory; obj receives its steps + 1 objectives.
  auto run_instance = [&](int64_t n, double* obj, float* x_out) {
    std::vector<float> x(task.x0.begin() + n * d, task.x0.begin() + (n + 1) * d);
    std::vector<float> s1(d, 0.0f), s2(d, 0.0f), g(d), scratch(d);
    if (spec.kind == BaselineKind::fista) s1 = x;  // FISTA's extrapolated point y_1 = x_0
    float* xn = x.data();
    float* an = s1.data();
    float* bn = s2.data();
    MlpEvaluator<float> mlp_eval(view);
    // The gradient feeding update k; on mlp also the objective of x_{k-1}, on that minibatch.
    auto gradient = [&](int k) {
      if (mlp) obj[k - 1] = static_cast<double>(mlp_eval.loss_grad(n, k, xn, g.data()));
      else instance_gradient(view, n, xn, g.data(), scratch.data());
    };
    auto snapshot = [&](int k) {
      if (!snaps) return;
      for (size_t i = 0; i < snaps->steps.size(); ++i)
        if (snaps->steps[i] == k) std::copy(x.begin(), x.end(), snaps->x[i].begin() + n * d);
    };
    if (!mlp) obj[0] = static_cast<double>(instance_objective(view, n, xn));
    snapshot(0);
    for (int k = 1; k <= steps; ++k) {
      switch (spec.kind) {
        case BaselineKind::sgd:
          gradient(k);
          for (int j = 0; j < d; ++j) xn[j] -= lr * g[j];
          break;
        case BaselineKind::momentum:  // heavy ball: v = mu v + g; x -= lr v   (an = v)
          gradient(k);
          for (int j = 0; j < d; ++j) {
            an[j] = mu * an[j] + g[j];
            xn[j] -= lr * an[j];
          }
          break;
        case BaselineKind::adam:  // an = m, bn = v
          gradient(k);
          for (int j = 0; j < d; ++j) {
            an[j] = b1 * an[j] + one_b1 * g[j];
            bn[j] = b2 * bn[j] + one_b2 * g[j] * g[j];
            xn[j] -= lr * (an[j] / bc1[k]) / (std::sqrt(bn[j] / bc2[k]) + eps);
          }
          break;
        case BaselineKind::rmsprop:  // an = s
          gradient(k);
          for (int j = 0; j < d; ++j) {
            an[j] = decay * an[j] + one_decay * g[j] * g[j];
            xn[j] -= lr * g[j] / (std::sqrt(an[j]) + eps);
          }
          break;
        case BaselineKind::ista:
        case BaselineKind::fista: {
          // ISTA: x <- S(x - grad/L, lam/L). FISTA (Beck & Teboulle 2009): the same prox-grad
          // step from y_k (an), then y_{k+1} = x_k + (t_k - 1)/t_{k+1} (x_k - x_{k-1}).
          const bool fista = spec.kind == BaselineKind::fista;
          if (!(L[n] > 0.0)) {
            // A = 0: the smooth part is constant and the minimiser of lam ||x||_1 is 0.
            std::fill(x.begin(), x.end(), 0.0f);
            std::fill(s1.begin(), s1.end(), 0.0f);
            break;
          }
          const float* from = fista ? an : xn;
          const float step = static_cast<float>(1.0 / L[n]);
          const float thr = static_cast<float>(task.spec.lam / L[n]);
          instance_gradient(smooth, n, from, g.data(), scratch.data());
          for (int j = 0; j < d; ++j) {
            const float z = from[j] - step * g[j];
            const float p = std::abs(z) > thr ? z - std::copysign(thr, z) : 0.0f;
            if (fista) an[j] = p + extrapolate[k] * (p - xn[j]);
            xn[j] = p;
          }
          break;
        }
      }
      if (!mlp) obj[k] = static_cast<double>(instance_objective(view, n, xn));
      snapshot(k);
    }
    if (mlp) obj[steps] = static_cast<double>(mlp_eval.loss_grad(n, steps + 1, xn, nullptr));
    if (x_out) std::copy(x.begin(), x.end(), x_out);
  };

  // Instances run independently, a block at a time (bounded memory for the per-instance
  // objectives), one parallel region per block; the objectives are then summed serially in
  // instance order, so the result is the same for any number of threads.
  const size_t row = static_cast<size_t>(steps) + 1;
  const int64_t block = std::max<int64_t>(1, std::min<int64_t>(N, (int64_t(1) << 22) / int64_t(row)));
  std::vector<double> obj(static_cast<size_t>(block) * row);
  std::vector<double> total(row, 0.0);
  if (final_x) final_x->assign(nc, 0.0f);
  if (snaps) {
    for (int k : snaps->steps)
      if (k < 0 || k > steps)
        throw std::invalid_argument("baseline: snapshot step " + std::to_string(k) + " outside 0.." +
                                    std::to_string(steps));
    snaps->x.assign(snaps->steps.size(), std::vector<float>(nc, 0.0f));
  }
  const bool parallel = static_cast<double>(N) * d * d * row >= 1e5;
  for (int64_t n0 = 0; n0 < N; n0 += block) {
    const int64_t n1 = std::min(N, n0 + block);
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
    for (int64_t n = n0; n < n1; ++n)
      run_instance(n, obj.data() + (n - n0) * row, final_x ? final_x->data() + n * d : nullptr);
    for (int64_t n = n0; n < n1; ++n)
      for (size_t t = 0; t < row; ++t) total[t] += obj[(n - n0) * row + t];
  }
  for (double& v : total) v /= static_cast<double>(N);
  return total;
}

}  // namespace ml2o
