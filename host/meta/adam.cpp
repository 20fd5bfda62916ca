#include "ml2o/adam.hpp"

#include <cmath>

namespace ml2o {

AdamCorrection adam_correction(const AdamHyper& h, int64_t t) {
  return AdamCorrection{1.0 - std::pow(h.beta1, double(t)), 1.0 - std::pow(h.beta2, double(t))};
}

void adam_update(std::vector<float>& w, const std::vector<float>& grad, AdamState& st,
                 const AdamHyper& h) {
  if (st.m.empty()) {
    st.m.assign(w.size(), 0.0);
    st.v.assign(w.size(), 0.0);
  }
  ++st.t;
  const AdamCorrection c = adam_correction(h, st.t);
  for (size_t p = 0; p < w.size(); ++p) {
    const double g = grad[p];
    st.m[p] = h.beta1 * st.m[p] + (1.0 - h.beta1) * g;
    st.v[p] = h.beta2 * st.v[p] + (1.0 - h.beta2) * g * g;
    w[p] = static_cast<float>(w[p] - h.lr * (st.m[p] / c.c1) / (std::sqrt(st.v[p] / c.c2) + h.eps));
  }
}

bool all_finite(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

}  // namespace ml2o
