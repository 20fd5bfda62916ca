// Optimizee families (docs/method.md section 1): batched tasks of N instances, structure of arrays.
// Per-instance objective, gradient and Hessian-vector product are shared with the CUDA kernels.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "ml2o/hd.hpp"

namespace ml2o {

enum class Family : int { lasso = 0, quadratic = 1, rosenbrock = 2, rastrigin = 3 };

const char* family_name(Family f);
bool parse_family(const std::string& name, Family* out);
constexpr const char* kFamilyNames = "lasso, quadratic, rosenbrock, rastrigin";

// Everything that defines a task's distribution. Defaults are the paper's LASSO.
struct TaskSpec {
  Family family = Family::lasso;
  int dim = 10;
  int64_t instances = 128;
  double sigma = 1.0;      // std of A's entries (LASSO, Quadratic)
  double lam = 0.005;      // LASSO's l1 weight
  double b_lo = 0.0, b_hi = 1.0;  // b ~ U(b_lo, b_hi)
  double x0_scale = 0.01;  // x0 ~ N(0, scale^2); Rastrigin: U(-scale, scale)
  double alpha = 10.0;     // Rastrigin's alpha
  uint64_t seed = 0;
};

// A sampled task: A [N, d, d] row-major per instance, b [N, d] (empty for Rosenbrock/Rastrigin).
template <class S> struct Task {
  TaskSpec spec;
  std::vector<S> A, b, x0;
};

// A non-owning view used by both backends' inner loops.
template <class S> struct TaskView {
  Family family;
  int dim;
  int64_t instances;
  const S* A;
  const S* b;
  S lam, alpha;
};

template <class S> TaskView<S> view_of(const Task<S>& t) {
  return TaskView<S>{t.spec.family, t.spec.dim, t.spec.instances,
                     t.A.empty() ? nullptr : t.A.data(), t.b.empty() ? nullptr : t.b.data(),
                     S(t.spec.lam), S(t.spec.alpha)};
}

// Draws the task (A, b, x0) from the spec's seed with the counter-based generator; the float32
// values are bit-identical to the CUDA sampler's.
template <class S> Task<S> sample_task(const TaskSpec& spec);
// Converts a task between precisions (float instances promoted exactly to double, say).
template <class To, class From> Task<To> cast_task(const Task<From>& t) {
  Task<To> out;
  out.spec = t.spec;
  out.A.assign(t.A.begin(), t.A.end());
  out.b.assign(t.b.begin(), t.b.end());
  out.x0.assign(t.x0.begin(), t.x0.end());
  return out;
}

template <class S> ML2O_HD S sign_of(S x) { return S((x > S(0)) - (x < S(0))); }

constexpr double kTwoPi = 6.283185307179586;

// f_n(x) for instance n; x points at the instance's d coordinates.
template <class S> ML2O_HD S instance_objective(const TaskView<S>& t, int64_t n, const S* x) {
  const int d = t.dim;
  S f = S(0);
  switch (t.family) {
    case Family::lasso:
    case Family::quadratic: {
      const S* A = t.A + n * d * d;
      const S* b = t.b + n * d;
      for (int i = 0; i < d; ++i) {
        S r = -b[i];
        for (int j = 0; j < d; ++j) r += A[i * d + j] * x[j];
        f += S(0.5) * r * r;
      }
      if (t.family == Family::lasso) {
        S l1 = S(0);
        for (int j = 0; j < d; ++j) l1 += fabs(x[j]);
        f += t.lam * l1;
      }
      break;
    }
    case Family::rosenbrock: {
      const S a = S(1) - x[0], q = x[1] - x[0] * x[0];
      f = a * a + S(100) * q * q;
      break;
    }
    case Family::rastrigin:
      for (int j = 0; j < d; ++j) f += x[j] * x[j] - t.alpha * cos(S(kTwoPi) * x[j]) + t.alpha;
      break;
  }
  return f;
}

// g = grad f_n(x); scratch holds d values (the residual).
template <class S>
ML2O_HD void instance_gradient(const TaskView<S>& t, int64_t n, const S* x, S* g, S* scratch) {
  const int d = t.dim;
  switch (t.family) {
    case Family::lasso:
    case Family::quadratic: {
      const S* A = t.A + n * d * d;
      const S* b = t.b + n * d;
      for (int i = 0; i < d; ++i) {
        S r = -b[i];
        for (int j = 0; j < d; ++j) r += A[i * d + j] * x[j];
        scratch[i] = r;
      }
      for (int j = 0; j < d; ++j) {
        S acc = S(0);
        for (int i = 0; i < d; ++i) acc += A[i * d + j] * scratch[i];
        g[j] = acc + (t.family == Family::lasso ? t.lam * sign_of(x[j]) : S(0));
      }
      break;
    }
    case Family::rosenbrock: {
      const S q = x[1] - x[0] * x[0];
      g[0] = S(-2) * (S(1) - x[0]) - S(400) * x[0] * q;
      g[1] = S(200) * q;
      break;
    }
    case Family::rastrigin:
      for (int j = 0; j < d; ++j)
        g[j] = S(2) * x[j] + t.alpha * S(kTwoPi) * sin(S(kTwoPi) * x[j]);
      break;
  }
}

// out = H_n(x) v (the l1 term has zero curvature almost everywhere); scratch holds d values.
template <class S>
ML2O_HD void instance_hvp(const TaskView<S>& t, int64_t n, const S* x, const S* v, S* out,
                          S* scratch) {
  const int d = t.dim;
  switch (t.family) {
    case Family::lasso:
    case Family::quadratic: {
      const S* A = t.A + n * d * d;
      for (int i = 0; i < d; ++i) {
        S r = S(0);
        for (int j = 0; j < d; ++j) r += A[i * d + j] * v[j];
        scratch[i] = r;
      }
      for (int j = 0; j < d; ++j) {
        S acc = S(0);
        for (int i = 0; i < d; ++i) acc += A[i * d + j] * scratch[i];
        out[j] = acc;
      }
      break;
    }
    case Family::rosenbrock: {
      const S h00 = S(2) - S(400) * (x[1] - S(3) * x[0] * x[0]);
      const S h01 = S(-400) * x[0];
      out[0] = h00 * v[0] + h01 * v[1];
      out[1] = h01 * v[0] + S(200) * v[1];
      break;
    }
    case Family::rastrigin:
      for (int j = 0; j < d; ++j)
        out[j] = (S(2) + t.alpha * S(kTwoPi * kTwoPi) * cos(S(kTwoPi) * x[j])) * v[j];
      break;
  }
}

// Batched helpers (CPU): mean objective over instances, and the gradient of every instance.
template <class S> double mean_objective(const TaskView<S>& t, const S* x);
template <class S> void batch_gradient(const TaskView<S>& t, const S* x, S* g);

}  // namespace ml2o
