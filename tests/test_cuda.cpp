// The CUDA backend against the CPU reference: every operation, many shapes, fresh random inputs.
//
// Every test skips (GTEST_SKIP, with the reason) when no CUDA device is visible or the build has no
// CUDA support. Suite names all contain "Cuda" (gpu_check.sh runs --gtest_filter='*Cuda*'), and
// the small shapes are in CudaSmall* (the compute-sanitizer subset).
//
// Tolerances (float32 against the float64 oracle unroll_cpu<double>). The error measure is the
// normalised error ||gpu - cpu_double|| / ||cpu_double|| over a whole output (the step losses, the
// trajectory's x, its recurrent states, the weight gradient). The float CPU reference has its own
// error e_f against the same oracle: measured on these shapes it is 1e-8..6e-7 for losses, x and
// gradients over 20 steps, but up to 2e-4 (DM-LSTM second derivatives on LASSO: the adjoint of g
// divides by g) and 2e-3 (DM-LSTM on Rastrigin) where the problem itself amplifies rounding. The
// GPU computes the same float32 math with a different rounding (FMA contraction in the cell math,
// other summation orders), so its error must be of the float reference's size:
//     e_gpu <= max(floor, kRatio * e_f),  kRatio = 20,
// with floors 1e-5 for losses and states and 1e-4 for gradients (SPEC: ~1e-4 in float32 over a
// 20-step unroll). NaN fails every comparison; outputs are also checked to be finite.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "ml2o/backend.hpp"
#include "ml2o/lopt.hpp"
#include "vectors.hpp"
#ifdef ML2O_HAVE_CUDA
#include "ml2o/cuda_backend.hpp"
#endif

namespace ml2o {
namespace {

// ---- device access that compiles in every build ------------------------------------------------
#ifdef ML2O_HAVE_CUDA
#define ML2O_REQUIRE_CUDA()                                                              \
  do {                                                                                   \
    if (!cuda_available())                                                               \
      GTEST_SKIP() << "no CUDA device: the CUDA backend's tests need a visible GPU";     \
    cuda_set_poison(true);                                                               \
  } while (0)
Task<float> device_sample(const TaskSpec& s) { return cuda_sample_task(s); }
#else
#define ML2O_REQUIRE_CUDA() \
  GTEST_SKIP() << "no CUDA device: this build has no CUDA support (ML2O_CUDA off or no nvcc)"
Task<float> device_sample(const TaskSpec&) { throw std::logic_error("built without CUDA"); }
#endif

std::unique_ptr<Backend> gpu() { return make_backend("cuda"); }

// ---- error measures -----------------------------------------------------------------------------
template <class A, class B> double nerr(const A& a, const B& ref) {
  if (a.size() != ref.size()) return INFINITY;
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = double(a[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * double(ref[i]);
  }
  if (den == 0.0) return std::sqrt(num);  // an all-zero reference: absolute error
  return std::sqrt(num / den);            // NaN stays NaN and fails every <=
}

template <class S> std::vector<double> flat_state(const Trajectory<S>& t) {
  std::vector<double> v;
  v.reserve(t.coord.size() * (2 + 4 * kHidden));
  for (const auto& c : t.coord) {
    v.push_back(double(c.m));
    v.push_back(double(c.v));
    for (int h = 0; h < kHidden; ++h) {
      v.push_back(double(c.h1[h]));
      v.push_back(double(c.c1[h]));
      v.push_back(double(c.h2[h]));
      v.push_back(double(c.c2[h]));
    }
  }
  return v;
}

template <class V> bool all_finite(const V& v) {
  return std::all_of(v.begin(), v.end(), [](auto x) { return std::isfinite(double(x)); });
}

constexpr double kRatio = 20.0;
constexpr double kFloorState = 1e-5;
constexpr double kFloorGrad = 1e-4;

void expect_close(const char* what, double e_gpu, double e_cpu, double floor) {
  const double tol = std::max(floor, kRatio * e_cpu);
  EXPECT_LE(e_gpu, tol) << what << ": gpu error " << e_gpu << ", float cpu error " << e_cpu;
}

// ---- the unroll cases ---------------------------------------------------------------------------
struct UnrollCase {
  Arch arch;
  Family family;
  int d;
  int64_t N;
  int T;
  GradMode mode;
  uint64_t seed;
  int warm;  // CPU steps before the compared unroll: non-zero state, k > 1
};

const char* mode_name(GradMode m) {
  return m == GradMode::none ? "none" : m == GradMode::gradient_constant ? "const" : "second";
}

std::string case_name(const UnrollCase& c) {
  std::ostringstream s;
  s << arch_name(c.arch) << "_" << family_name(c.family) << "_d" << c.d << "_N" << c.N << "_T"
    << c.T << "_" << mode_name(c.mode) << "_s" << c.seed;
  return s.str();
}

TaskSpec spec_for(Family f, int d, int64_t N, uint64_t seed) {
  TaskSpec s;
  s.family = f;
  s.dim = d;
  s.instances = N;
  s.seed = seed;
  if (f == Family::quadratic) {
    s.b_lo = -1.0;
    s.b_hi = 1.0;
    s.sigma = 0.5;
  }
  if (f == Family::rosenbrock) s.x0_scale = 1.0;
  if (f == Family::rastrigin) s.x0_scale = 3.0;
  return s;
}

void run_unroll_case(const UnrollCase& c) {
  SCOPED_TRACE(case_name(c));
  OptimizerHyper hyper;
  hyper.arch = c.arch;
  const std::vector<float> w = init_optimizer(hyper, 1000 + c.seed).weights;
  const Task<float> task = sample_task<float>(spec_for(c.family, c.d, c.N, c.seed));
  Trajectory<float> start = start_trajectory(task.x0);
  if (c.warm > 0) unroll_cpu(hyper, w, view_of(task), start, c.warm, GradMode::none);

  Trajectory<float> tr_f = start;
  const auto r_f = unroll_cpu(hyper, w, view_of(task), tr_f, c.T, c.mode);
  const Task<double> task_d = cast_task<double>(task);
  Trajectory<double> tr_d = cast_trajectory<double>(start);
  const std::vector<double> w_d(w.begin(), w.end());
  const auto r_d = unroll_cpu(hyper, w_d, view_of(task_d), tr_d, c.T, c.mode);

  auto be = gpu();
  Trajectory<float> tr_g = start;
  const auto r_g = be->unroll(hyper, w, task, tr_g, c.T, c.mode);

  ASSERT_EQ(r_g.step_loss.size(), size_t(c.T) + 1);
  EXPECT_EQ(tr_g.k, start.k + c.T);
  EXPECT_TRUE(all_finite(r_g.step_loss));
  EXPECT_TRUE(all_finite(tr_g.x));
  EXPECT_TRUE(all_finite(flat_state(tr_g)));
  if (c.mode == GradMode::none) {
    EXPECT_TRUE(r_g.grad.empty());
  } else {
    ASSERT_EQ(r_g.grad.size(), w.size());
    EXPECT_TRUE(all_finite(r_g.grad));
  }

  const double meta_g = std::abs(double(r_g.meta_loss) - double(r_d.meta_loss)) / std::abs(double(r_d.meta_loss));
  const double meta_f = std::abs(double(r_f.meta_loss) - double(r_d.meta_loss)) / std::abs(double(r_d.meta_loss));
  expect_close("meta_loss", meta_g, meta_f, kFloorState);
  expect_close("step_loss", nerr(r_g.step_loss, r_d.step_loss), nerr(r_f.step_loss, r_d.step_loss), kFloorState);
  expect_close("x", nerr(tr_g.x, tr_d.x), nerr(tr_f.x, tr_d.x), kFloorState);
  expect_close("state", nerr(flat_state(tr_g), flat_state(tr_d)), nerr(flat_state(tr_f), flat_state(tr_d)),
               kFloorState);
  double eg = 0, ef = 0;
  if (c.mode != GradMode::none) {
    eg = nerr(r_g.grad, r_d.grad);
    ef = nerr(r_f.grad, r_d.grad);
    expect_close("grad", eg, ef, kFloorGrad);
    // Per tensor too: a wrong small tensor (b_out, W_in) hides in the global norm.
    for (const TensorInfo& t : tensor_table(c.arch)) {
      const auto slice = [&](const auto& v) {
        return std::vector<double>(v.begin() + t.offset, v.begin() + t.offset + t.size());
      };
      expect_close(t.name.c_str(), nerr(slice(r_g.grad), slice(r_d.grad)),
                   nerr(slice(r_f.grad), slice(r_d.grad)), kFloorGrad);
    }
  }
  std::cout << "  [" << case_name(c) << "] step_loss err gpu " << nerr(r_g.step_loss, r_d.step_loss)
            << " cpu " << nerr(r_f.step_loss, r_d.step_loss) << "; grad err gpu " << eg << " cpu " << ef
            << "\n";
}

class CudaSmallUnroll : public ::testing::TestWithParam<UnrollCase> {};
class CudaUnroll : public ::testing::TestWithParam<UnrollCase> {};

TEST_P(CudaSmallUnroll, MatchesCpuReference) {
  ML2O_REQUIRE_CUDA();
  run_unroll_case(GetParam());
}
TEST_P(CudaUnroll, MatchesCpuReference) {
  ML2O_REQUIRE_CUDA();
  run_unroll_case(GetParam());
}

constexpr Arch R = Arch::rnnprop, D = Arch::dmlstm;
constexpr Family LA = Family::lasso, QU = Family::quadratic, RO = Family::rosenbrock,
                 RA = Family::rastrigin;
constexpr GradMode NO = GradMode::none, GC = GradMode::gradient_constant,
                   SD = GradMode::second_derivatives;

// Small shapes (also the compute-sanitizer subset): every family, arch and mode, one block or two.
INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaSmallUnroll,
    ::testing::Values(UnrollCase{R, LA, 7, 3, 2, GC, 1, 2}, UnrollCase{R, LA, 7, 3, 2, SD, 2, 2},
                      UnrollCase{D, QU, 1, 5, 2, SD, 3, 1}, UnrollCase{R, RO, 2, 4, 2, SD, 4, 1},
                      UnrollCase{D, RA, 33, 2, 2, GC, 5, 1}, UnrollCase{D, LA, 10, 13, 2, SD, 6, 1},
                      UnrollCase{R, RA, 10, 13, 1, NO, 7, 0}, UnrollCase{R, QU, 4, 40, 0, GC, 8, 0},
                      UnrollCase{R, LA, 130, 2, 2, SD, 9, 1}),
    [](const auto& info) { return case_name(info.param); });

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaUnroll,
    ::testing::Values(
        // one instance; T = 1, 2, 5, 20
        UnrollCase{R, LA, 10, 1, 20, GC, 11, 3}, UnrollCase{R, LA, 10, 1, 20, SD, 12, 3},
        UnrollCase{D, LA, 10, 1, 1, SD, 13, 3}, UnrollCase{R, QU, 10, 17, 2, GC, 14, 3},
        UnrollCase{D, QU, 10, 17, 5, SD, 15, 3},
        // d = 1
        UnrollCase{R, QU, 1, 200, 20, SD, 16, 3}, UnrollCase{D, LA, 1, 129, 20, GC, 17, 3},
        // Rosenbrock d = 2, both archs and modes
        UnrollCase{R, RO, 2, 64, 20, GC, 18, 3}, UnrollCase{R, RO, 2, 64, 20, SD, 19, 3},
        UnrollCase{D, RO, 2, 64, 20, GC, 20, 3}, UnrollCase{D, RO, 2, 65, 20, SD, 21, 3},
        // odd d, 129 instances (several blocks, a partial last block)
        UnrollCase{R, LA, 7, 129, 20, GC, 22, 3}, UnrollCase{R, LA, 7, 129, 20, SD, 23, 3},
        UnrollCase{D, LA, 33, 129, 20, SD, 24, 3}, UnrollCase{R, QU, 33, 129, 20, SD, 25, 3},
        UnrollCase{R, LA, 10, 129, 20, GC, 26, 3}, UnrollCase{D, LA, 10, 129, 20, GC, 27, 3},
        // Rastrigin
        UnrollCase{R, RA, 10, 50, 20, SD, 28, 3}, UnrollCase{D, RA, 10, 50, 20, GC, 29, 3},
        // the 512-thread kernels (128 < d <= 512)
        UnrollCase{R, QU, 129, 3, 5, SD, 30, 2}, UnrollCase{D, LA, 512, 2, 3, SD, 31, 1},
        UnrollCase{R, RA, 300, 3, 5, GC, 32, 1},
        // a batch over 100,000 coordinates
        UnrollCase{R, LA, 10, 10000, 5, GC, 33, 2}, UnrollCase{D, RO, 2, 50000, 5, SD, 34, 2},
        // long forward-only evaluations (no tape)
        UnrollCase{R, LA, 10, 64, 1000, NO, 35, 0}, UnrollCase{D, QU, 7, 33, 1000, NO, 36, 0}),
    [](const auto& info) { return case_name(info.param); });

// ---- determinism --------------------------------------------------------------------------------
TEST(CudaDeterminism, SameRunTwiceIsBitIdentical) {
  ML2O_REQUIRE_CUDA();
  for (const GradMode mode : {GC, SD}) {
    OptimizerHyper hyper;
    const std::vector<float> w = init_optimizer(hyper, 77).weights;
    const Task<float> task = sample_task<float>(spec_for(LA, 10, 3000, 78));
    const Trajectory<float> start = start_trajectory(task.x0);
    auto be = gpu();
    Trajectory<float> t1 = start, t2 = start;
    const auto r1 = be->unroll(hyper, w, task, t1, 20, mode);
    auto be2 = gpu();  // a fresh backend: fresh buffers, a fresh task upload
    const auto r2 = be2->unroll(hyper, w, task, t2, 20, mode);
    ASSERT_EQ(r1.grad.size(), r2.grad.size());
    EXPECT_EQ(0, std::memcmp(r1.grad.data(), r2.grad.data(), r1.grad.size() * sizeof(float)));
    EXPECT_EQ(r1.step_loss, r2.step_loss);
    EXPECT_EQ(0, std::memcmp(&r1.meta_loss, &r2.meta_loss, sizeof(float)));
    EXPECT_EQ(0, std::memcmp(t1.x.data(), t2.x.data(), t1.x.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(t1.coord.data(), t2.coord.data(),
                             t1.coord.size() * sizeof(CoordState<float>)));
    // and a third time on the first backend (cached task, reused buffers)
    Trajectory<float> t3 = start;
    const auto r3 = be->unroll(hyper, w, task, t3, 20, mode);
    EXPECT_EQ(0, std::memcmp(r1.grad.data(), r3.grad.data(), r1.grad.size() * sizeof(float)));
  }
}

TEST(CudaDeterminism, ConsecutiveUnrollsContinueTheTrajectory) {
  ML2O_REQUIRE_CUDA();
  // Two 10-step unrolls on the GPU (the task cached across them) against the CPU doing the same.
  OptimizerHyper hyper;
  const std::vector<float> w = init_optimizer(hyper, 5).weights;
  const Task<float> task = sample_task<float>(spec_for(LA, 10, 128, 6));
  Trajectory<float> tg = start_trajectory(task.x0), tc = tg;
  auto be = gpu();
  for (int u = 0; u < 2; ++u) {
    const auto rg = be->unroll(hyper, w, task, tg, 10, GC);
    const auto rc = unroll_cpu(hyper, w, view_of(task), tc, 10, GC);
    EXPECT_EQ(tg.k, tc.k);
    EXPECT_LE(nerr(rg.grad, rc.grad), 1e-4) << "unroll " << u;
    EXPECT_LE(nerr(tg.x, tc.x), 1e-5) << "unroll " << u;
  }
}

TEST(CudaDeterminism, ChangedTaskContentIsReuploaded) {
  ML2O_REQUIRE_CUDA();
  // The task cache is keyed by content: editing A in place must not reuse the stale upload.
  OptimizerHyper hyper;
  const std::vector<float> w = init_optimizer(hyper, 9).weights;
  Task<float> task = sample_task<float>(spec_for(QU, 5, 20, 10));
  const Trajectory<float> start = start_trajectory(task.x0);
  auto be = gpu();
  Trajectory<float> t0 = start;
  (void)be->unroll(hyper, w, task, t0, 5, GC);
  for (float& a : task.A) a *= 2.0f;
  Trajectory<float> tg = start, tc = start;
  const auto rg = be->unroll(hyper, w, task, tg, 5, GC);
  const auto rc = unroll_cpu(hyper, w, view_of(task), tc, 5, GC);
  EXPECT_LE(nerr(rg.step_loss, rc.step_loss), 1e-5);
  EXPECT_LE(nerr(rg.grad, rc.grad), 1e-4);
}

// ---- the reference vectors (autodiff, float64) through the GPU in float32 -------------------------
class CudaVectors : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaVectors, MatchTheAutodiffMetaGradients) {
  ML2O_REQUIRE_CUDA();
  const auto c = testing::load_vector_case(GetParam());
  const Task<float> task = cast_task<float>(c.task);
  const std::vector<float> w(c.w.begin(), c.w.end());
  const Trajectory<float> start = cast_trajectory<float>(c.start);
  auto be = gpu();
  for (const GradMode mode : {GC, SD}) {
    const char* setting = mode == GC ? "gradient_as_constant" : "second_derivatives";
    const auto& e = c.j.at("expected").at(setting);
    Trajectory<float> tg = start, tf = start;
    const auto rg = be->unroll(c.hyper, w, task, tg, c.T, mode);
    const auto rf = unroll_cpu(c.hyper, w, view_of(task), tf, c.T, mode);
    const std::vector<double> want = c.flat_grad(e.at("grad"));
    const double want_loss = e.at("meta_loss").get<double>();
    expect_close(setting, nerr(rg.grad, want), nerr(rf.grad, want), kFloorGrad);
    expect_close(setting, std::abs(rg.meta_loss - want_loss) / std::abs(want_loss),
                 std::abs(rf.meta_loss - want_loss) / std::abs(want_loss), kFloorState);
    EXPECT_EQ(tg.k, c.k0 + c.T);
  }
}

INSTANTIATE_TEST_SUITE_P(
    ReferenceCases, CudaVectors,
    ::testing::Values("rnnprop_lasso_N2_d10_T20", "rnnprop_lasso_N2_d3_T7_k0_41",
                      "rnnprop_lasso_N3_d4_T5", "rnnprop_quadratic_N2_d5_T8",
                      "rnnprop_rosenbrock_N4_T10", "dmlstm_lasso_N3_d4_T6"),
    [](const auto& info) { return info.param; });

// ---- sampler --------------------------------------------------------------------------------------
template <class V> size_t mismatches(const V& a, const V& b) {
  if (a.size() != b.size()) return std::max(a.size(), b.size()) + 1;
  size_t n = 0;
  for (size_t i = 0; i < a.size(); ++i) n += std::memcmp(&a[i], &b[i], sizeof(a[i])) != 0;
  return n;
}

TEST(CudaSampler, BitIdenticalToCpu) {
  ML2O_REQUIRE_CUDA();
  std::vector<TaskSpec> specs = {spec_for(LA, 10, 10000, 1), spec_for(QU, 7, 129, 2),
                                 spec_for(RO, 2, 1000, 3), spec_for(RA, 33, 65, 4),
                                 spec_for(LA, 1, 5, 5)};
  specs[0].sigma = 100.0;  // SPEC's D_test
  specs.push_back(spec_for(LA, 10, 128, 0xDEADBEEFCAFEull));
  for (const TaskSpec& s : specs) {
    const Task<float> h = sample_task<float>(s);
    const Task<float> g = device_sample(s);
    EXPECT_EQ(mismatches(h.A, g.A), 0u) << family_name(s.family) << " A";
    EXPECT_EQ(mismatches(h.b, g.b), 0u) << family_name(s.family) << " b";
    EXPECT_EQ(mismatches(h.x0, g.x0), 0u) << family_name(s.family) << " x0";
  }
}

TEST(CudaSmallSampler, BitIdenticalToCpu) {
  ML2O_REQUIRE_CUDA();
  for (const TaskSpec& s : {spec_for(LA, 7, 3, 21), spec_for(RA, 5, 2, 22), spec_for(RO, 2, 3, 23)}) {
    const Task<float> h = sample_task<float>(s);
    const Task<float> g = device_sample(s);
    EXPECT_EQ(mismatches(h.A, g.A), 0u) << family_name(s.family) << " A";
    EXPECT_EQ(mismatches(h.b, g.b), 0u) << family_name(s.family) << " b";
    EXPECT_EQ(mismatches(h.x0, g.x0), 0u) << family_name(s.family) << " x0";
  }
}

TEST(CudaSampler, RejectsRosenbrockOtherThanTwoDimensions) {
  ML2O_REQUIRE_CUDA();
  EXPECT_THROW(device_sample(spec_for(RO, 3, 4, 1)), std::invalid_argument);
}

// ---- baselines ------------------------------------------------------------------------------------
// Runs every applicable baseline on each task for `steps` steps on both backends and compares the
// mean objectives step by step.
void compare_baselines(Backend& be, const std::vector<TaskSpec>& tasks, int steps) {
  const std::vector<BaselineKind> kinds = {BaselineKind::sgd,     BaselineKind::momentum,
                                           BaselineKind::adam,    BaselineKind::rmsprop,
                                           BaselineKind::ista,    BaselineKind::fista};
  // Learning rates where 100 steps stay finite and are not chaotic (a 1-ulp change of x0 moves
  // the CPU's own curve by < 4e-6 on these tasks, measured).
  auto lr_for = [](BaselineKind k, Family f) {
    switch (k) {
      case BaselineKind::sgd: return f == Family::rosenbrock ? 1e-4 : 1e-3;
      case BaselineKind::adam: return 1e-2;
      default: return 1e-4;
    }
  };
  for (const TaskSpec& s : tasks) {
    const Task<float> task = sample_task<float>(s);
    for (const BaselineKind kind : kinds) {
      const bool proximal = kind == BaselineKind::ista || kind == BaselineKind::fista;
      if (proximal && s.family != Family::lasso) continue;
      BaselineSpec spec;
      spec.kind = kind;
      spec.lr = lr_for(kind, s.family);
      const auto want = run_baseline_cpu(spec, task, steps);
      const auto got = be.run_baseline(spec, task, steps);
      ASSERT_EQ(got.size(), want.size());
      // LASSO / Quadratic / Rosenbrock: the same float operations as the CPU, so only the final
      // sum over instances (double) is associated differently. Rastrigin: CUDA's sinf/cosf differ
      // from libm by an ulp or two, and the iterates drift apart slowly.
      const double tol = s.family == Family::rastrigin ? 1e-4 : 1e-5;
      double worst = 0.0;
      bool finite = true;
      for (size_t t = 0; t < want.size(); ++t) {
        ASSERT_TRUE(std::isfinite(want[t])) << "the CPU reference diverged: pick another lr";
        finite = finite && std::isfinite(got[t]);
        worst = std::max(worst, std::abs(got[t] - want[t]) / std::max(std::abs(want[t]), 1e-30));
      }
      EXPECT_TRUE(finite) << baseline_name(kind) << " on " << family_name(s.family);
      EXPECT_LE(worst, tol) << baseline_name(kind) << " on " << family_name(s.family) << " d=" << s.dim;
    }
  }
}

TEST(CudaBaselines, MatchCpu) {
  ML2O_REQUIRE_CUDA();
  auto be = gpu();
  compare_baselines(*be,
                    {spec_for(LA, 10, 37, 1), spec_for(QU, 7, 129, 2), spec_for(RO, 2, 50, 3),
                     spec_for(RA, 10, 20, 4), spec_for(LA, 200, 3, 5)},
                    100);
}

TEST(CudaSmallBaselines, MatchCpu) {
  ML2O_REQUIRE_CUDA();
  auto be = gpu();
  compare_baselines(*be, {spec_for(LA, 7, 5, 11), spec_for(RO, 2, 3, 12), spec_for(LA, 130, 2, 13)},
                    10);
}

TEST(CudaBaselines, RejectsProximalOnNonLasso) {
  ML2O_REQUIRE_CUDA();
  auto be = gpu();
  BaselineSpec spec;
  spec.kind = BaselineKind::fista;
  EXPECT_THROW(be->run_baseline(spec, sample_task<float>(spec_for(QU, 4, 3, 1)), 5),
               std::invalid_argument);
}

// ---- the backend itself ---------------------------------------------------------------------------
TEST(CudaBackend, FactoryAndDeviceName) {
  ML2O_REQUIRE_CUDA();
  auto be = gpu();
  EXPECT_EQ(be->name(), "cuda");
  EXPECT_FALSE(be->device().empty());
  EXPECT_EQ(make_backend("auto")->name(), "cuda");
  std::cout << "  device: " << be->device() << "\n";
}

TEST(CudaBackend, RejectsDimensionsThatDoNotFitABlock) {
  ML2O_REQUIRE_CUDA();
  OptimizerHyper hyper;
  const std::vector<float> w = init_optimizer(hyper, 1).weights;
  const Task<float> task = sample_task<float>(spec_for(RA, 513, 2, 1));
  Trajectory<float> tr = start_trajectory(task.x0);
  auto be = gpu();
  EXPECT_THROW(be->unroll(hyper, w, task, tr, 2, GC), std::runtime_error);
  std::vector<float> short_w(10, 0.0f);
  const Task<float> ok = sample_task<float>(spec_for(LA, 4, 2, 1));
  Trajectory<float> tr2 = start_trajectory(ok.x0);
  EXPECT_THROW(be->unroll(hyper, short_w, ok, tr2, 2, GC), std::invalid_argument);
}

}  // namespace
}  // namespace ml2o
