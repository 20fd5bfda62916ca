// Adam on a float weight vector with double moments: the meta-optimizer of training and of
// test-time adaptation. This host function is the reference every backend's adam_step matches.
#pragma once
#include <cstdint>
#include <vector>

namespace ml2o {

struct AdamState {
  std::vector<double> m, v;  // empty until the first step
  int64_t t = 0;
};
struct AdamHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
};

// Bias-correction factors of step t (t >= 1): 1 - beta1^t and 1 - beta2^t, in double.
struct AdamCorrection {
  double c1, c2;
};
AdamCorrection adam_correction(const AdamHyper& h, int64_t t);

void adam_update(std::vector<float>& w, const std::vector<float>& grad, AdamState& st,
                 const AdamHyper& h);

bool all_finite(const std::vector<float>& v);

}  // namespace ml2o
