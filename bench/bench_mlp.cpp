// Throughput of the learned optimizer on the mlp family (CPU backend), and where the time goes.
//
//   bench_mlp [--budget-s SECONDS]
//
// For each network (digits, minibatch 32, N instances) it times, with one warm-up call then the
// median of repeated calls (at least 3, about --budget-s seconds each, default 1):
//   unroll    Backend::unroll, T = 20 steps with the meta-gradient (gradient_constant): forward,
//             BPTT and the optimizee's gradients;
//   forward   the same without the meta-gradient (evaluation);
//   gradient  the optimizee alone: the T + 1 minibatch losses and gradients of every instance that
//             an unroll draws (mlp_instance_loss_grad, one thread).
// A coordinate-step is one parameter of one network advanced one step (forward and backward for
// `unroll`). `gradient_share` = gradient time / unroll time: the rest is the learned optimizer
// (its LSTM per coordinate, forward and backward). Timed with the process's threads (OpenMP) for
// the unroll, one thread for the gradient, so on more than one core the share is an upper bound.
// One JSON line per case on stdout. The CUDA backend does not run mlp yet: nothing is timed there.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ml2o/backend.hpp"
#include "ml2o/lopt.hpp"

namespace {

using namespace ml2o;
using Clock = std::chrono::steady_clock;

template <class F> double median_seconds(F&& f, double budget_s) {
  f();  // warm-up
  std::vector<double> t;
  const auto start = Clock::now();
  while (t.size() < 3 || std::chrono::duration<double>(Clock::now() - start).count() < budget_s) {
    const auto t0 = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  double budget_s = 1.0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--budget-s") == 0 && i + 1 < argc) budget_s = std::atof(argv[++i]);
    else {
      std::cerr << "usage: bench_mlp [--budget-s SECONDS]\n";
      return 2;
    }
  }
  if (!std::filesystem::exists(kDigitsPath)) {
    std::cerr << "bench_mlp: no " << kDigitsPath << " (scripts/setup.sh installs python3-sklearn)\n";
    return 0;
  }
  struct Case {
    std::vector<int> layers;
    Activation act;
    int64_t instances;
  };
  const std::vector<Case> cases = {{{64, 8, 10}, Activation::sigmoid, 2},
                                   {{64, 20, 10}, Activation::sigmoid, 8},
                                   {{64, 32, 32, 10}, Activation::relu, 4}};
  const int T = 20;
  auto be = make_cpu_backend();
  const OptimizerHyper hyper;
  const std::vector<float> w = init_optimizer(hyper, 1).weights;
  for (const Case& c : cases) {
    TaskSpec spec;
    spec.family = Family::mlp;
    spec.layers = c.layers;
    spec.activation = c.act;
    spec.minibatch = 32;
    spec.instances = c.instances;
    spec.seed = 1;
    const Task<float> task = sample_task<float>(spec);
    const int64_t coords = task.spec.instances * task.spec.dim;
    const auto held = be->upload(task);
    const auto traj = be->trajectory(*held);
    const auto wv = upload_vector(*be, w);
    const auto grad = be->vector(w.size());
    auto unroll = [&](GradMode mode) {
      traj->restart();
      const UnrollItem item{held.get(), traj.get(), wv.get(), mode == GradMode::none ? nullptr : grad.get()};
      be->unroll(hyper, std::span<const UnrollItem>(&item, 1), T, mode);
    };
    const double t_unroll = median_seconds([&] { unroll(GradMode::gradient_constant); }, budget_s);
    const double t_forward = median_seconds([&] { unroll(GradMode::none); }, budget_s);
    MlpWorkspace<float> ws(task.mlp->f.layout, spec.minibatch);
    std::vector<float> g(task.spec.dim);
    const double t_grad = median_seconds(
        [&] {
          for (int t = 0; t <= T; ++t)
            for (int64_t n = 0; n < c.instances; ++n)
              mlp_instance_loss_grad(task.mlp->f, n, 1 + t, task.x0.data() + n * task.spec.dim,
                                     g.data(), ws);
        },
        budget_s);
    nlohmann::json layers = c.layers;
    std::cout << nlohmann::json{{"backend", "cpu"},
                                {"layers", layers},
                                {"activation", activation_name(c.act)},
                                {"minibatch", spec.minibatch},
                                {"instances", c.instances},
                                {"params_per_network", task.spec.dim},
                                {"coordinates", coords},
                                {"T", T},
                                {"unroll_ms", t_unroll * 1e3},
                                {"forward_ms", t_forward * 1e3},
                                {"gradient_ms", t_grad * 1e3},
                                {"unroll_coord_steps_per_s", double(coords) * T / t_unroll},
                                {"forward_coord_steps_per_s", double(coords) * T / t_forward},
                                {"gradient_share", t_grad / t_unroll}}
                     .dump()
              << std::endl;
  }
  return 0;
}
