// Loads a reference-vector case (tests/data/*.json, see its README) into engine types.
#pragma once
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ml2o/lopt.hpp"
#include "ml2o/unroll.hpp"

namespace ml2o::testing {

struct VectorCase {
  nlohmann::json j;
  OptimizerHyper hyper;
  std::vector<double> w;
  Task<double> task;
  Trajectory<double> start;
  int T = 0;
  int64_t k0 = 1;

  std::vector<double> flat_grad(const nlohmann::json& per_tensor) const {
    std::vector<double> g(w.size());
    for (const TensorInfo& t : tensor_table(hyper.arch)) {
      const auto& v = per_tensor.at(t.name);
      for (int e = 0; e < t.size(); ++e) g[t.offset + e] = v.at(e).get<double>();
    }
    return g;
  }
};

inline VectorCase load_vector_case(const std::string& name) {
  VectorCase c;
  std::ifstream in(std::string(ML2O_TEST_DATA) + "/" + name + ".json");
  c.j = nlohmann::json::parse(in);
  const auto& j = c.j;
  parse_arch(j.at("optimizer").get<std::string>(), &c.hyper.arch);
  c.w.assign(param_count(c.hyper.arch), 0.0);
  for (const TensorInfo& t : tensor_table(c.hyper.arch)) {
    const auto& data = j.at("weights").at(t.name).at("data");
    for (int e = 0; e < t.size(); ++e) c.w[t.offset + e] = data.at(e).get<double>();
  }
  TaskSpec spec;
  parse_family(j.at("family").get<std::string>(), &spec.family);
  spec.dim = j.at("dim").get<int>();
  spec.instances = j.at("instances").get<int64_t>();
  const auto& opt = j.at("optimizee");
  if (opt.contains("lam")) spec.lam = opt.at("lam").get<double>();
  c.task.spec = spec;
  if (opt.contains("A")) {
    c.task.A = opt.at("A").at("data").get<std::vector<double>>();
    c.task.b = opt.at("b").at("data").get<std::vector<double>>();
  }
  const auto& st = j.at("start_state");
  c.start.x = st.at("x").at("data").get<std::vector<double>>();
  const size_t nc = c.start.x.size();
  c.start.coord.assign(nc, CoordState<double>{});
  auto fill = [&](const char* key, auto member) {
    const auto v = st.at(key).at("data").get<std::vector<double>>();
    for (size_t i = 0; i < nc; ++i)
      for (int h = 0; h < kHidden; ++h) (c.start.coord[i].*member)[h] = v[i * kHidden + h];
  };
  fill("h1", &CoordState<double>::h1);
  fill("c1", &CoordState<double>::c1);
  fill("h2", &CoordState<double>::h2);
  fill("c2", &CoordState<double>::c2);
  const auto m = st.at("m").at("data").get<std::vector<double>>();
  const auto v = st.at("v").at("data").get<std::vector<double>>();
  for (size_t i = 0; i < nc; ++i) {
    c.start.coord[i].m = m[i];
    c.start.coord[i].v = v[i];
  }
  c.T = j.at("T").get<int>();
  c.k0 = j.at("k0").get<int64_t>();
  c.start.k = c.k0;
  return c;
}

// max_i |a_i - b_i| / max(max_i |b_i|, tiny): error relative to the reference's scale.
inline double max_rel_error(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 1e-300;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::abs(a[i] - b[i]));
    den = std::max(den, std::abs(b[i]));
  }
  return num / den;
}

}  // namespace ml2o::testing
