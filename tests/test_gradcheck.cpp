// The CPU BPTT reference (unroll_cpu<double>) against finite differences, float32 against double,
// and the Dual<double> tangents against FD of the gradient (Hessian-vector products).
//
// What each meta-gradient is the derivative of:
// - GradMode::second_derivatives: the true meta-loss L(w) = sum_t mean_n f_n(x_t(w)), i.e. what
//   unroll_cpu(GradMode::none) returns. FD of it at w +- h e_i.
// - GradMode::gradient_constant: the optimizee gradient g_t fed to the optimizer is an input with no
//   derivative. Its value equals L(w) but its gradient is that of the *frozen-gradient* loss
//   L~(w) = sum_t mean_n f_n(x~_t(w)),  x~_{t+1} = x~_t + step(w, g_t^0),  where g_t^0 are the
//   gradients recorded along the unperturbed trajectory (at w0). A plain FD of L would measure
//   something else. The FD is taken of L~.
// Both losses are computed by a test-only forward loop over optimizer_step_forward (cell.hpp, the
// shared per-coordinate math), templated on the scalar; each case checks that it reproduces
// unroll_cpu's meta-loss to 1e-13 (at w0 and at a perturbed point).
//
// FD step and precision, per case and mode. The FD's rounding floor is ~eps |L| / h; where the
// meta-gradient is small next to the loss (short unrolls) it exceeds 1e-6 of the gradient in
// double. So: double precision with the fourth-order stencil
//   (8 (L(w+h) - L(w-h)) - (L(w+2h) - L(w-2h))) / 12h,  h = 1e-4,
// where its floor (10 eps sum_t |L_t| / h) is below 1/10 of the tolerance for every tensor, else
// long double (x87, 64-bit mantissa: a 2048 times lower floor, and 5 times slower) with the central
// difference at h = 1e-6. h is also kept small enough that the stencil
// never straddles a kink of the meta-loss: LASSO's |x| at 0 (x is kept 2e-2 away) and RNNprop's
// ELU at 0 (C1, not C2; h <= min|pre-activation| / (8 max(1, |u|))).
//
// Error measure, per tensor: max_i |fd_i - an_i| / max_{i in tensor} |an_i|  (the error relative to
// the tensor's gradient scale); tolerance 1e-6. The checked weights are every weight of the
// tensors with <= 100 entries and 60 random ones of each larger tensor (>= 300 weights per case,
// every tensor), plus two tiny cases checking every weight of each architecture.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ml2o/dual.hpp"
#include "ml2o/lopt.hpp"
#include "ml2o/unroll.hpp"

namespace ml2o {
namespace {

using LD = long double;
constexpr double kTol = 1e-6;

struct GradCase {
  Arch arch;
  Family family;
  int N, d, T;
  int64_t k0;
  bool random_state;
  uint64_t seed;
  std::string label() const {
    std::ostringstream s;
    s << arch_name(arch) << "/" << family_name(family) << " N" << N << " d" << d << " T" << T
      << " k0=" << k0 << (random_state ? " random-state" : " zero-state") << " seed " << seed;
    return s.str();
  }
};

// A task for the checks. LASSO uses a larger lam so the l1 term matters, and x0 of scale 0.5 so
// that |x| stays away from the kink at 0 (checked along the trajectory by the caller).
Task<double> make_task(Family f, int N, int d, uint64_t seed) {
  TaskSpec s;
  s.family = f;
  s.dim = f == Family::rosenbrock ? 2 : d;
  s.instances = N;
  s.seed = seed;
  s.lam = 0.1;
  s.b_lo = f == Family::quadratic ? -1.0 : 0.0;
  s.x0_scale = f == Family::rastrigin ? 3.0 : (f == Family::rosenbrock ? 1.0 : 0.5);
  s.alpha = 10.0;
  return sample_task<double>(s);
}

// What the FD step must stay clear of along the trajectory: LASSO's |x| kink at 0 and RNNprop's ELU
// kink at a pre-activation of 0 (ELU is C1 but not C2 there: a stencil straddling it is off by O(h)).
struct TrajStats {
  double min_abs_x = INFINITY;     // min |x_t|
  double min_abs_zpre = INFINITY;  // RNNprop: min |ELU input|
  double max_abs_u = 0.0;          // RNNprop: max |feature| (d zpre / d W_in)
};

// Forward loop of the optimizer with a choice of gradient: the true one (g_rec null; g_out, when
// given, receives g_t for t < T) or the recorded g_rec[t], fed without derivative. Returns
// sum_t mean_n f_n(x_t), summed like unroll_cpu.
template <class S>
S forward_loss(const OptimizerHyper& hyper, const std::vector<S>& w, const Task<S>& task,
               const Trajectory<S>& start, int T, const std::vector<std::vector<LD>>* g_rec,
               std::vector<std::vector<LD>>* g_out, TrajStats* stats = nullptr) {
  const auto view = view_of(task);
  const int d = view.dim;
  const int64_t N = view.instances;
  Trajectory<S> tr = start;
  std::vector<S> g(tr.x.size()), scratch(d);
  StepTape<S> tape;
  S loss = S(0);
  if (g_out) g_out->clear();
  for (int t = 0; t <= T; ++t) {
    S step = S(0);
    for (int64_t n = 0; n < N; ++n) {
      step += instance_objective(view, n, tr.x.data() + n * d);
      instance_gradient(view, n, tr.x.data() + n * d, g.data() + n * d, scratch.data());
    }
    loss += step * (S(1) / S(double(N)));
    if (stats)
      for (const S& xi : tr.x) stats->min_abs_x = std::min(stats->min_abs_x, double(std::abs(value_of(xi))));
    if (t == T) break;
    if (g_out) {
      g_out->emplace_back();
      for (const S& gi : g) g_out->back().push_back(LD(value_of(gi)));
    }
    for (size_t c = 0; c < tr.x.size(); ++c) {
      const S gin = g_rec ? S((*g_rec)[t][c]) : g[c];  // recorded: no derivative
      tr.x[c] += optimizer_step_forward(hyper, w.data(), gin, tr.k + t, tr.coord[c], tape);
      if (stats && hyper.arch == Arch::rnnprop) {
        for (int h = 0; h < kHidden; ++h)
          stats->min_abs_zpre = std::min(stats->min_abs_zpre, double(std::abs(value_of(tape.zpre[h]))));
        for (int f = 0; f < 2; ++f)
          stats->max_abs_u = std::max(stats->max_abs_u, double(std::abs(value_of(tape.u[f]))));
      }
    }
  }
  return loss;
}

struct GradSetup {
  OptimizerHyper hyper;
  std::vector<double> w;
  Task<double> task;
  Trajectory<double> start;
  double kink = INFINITY;  // how far a weight may move before a kink can be crossed
  Task<LD> task_ld;        // the same case in long double, for the FD
  Trajectory<LD> start_ld;
};

GradSetup make_setup(const GradCase& c) {
  GradSetup s;
  s.hyper.arch = c.arch;
  std::mt19937_64 rng(c.seed * 7919 + 17);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> unif(-1.0, 1.0);
  if (c.arch == Arch::dmlstm && c.seed % 2 == 1) {  // DeepMind's code's settings
    s.hyper.dm_p = 5.0;
    s.hyper.dm_scale = 0.01;
  }
  const auto opt = init_optimizer(s.hyper, c.seed);
  // Redraw (deterministically, w.h.p. never) until the trajectory keeps clear of the kinks.
  for (uint64_t attempt = 0;; ++attempt) {
    // Jitter every weight (the zero-initialised biases included) so no tensor is special.
    s.w.assign(opt.weights.begin(), opt.weights.end());
    for (double& v : s.w) v += 0.05 * normal(rng);
    s.task = make_task(c.family, c.N, c.d, c.seed + 1000 * attempt);
    s.start = start_trajectory(s.task.x0);
    s.start.k = c.k0;
    if (c.random_state)
      for (auto& st : s.start.coord) {
        st.m = 0.3 * normal(rng);
        st.v = st.m * st.m + 0.5 * std::abs(normal(rng)) + 0.01;
        for (int h = 0; h < kHidden; ++h) {
          st.h1[h] = 0.5 * unif(rng);
          st.c1[h] = unif(rng);
          st.h2[h] = 0.5 * unif(rng);
          st.c2[h] = unif(rng);
        }
      }
    TrajStats st;
    forward_loss(s.hyper, s.w, s.task, s.start, c.T, nullptr, nullptr, &st);
    if (c.family == Family::lasso && st.min_abs_x < 2e-2) continue;
    // The 4-point stencil reaches 2h; keep the ELU input's move (|u| 2h, or 2h for b_in) inside
    // a quarter of its distance to the kink.
    if (c.arch == Arch::rnnprop) s.kink = st.min_abs_zpre / (8.0 * std::max(1.0, st.max_abs_u));
    if (s.kink < 1e-6) continue;
    break;
  }
  s.task_ld = cast_task<LD>(s.task);
  s.start_ld = cast_trajectory<LD>(s.start);
  return s;
}

// Weights to check: all of small tensors, `per_large` random ones of each larger tensor.
std::vector<int> pick_weights(Arch arch, int per_large, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int> idx;
  for (const TensorInfo& t : tensor_table(arch)) {
    if (per_large < 0 || t.size() <= 100) {
      for (int e = 0; e < t.size(); ++e) idx.push_back(t.offset + e);
    } else {
      std::vector<int> all(t.size());
      for (int e = 0; e < t.size(); ++e) all[e] = t.offset + e;
      std::shuffle(all.begin(), all.end(), rng);
      idx.insert(idx.end(), all.begin(), all.begin() + per_large);
    }
  }
  return idx;
}

struct FdPlan {
  bool long_double;
  double h;
};

// See the header: double with the fourth-order stencil where its rounding floor allows.
FdPlan plan_fd(const GradSetup& s, const std::vector<double>& an, const std::vector<double>& step_loss) {
  double loss_abs = 0.0;
  for (double l : step_loss) loss_abs += std::abs(l);
  double min_scale = INFINITY;
  for (const TensorInfo& t : tensor_table(s.hyper.arch)) {
    double m = 0.0;
    for (int e = 0; e < t.size(); ++e) m = std::max(m, std::abs(an[t.offset + e]));
    if (m > 0.0) min_scale = std::min(min_scale, m);
  }
  const double h = std::min(1e-4, s.kink);
  const double floor = 10.0 * std::numeric_limits<double>::epsilon() * loss_abs / h;
  if (floor <= 0.1 * kTol * min_scale) return {false, h};
  return {true, std::min(1e-6, s.kink)};
}

// The loss with weight i moved by off, in the plan's precision: the meta-loss (g_rec null) or the
// frozen-gradient loss. Each thread passes its own copies of the weights (restored after use).
struct LossAt {
  const GradSetup& s;
  int T;
  const std::vector<std::vector<LD>>* g_rec;
  bool long_double;
  LD operator()(std::vector<double>& wd, std::vector<LD>& wl, int i, LD off) const {
    if (long_double) {
      const LD keep = wl[i];
      wl[i] += off;
      const LD l = forward_loss(s.hyper, wl, s.task_ld, s.start_ld, T, g_rec, nullptr);
      wl[i] = keep;
      return l;
    }
    const double keep = wd[i];
    wd[i] += double(off);
    const double l = forward_loss(s.hyper, wd, s.task, s.start, T, g_rec, nullptr);
    wd[i] = keep;
    return l;
  }
};

// The FD of the loss at the listed weights.
std::vector<double> fd_at(const FdPlan& plan, const std::vector<int>& idx, const LossAt& loss) {
  std::vector<double> fd(idx.size());
#pragma omp parallel
  {
    std::vector<double> wd = loss.s.w;
    std::vector<LD> wl(wd.begin(), wd.end());
    auto L = [&](int i, LD off) { return loss(wd, wl, i, off); };
#pragma omp for schedule(dynamic, 8)
    for (size_t k = 0; k < idx.size(); ++k) {
      const int i = idx[k];
      const LD h = plan.h;
      fd[k] = plan.long_double
                  ? double((L(i, h) - L(i, -h)) / (2 * h))
                  : double((8 * (L(i, h) - L(i, -h)) - (L(i, 2 * h) - L(i, -2 * h))) / (12 * h));
    }
  }
  return fd;
}

struct CheckResult {
  double worst = 0.0;
  std::string worst_tensor;
};

// max |fd - an| / (max |an| over the tensor), over the listed weights.
CheckResult compare(Arch arch, const std::vector<double>& an, const std::vector<int>& idx,
                    const std::vector<double>& fd) {
  CheckResult r;
  for (const TensorInfo& t : tensor_table(arch)) {
    double scale = 0.0;
    for (int e = 0; e < t.size(); ++e) scale = std::max(scale, std::abs(an[t.offset + e]));
    if (!(scale > 0.0)) scale = 1e-300;
    for (size_t k = 0; k < idx.size(); ++k) {
      if (idx[k] < t.offset || idx[k] >= t.offset + t.size()) continue;
      const double err = std::abs(fd[k] - an[idx[k]]) / scale;
      if (err > r.worst || r.worst_tensor.empty()) {
        r.worst = err;
        r.worst_tensor = t.name;
      }
    }
  }
  return r;
}

struct ModeErrors {
  double constant = 0.0, second = 0.0;
  int long_double_runs = 0;
};

ModeErrors check_case(const GradCase& c, int per_large) {
  const GradSetup s = make_setup(c);
  const auto view = view_of(s.task);
  const auto idx = pick_weights(c.arch, per_large, c.seed + 99);
  const std::vector<LD> w_ld(s.w.begin(), s.w.end());
  ModeErrors out;
  for (GradMode mode : {GradMode::second_derivatives, GradMode::gradient_constant}) {
    const bool second = mode == GradMode::second_derivatives;
    auto traj = s.start;
    const auto r = unroll_cpu(s.hyper, s.w, view, traj, c.T, mode);
    const FdPlan plan = plan_fd(s, r.grad, r.step_loss);
    out.long_double_runs += plan.long_double;
    std::vector<std::vector<LD>> g_rec;  // gradient_constant: g_t along the trajectory at w0
    if (!second) forward_loss(s.hyper, w_ld, s.task_ld, s.start_ld, c.T, nullptr, &g_rec);
    const LossAt loss{s, c.T, second ? nullptr : &g_rec, plan.long_double};
    // The FD'd function is unroll_cpu's meta-loss (at w0; for second_derivatives also at a
    // perturbed point). The frozen-gradient loss equals it at w0.
    for (double off : {0.0, 1e-3}) {
      if (!second && off != 0.0) continue;
      std::vector<double> w = s.w;
      std::vector<LD> wl(w_ld);
      w[idx[0]] += off;
      auto tr = s.start;
      const double want = unroll_cpu(s.hyper, w, view, tr, c.T, GradMode::none).meta_loss;
      w[idx[0]] = s.w[idx[0]];
      EXPECT_NEAR(double(loss(w, wl, idx[0], off)), want, 1e-13 * std::abs(want)) << c.label();
    }
    const auto res = compare(c.arch, r.grad, idx, fd_at(plan, idx, loss));
    (second ? out.second : out.constant) = res.worst;
    EXPECT_LE(res.worst, kTol) << c.label() << (second ? " second_derivatives" : " gradient_constant")
                               << ", tensor " << res.worst_tensor
                               << (plan.long_double ? " (long double FD)" : " (double FD)");
  }
  return out;
}

// One case per (architecture, family): sizes drawn at random; the start (fresh trajectory at k = 1,
// or random LSTM states and moments at k0 = 41, 2 or 1) cycles so that every architecture and
// every family meets each kind of start across the two calls below.
std::vector<GradCase> random_cases(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> Nd(1, 3), dd(1, 5), Td(1, 6);
  const std::pair<bool, int64_t> starts[] = {{false, 1}, {true, 41}, {true, 2}, {true, 1}};
  std::vector<GradCase> cases;
  int i = static_cast<int>(seed % 4);
  for (Arch a : {Arch::rnnprop, Arch::dmlstm}) {
    for (Family f : {Family::lasso, Family::quadratic, Family::rosenbrock, Family::rastrigin}) {
      GradCase c;
      c.arch = a;
      c.family = f;
      c.N = Nd(rng);
      c.d = f == Family::rosenbrock ? 2 : dd(rng);
      c.T = Td(rng);
      c.random_state = starts[i % 4].first;
      c.k0 = starts[i % 4].second;
      c.seed = seed * 100 + cases.size();
      cases.push_back(c);
      ++i;
    }
    ++i;  // the other architecture gets the starts in another order
  }
  return cases;
}

void report(const char* what, double value) {
  std::cout << "[ measured ] " << what << ": " << value << "\n";
  ::testing::Test::RecordProperty(what, std::to_string(value));
}

TEST(GradCheck, RandomSmallCasesBothModesBothArchsAllFamilies) {
  double worst_c[2][4] = {}, worst_s[2][4] = {};
  int long_double_runs = 0;
  for (const GradCase& c : random_cases(2024)) {
    const ModeErrors e = check_case(c, 60);
    long_double_runs += e.long_double_runs;
    const int a = static_cast<int>(c.arch), f = static_cast<int>(c.family);
    worst_c[a][f] = std::max(worst_c[a][f], e.constant);
    worst_s[a][f] = std::max(worst_s[a][f], e.second);
  }
  for (Arch a : {Arch::rnnprop, Arch::dmlstm})
    for (Family f : {Family::lasso, Family::quadratic, Family::rosenbrock, Family::rastrigin}) {
      const int ai = static_cast<int>(a), fi = static_cast<int>(f);
      std::cout << "[ measured ] FD max normalised error " << arch_name(a) << "/" << family_name(f)
                << ": gradient_constant " << worst_c[ai][fi] << ", second_derivatives "
                << worst_s[ai][fi] << "\n";
    }
  std::cout << "[ measured ] " << long_double_runs << " of 16 case-modes needed the long double FD\n";
}

TEST(GradCheck, EveryWeightOnTinyCases) {
  // (Cases whose double FD floor is low enough: the long double FD of every weight is slow.)
  for (const GradCase& c : {GradCase{Arch::rnnprop, Family::quadratic, 1, 1, 2, 41, true, 78},
                            GradCase{Arch::dmlstm, Family::lasso, 1, 1, 2, 41, true, 77}}) {
    const ModeErrors e = check_case(c, -1);
    std::cout << "[ measured ] every weight, " << c.label() << ": gradient_constant " << e.constant
              << ", second_derivatives " << e.second << " (" << e.long_double_runs
              << " of 2 with the long double FD)\n";
  }
}

// Float32 BPTT against double on the engine's production sizes.
TEST(GradCheck, FloatMatchesDoubleOnLargerCases) {
  for (Arch a : {Arch::rnnprop, Arch::dmlstm})
    for (Family f : {Family::lasso, Family::rosenbrock}) {
      TaskSpec s;
      s.family = f;
      s.dim = f == Family::rosenbrock ? 2 : 10;
      s.instances = 64;
      s.seed = 31;
      if (f == Family::rosenbrock) s.x0_scale = 1.0;
      const auto tf = sample_task<float>(s);
      const auto td = cast_task<double>(tf);
      OptimizerHyper hyper;
      hyper.arch = a;
      const auto opt = init_optimizer(hyper, 5);
      const std::vector<double> wd(opt.weights.begin(), opt.weights.end());
      for (GradMode mode : {GradMode::gradient_constant, GradMode::second_derivatives}) {
        auto trf = start_trajectory(tf.x0);
        auto trd = start_trajectory(td.x0);
        const auto rf = unroll_cpu(hyper, opt.weights, view_of(tf), trf, 20, mode);
        const auto rd = unroll_cpu(hyper, wd, view_of(td), trd, 20, mode);
        double num = 0.0, den = 0.0;
        for (size_t i = 0; i < wd.size(); ++i) {
          num += (double(rf.grad[i]) - rd.grad[i]) * (double(rf.grad[i]) - rd.grad[i]);
          den += rd.grad[i] * rd.grad[i];
        }
        const double err = std::sqrt(num / den);
        const double lerr = std::abs(double(rf.meta_loss) - rd.meta_loss) / std::abs(rd.meta_loss);
        std::ostringstream what;
        what << "float vs double " << arch_name(a) << "/" << family_name(f) << " N64 T20 "
             << (mode == GradMode::gradient_constant ? "gradient_constant" : "second_derivatives");
        std::cout << "[ measured ] " << what.str() << ": grad rel. L2 error " << err
                  << ", meta-loss rel. error " << lerr << "\n";
        // Measured <= 3e-6 (gcc 12, x86-64); 1e-4 leaves a 30x margin for other libms.
        EXPECT_LE(err, 1e-4) << what.str();
        EXPECT_LE(lerr, 1e-5) << what.str();
      }
    }
}

// unroll_cpu<Dual<double>> with weight tangents v: the tangent of the gradient is a Hessian-vector
// product H v (forward over reverse), which M-L2O's exact second-order meta-gradient uses.
// - second_derivatives: H is the Hessian of the true meta-loss; checked against the FD along v of
//   unroll_cpu<double>'s gradient (every weight).
// - gradient_constant: g is a constant input with no derivative of any order (stop_gradient), so H
//   is the Hessian of the frozen-gradient loss L~ (g recorded at w0). Checked against the FD along
//   v of dL~/dw_i, each computed exactly by the test's forward loop in Dual<double> with tangent
//   e_i (a subset of weights, every tensor).
// In both modes the tangent of the meta-loss is the directional derivative grad . v.
// Error: max_i |fd_i - tangent_i| / max_i |tangent_i|.
TEST(GradCheck, DualTangentIsTheHessianVectorProduct) {
  using D = Dual<double>;
  double worst_hvp[2] = {0.0, 0.0}, worst_dir = 0.0;
  for (const GradCase& c : random_cases(77)) {
    const GradSetup s = make_setup(c);
    std::mt19937_64 rng(c.seed + 5);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::vector<double> v(s.w.size());
    double vn = 0.0;
    for (double& e : v) {
      e = normal(rng);
      vn += e * e;
    }
    for (double& e : v) e /= std::sqrt(vn);
    const auto taskd = cast_task<D>(s.task);
    const auto startd = cast_trajectory<D>(s.start);
    const auto view = view_of(s.task);
    // Double precision FD of exact derivatives: a larger step than along single weights (the unit
    // vector v moves each weight by ~h / 80), still clear of the kinks.
    const double h = std::min(1e-4, s.kink);
    for (GradMode mode : {GradMode::gradient_constant, GradMode::second_derivatives}) {
      const bool second = mode == GradMode::second_derivatives;
      std::vector<D> wd(s.w.size());
      for (size_t i = 0; i < s.w.size(); ++i) wd[i] = D(s.w[i], v[i]);
      auto trd = startd;
      const auto rd = unroll_cpu(s.hyper, wd, view_of(taskd), trd, c.T, mode);
      double scale = 0.0, gv = 0.0;
      for (size_t i = 0; i < s.w.size(); ++i) {
        scale = std::max(scale, std::abs(rd.grad[i].d));
        gv += rd.grad[i].v * v[i];
      }
      const double dir = std::abs(rd.meta_loss.d - gv) / std::max(std::abs(gv), 1e-300);
      worst_dir = std::max(worst_dir, dir);
      EXPECT_LE(dir, 1e-10) << c.label() << (second ? " second" : " constant");

      double num = 0.0;
      if (second) {
        auto grad_at = [&](double off) {
          std::vector<double> w = s.w;
          for (size_t i = 0; i < w.size(); ++i) w[i] += off * v[i];
          auto tr = s.start;
          return unroll_cpu(s.hyper, w, view, tr, c.T, mode).grad;
        };
        const auto gp1 = grad_at(h), gm1 = grad_at(-h), gp2 = grad_at(2 * h), gm2 = grad_at(-2 * h);
        for (size_t i = 0; i < s.w.size(); ++i) {
          const double fd = (8.0 * (gp1[i] - gm1[i]) - (gp2[i] - gm2[i])) / (12.0 * h);
          num = std::max(num, std::abs(fd - rd.grad[i].d));
        }
      } else {
        std::vector<std::vector<LD>> g_rec;
        forward_loss(s.hyper, s.w, s.task, s.start, c.T, nullptr, &g_rec);
        const auto idx = pick_weights(c.arch, 10, c.seed + 3);
        std::vector<double> err(idx.size());
#pragma omp parallel for schedule(dynamic, 4)
        for (size_t k = 0; k < idx.size(); ++k) {
          auto partial_at = [&](double off) {  // dL~/dw_i at w0 + off v, exact
            std::vector<D> w(s.w.size());
            for (size_t i = 0; i < w.size(); ++i) w[i] = D(s.w[i] + off * v[i], 0.0);
            w[idx[k]].d = 1.0;
            return forward_loss(s.hyper, w, taskd, startd, c.T, &g_rec, nullptr).d;
          };
          const double fd = (8.0 * (partial_at(h) - partial_at(-h)) -
                             (partial_at(2 * h) - partial_at(-2 * h))) / (12.0 * h);
          err[k] = std::abs(fd - rd.grad[idx[k]].d);
        }
        for (double e : err) num = std::max(num, e);
      }
      const double e = num / scale;
      worst_hvp[second] = std::max(worst_hvp[second], e);
      EXPECT_LE(e, kTol) << c.label() << (second ? " second_derivatives" : " gradient_constant");
    }
  }
  report("Dual HVP vs FD, gradient_constant (frozen-g loss), max normalised error", worst_hvp[0]);
  report("Dual HVP vs FD, second_derivatives (true meta-loss), max normalised error", worst_hvp[1]);
  report("Dual meta-loss tangent vs grad.v, max relative error", worst_dir);
}

}  // namespace
}  // namespace ml2o
