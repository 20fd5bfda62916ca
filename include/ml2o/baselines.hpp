// Analytical optimizers run on the same batched tasks as the learned ones: SGD, Momentum, Adam,
// RMSProp (learning rate a setting), and ISTA / FISTA for LASSO (step 1/L with L the largest
// eigenvalue of A^T A of each instance).
#pragma once
#include <string>
#include <vector>

#include "ml2o/optimizee.hpp"

namespace ml2o {

enum class BaselineKind { sgd, momentum, adam, rmsprop, ista, fista };
constexpr const char* kBaselineNames = "sgd, momentum, adam, rmsprop, ista, fista";
const char* baseline_name(BaselineKind k);
bool parse_baseline(const std::string& name, BaselineKind* out);

struct BaselineSpec {
  BaselineKind kind = BaselineKind::adam;
  double lr = 1e-2;        // ignored by ISTA/FISTA, whose step is 1/L per instance
  double momentum = 0.9;   // Momentum's coefficient
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // Adam
  double rms_decay = 0.9;  // RMSProp's decay (eps shared with Adam)
};

// Iterates kept at chosen steps (the mlp family's test-accuracy reports): x[i] holds every
// instance's iterate [N * d] after steps[i] updates (steps in 0..run length).
struct IterateSnapshots {
  std::vector<int> steps;
  std::vector<std::vector<float>> x;
};

// CPU reference: steps + 1 mean objectives, starting at task.x0. Also returns the final iterate,
// and the iterates at snaps->steps. On an mlp task the objective of x_t is its loss on the
// minibatch of step t + 1, the one its gradient is drawn from (as in the learned optimizers' unroll).
std::vector<double> run_baseline_cpu(const BaselineSpec& spec, const Task<float>& task, int steps,
                                     std::vector<float>* final_x = nullptr,
                                     IterateSnapshots* snaps = nullptr);

// Largest eigenvalue of A_n^T A_n for every instance (power iteration in double), for ISTA/FISTA.
std::vector<double> lipschitz_constants(const Task<float>& task);

}  // namespace ml2o
