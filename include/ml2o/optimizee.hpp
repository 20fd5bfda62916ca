// Optimizee families (docs/method.md section 1): batched tasks of N instances, structure of arrays.
// Per-instance objective, gradient and Hessian-vector product are shared with the CUDA kernels.
#pragma once
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <type_traits>
#include <string>
#include <vector>

#include "ml2o/hd.hpp"
#include "ml2o/mlp.hpp"

namespace ml2o {

enum class Family : int { lasso = 0, quadratic = 1, rosenbrock = 2, rastrigin = 3, mlp = 4 };

const char* family_name(Family f);
bool parse_family(const std::string& name, Family* out);
constexpr const char* kFamilyNames = "lasso, quadratic, rosenbrock, rastrigin, mlp";

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
  // mlp (docs/mlp.md): dim is derived, the parameter count P of `layers`; x0 is the networks'
  // initial weights (Glorot or He), the objective the minibatch cross-entropy at the global step.
  std::vector<int> layers = {64, 20, 10};
  Activation activation = Activation::sigmoid;
  int minibatch = 32;
  std::string dataset = "digits";  // "digits" (data_path: the CSV) or "idx" (images + labels)
  std::string data_path = kDigitsPath;
  std::string labels_path;         // idx only
  double test_fraction = 0.2;
  uint64_t split_seed = 0;
};

// An mlp task's data: the split dataset and the problem (network, minibatch seed, instances) in
// float (the engine) and double (the oracle), shared by every view of the task.
struct MlpData {
  MlpProblem<float> f;
  MlpProblem<double> d;
};
// Builds the problem of an mlp spec; the dataset is read and split once per (file(s), fraction,
// split seed) and process (FormatError naming the path when a file is bad, std::invalid_argument
// when the network does not fit the data).
std::shared_ptr<const MlpData> make_mlp_data(const TaskSpec& spec);
MlpSpec mlp_spec_of(const TaskSpec& spec);

// A sampled task: A [N, d, d] row-major per instance, b [N, d] (empty for Rosenbrock/Rastrigin).
template <class S> struct Task {
  TaskSpec spec;
  std::vector<S> A, b, x0;
  std::shared_ptr<const MlpData> mlp;  // mlp only
};

// A non-owning view used by both backends' inner loops.
template <class S> struct TaskView {
  Family family;
  int dim;
  int64_t instances;
  const S* A;
  const S* b;
  S lam, alpha;
  const MlpData* mlp = nullptr;  // host memory; mlp tasks run on the CPU only
};

template <class S> TaskView<S> view_of(const Task<S>& t) {
  return TaskView<S>{t.spec.family, t.spec.dim, t.spec.instances,
                     t.A.empty() ? nullptr : t.A.data(), t.b.empty() ? nullptr : t.b.data(),
                     S(t.spec.lam), S(t.spec.alpha), t.mlp.get()};
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
  out.mlp = t.mlp;
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
    case Family::mlp: break;  // depends on the step (its minibatch): MlpEvaluator
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
    case Family::mlp: break;  // MlpEvaluator
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
    case Family::mlp: break;  // no second derivatives (refused before any unroll)
  }
}

// The mlp objective of instance n at global step k (the mean cross-entropy over its step-k
// minibatch) and its gradient, for one thread (it owns the workspace). Float and double only: the
// mlp family has no second derivatives, so the Dual scalars of Hessian-vector products are refused
// (mlp_scalar_supported) before any evaluator is made.
template <class S>
constexpr bool mlp_scalar_supported = std::is_same_v<S, float> || std::is_same_v<S, double>;

template <class S> class MlpEvaluator {
 public:
  explicit MlpEvaluator(const TaskView<S>& t) {
    if constexpr (mlp_scalar_supported<S>) {
      if (t.mlp) {
        if constexpr (std::is_same_v<S, float>) p_ = &t.mlp->f;
        else p_ = &t.mlp->d;
        ws_.emplace(p_->layout, p_->spec.batch);
      }
    }
  }
  S loss_grad(int64_t n, int64_t k, const S* x, S* g) {
    if constexpr (mlp_scalar_supported<S>) return mlp_instance_loss_grad(*p_, n, k, x, g, *ws_);
    else return S(0);  // unreachable: refused up front
  }

 private:
  const MlpProblem<S>* p_ = nullptr;
  std::optional<MlpWorkspace<S>> ws_;
};

// Batched helpers (CPU): mean objective over instances, and the gradient of every instance.
template <class S> double mean_objective(const TaskView<S>& t, const S* x);
template <class S> void batch_gradient(const TaskView<S>& t, const S* x, S* g);

}  // namespace ml2o
