#include "ml2o/optimizee.hpp"

#include <map>
#include <mutex>
#include <stdexcept>

#include "ml2o/dual.hpp"
#include "ml2o/rng.hpp"

namespace ml2o {

const char* family_name(Family f) {
  switch (f) {
    case Family::lasso: return "lasso";
    case Family::quadratic: return "quadratic";
    case Family::rosenbrock: return "rosenbrock";
    case Family::rastrigin: return "rastrigin";
    case Family::mlp: return "mlp";
  }
  return "?";
}

bool parse_family(const std::string& name, Family* out) {
  for (Family f : {Family::lasso, Family::quadratic, Family::rosenbrock, Family::rastrigin, Family::mlp})
    if (name == family_name(f)) {
      *out = f;
      return true;
    }
  return false;
}

MlpSpec mlp_spec_of(const TaskSpec& spec) {
  MlpSpec m;
  m.layers = spec.layers;
  m.activation = spec.activation;
  m.batch = spec.minibatch;
  m.instances = spec.instances;
  m.seed = spec.seed;
  return m;
}

namespace {

// The split datasets read so far in this process: meta-training samples a task per batch, and
// every one of them trains on the same split.
std::shared_ptr<const DataSplit> cached_split(const TaskSpec& spec) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const DataSplit>> cache;
  const std::string key = spec.dataset + '\n' + spec.data_path + '\n' + spec.labels_path + '\n' +
                          std::to_string(spec.test_fraction) + '\n' + std::to_string(spec.split_seed) +
                          '\n' + std::to_string(spec.layers.back());
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  Dataset d;
  if (spec.dataset == "digits") d = load_digits(spec.data_path);
  else if (spec.dataset == "idx") d = load_idx(spec.data_path, spec.labels_path, spec.layers.back());
  else throw std::invalid_argument("mlp: unknown dataset '" + spec.dataset + "' (allowed: digits, idx)");
  auto split = std::make_shared<const DataSplit>(split_dataset(d, spec.test_fraction, spec.split_seed));
  cache.emplace(key, split);
  return split;
}

}  // namespace

std::shared_ptr<const MlpData> make_mlp_data(const TaskSpec& spec) {
  const auto split = cached_split(spec);
  const MlpSpec m = mlp_spec_of(spec);
  auto data = std::make_shared<MlpData>();
  data->f = make_mlp_problem<float>(m, *split);
  data->d = make_mlp_problem<double>(m, *split);
  return data;
}

template <class S> Task<S> sample_task(const TaskSpec& spec) {
  if (spec.family == Family::rosenbrock && spec.dim != 2)
    throw std::invalid_argument("rosenbrock needs dim = 2");
  Task<S> t;
  t.spec = spec;
  if (spec.family == Family::mlp) {
    t.mlp = make_mlp_data(spec);
    t.spec.dim = static_cast<int>(t.mlp->f.layout.params);  // derived, whatever the spec said
    const std::vector<float> x0 = mlp_init<float>(mlp_spec_of(spec));
    t.x0.assign(x0.begin(), x0.end());
    return t;
  }
  const int64_t N = spec.instances;
  const int d = spec.dim;
  const bool has_matrix = spec.family == Family::lasso || spec.family == Family::quadratic;
  if (has_matrix) {
    t.A.resize(static_cast<size_t>(N) * d * d);
    t.b.resize(static_cast<size_t>(N) * d);
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t e = 0; e < int64_t(d) * d; ++e)
        t.A[n * d * d + e] =
            static_cast<S>(static_cast<float>(spec.sigma * normal01(spec.seed, Stream::matrix_a, n, e)));
      for (int j = 0; j < d; ++j) {
        const double u = uniform01(spec.seed, Stream::vector_b, n, j);
        t.b[n * d + j] = static_cast<S>(static_cast<float>(spec.b_lo + (spec.b_hi - spec.b_lo) * u));
      }
    }
  }
  t.x0.resize(static_cast<size_t>(N) * d);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int j = 0; j < d; ++j) {
      double v;
      if (spec.family == Family::rastrigin)
        v = spec.x0_scale * (2.0 * uniform01(spec.seed, Stream::start_x, n, j) - 1.0);
      else
        v = spec.x0_scale * normal01(spec.seed, Stream::start_x, n, j);
      t.x0[n * d + j] = static_cast<S>(static_cast<float>(v));
    }
  return t;
}

template <class S> double mean_objective(const TaskView<S>& t, const S* x) {
  double total = 0.0;
  for (int64_t n = 0; n < t.instances; ++n)
    total += static_cast<double>(value_of(instance_objective(t, n, x + n * t.dim)));
  return total / static_cast<double>(t.instances);
}

template <class S> void batch_gradient(const TaskView<S>& t, const S* x, S* g) {
#pragma omp parallel
  {
    std::vector<S> scratch(t.dim);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < t.instances; ++n)
      instance_gradient(t, n, x + n * t.dim, g + n * t.dim, scratch.data());
  }
}

template Task<float> sample_task<float>(const TaskSpec&);
template Task<double> sample_task<double>(const TaskSpec&);
template double mean_objective<float>(const TaskView<float>&, const float*);
template double mean_objective<double>(const TaskView<double>&, const double*);
template void batch_gradient<float>(const TaskView<float>&, const float*, float*);
template void batch_gradient<double>(const TaskView<double>&, const double*, double*);

}  // namespace ml2o
