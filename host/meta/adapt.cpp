// Test-time adaptation (K Adam updates of the weights on a target task) and evaluation with frozen
// weights. Both run every task of a batch in one backend call per step.
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "ml2o/meta.hpp"

namespace ml2o {

std::vector<AdaptResult> adapt(Backend& be, const AdaptPlan& plan, const LearnedOptimizer& start,
                               const std::vector<const BackendTask*>& tasks, int K) {
  if (plan.unroll < 1 || plan.trajectory < plan.unroll || plan.trajectory % plan.unroll != 0)
    throw std::invalid_argument("adapt: the trajectory must be a positive multiple of the unroll");
  const size_t n = tasks.size();
  const int per_trajectory = plan.trajectory / plan.unroll;
  std::vector<std::unique_ptr<BackendVector>> w, grad;
  std::vector<std::unique_ptr<BackendAdam>> adam;
  std::vector<std::unique_ptr<BackendTrajectory>> traj, next;
  std::vector<int64_t> skipped(n, 0);
  for (const BackendTask* t : tasks) {
    w.push_back(upload_vector(be, start.weights));
    grad.push_back(be.vector(start.weights.size()));
    adam.push_back(be.adam(start.weights.size()));
    traj.push_back(be.trajectory(*t));
    next.push_back(be.trajectory(*t));
  }
  for (int k = 0; k < K; ++k) {
    std::vector<UnrollItem> items;
    for (size_t i = 0; i < n; ++i) {
      if (k % per_trajectory == 0) traj[i]->restart();
      next[i]->assign(*traj[i]);
      items.push_back(UnrollItem{tasks[i], next[i].get(), w[i].get(), grad[i].get()});
    }
    const std::vector<UnrollLoss> losses = be.unroll(start.hyper, items, plan.unroll, plan.mode);
    for (size_t i = 0; i < n; ++i) {
      if (std::isfinite(losses[i].meta_loss) && be.all_finite(*grad[i])) {
        be.adam_step(*w[i], *grad[i], *adam[i], plan.adam);
        std::swap(traj[i], next[i]);
      } else {
        ++skipped[i];  // skipped update; restart the trajectory from x0
        traj[i]->restart();
      }
    }
  }
  std::vector<AdaptResult> out;
  for (size_t i = 0; i < n; ++i) out.push_back(AdaptResult{LearnedOptimizer{start.hyper, w[i]->read()}, skipped[i]});
  return out;
}

std::vector<std::vector<double>> evaluate(Backend& be, const std::vector<LearnedOptimizer>& opts,
                                          const std::vector<const BackendTask*>& tasks, int steps,
                                          const std::vector<int>& report_steps,
                                          const IterateReport& report) {
  if (opts.empty() || (opts.size() != 1 && opts.size() != tasks.size()))
    throw std::invalid_argument("evaluate: give one optimizer, or one per task");
  for (size_t i = 0; i < report_steps.size(); ++i)
    if (report_steps[i] < 0 || report_steps[i] > steps || (i > 0 && report_steps[i] <= report_steps[i - 1]))
      throw std::invalid_argument("evaluate: report steps must increase within 0..steps");
  std::vector<std::unique_ptr<BackendVector>> w;
  for (const LearnedOptimizer& o : opts) w.push_back(upload_vector(be, o.weights));
  std::vector<std::unique_ptr<BackendTrajectory>> traj;
  std::vector<UnrollItem> items;
  for (size_t i = 0; i < tasks.size(); ++i) {
    traj.push_back(be.trajectory(*tasks[i]));
    items.push_back(UnrollItem{tasks[i], traj.back().get(), w[opts.size() == 1 ? 0 : i].get(), nullptr});
  }
  std::vector<std::vector<double>> curves(tasks.size());
  auto report_at = [&](int step) {
    for (size_t i = 0; i < tasks.size(); ++i) report(step, i, traj[i]->read().x);
  };
  // Segments end at each report step and at `steps`; each segment's first loss is the previous
  // one's last (the same iterate at the same global step), so it is kept once.
  std::vector<int> ends;
  for (int s : report_steps)
    if (s > 0) ends.push_back(s);
  if (ends.empty() || ends.back() != steps) ends.push_back(steps);
  if (!report_steps.empty() && report_steps.front() == 0) report_at(0);
  int done = 0;
  for (int end : ends) {
    std::vector<UnrollLoss> seg = be.unroll(opts[0].hyper, items, end - done, GradMode::none);
    for (size_t i = 0; i < tasks.size(); ++i) {
      auto& c = curves[i];
      c.insert(c.end(), seg[i].step_loss.begin() + (done == 0 ? 0 : 1), seg[i].step_loss.end());
    }
    done = end;
    if (std::find(report_steps.begin(), report_steps.end(), end) != report_steps.end()) report_at(end);
  }
  return curves;
}

}  // namespace ml2o
