// The CUDA backend against the CPU reference: every operation, many shapes, fresh random inputs.
//
// Every Cuda* test skips (GTEST_SKIP, with the reason) when no CUDA device is visible or the build
// has no CUDA support. Suite names all contain "Cuda" (gpu_check.sh runs --gtest_filter='*Cuda*'),
// and the small shapes are in *CudaSmall* (the compute-sanitizer subset). KernelEmulation (at the
// end) runs the kernels' own code on the CPU with threads and barriers: it needs the CUDA headers
// but no GPU, so it checks the kernels' indexing, barriers and reductions on every CUDA build.
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
#include <functional>
#include <iostream>
#include <limits>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "ml2o/backend.hpp"
#include "ml2o/lopt.hpp"
#include "ml2o/rng.hpp"
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
void set_variant(int v) { cuda_set_kernel_variant(v); }
#else
#define ML2O_REQUIRE_CUDA() \
  GTEST_SKIP() << "no CUDA device: this build has no CUDA support (ML2O_CUDA off or no nvcc)"
Task<float> device_sample(const TaskSpec&) { throw std::logic_error("built without CUDA"); }
void set_variant(int) {}
#endif

// Every unroll test runs each kernel variant (1: one thread per coordinate, 2: tiled); the scope
// puts the backend back on its default afterwards.
struct VariantScope {
  explicit VariantScope(int v) { set_variant(v); }
  ~VariantScope() { set_variant(0); }
  VariantScope(const VariantScope&) = delete;
  VariantScope& operator=(const VariantScope&) = delete;
};
constexpr int kVariants[] = {1, 2};

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
  EXPECT_LE(e_gpu, tol) << what << ": error " << e_gpu << ", float cpu error " << e_cpu;
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

using UnrollRunner =
    std::function<UnrollResult<float>(const OptimizerHyper&, const std::vector<float>&,
                                      const Task<float>&, Trajectory<float>&, int, GradMode)>;

// Runs the case on `run` (the GPU, or the CPU emulation of the kernels) and on the CPU reference in
// float and double, and compares.
void run_unroll_case(const UnrollCase& c, const UnrollRunner& run) {
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

  Trajectory<float> tr_g = start;
  const auto r_g = run(hyper, w, task, tr_g, c.T, c.mode);  // GPU or emulation

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
  std::cout << "  [" << case_name(c) << "] step_loss err run " << nerr(r_g.step_loss, r_d.step_loss)
            << " cpu " << nerr(r_f.step_loss, r_d.step_loss) << "; grad err run " << eg << " cpu " << ef
            << "\n";
}

class CudaSmallUnroll : public ::testing::TestWithParam<UnrollCase> {};
class CudaUnroll : public ::testing::TestWithParam<UnrollCase> {};

UnrollResult<float> gpu_unroll(const OptimizerHyper& hyper, const std::vector<float>& w,
                               const Task<float>& task, Trajectory<float>& traj, int T,
                               GradMode mode) {
  auto be = gpu();
  return unroll_once(*be, hyper, w, task, traj, T, mode);
}

TEST_P(CudaSmallUnroll, MatchesCpuReference) {
  ML2O_REQUIRE_CUDA();
  for (const int v : kVariants) {
    SCOPED_TRACE("kernel v" + std::to_string(v));
    VariantScope scope(v);
    run_unroll_case(GetParam(), gpu_unroll);
  }
}
TEST_P(CudaUnroll, MatchesCpuReference) {
  ML2O_REQUIRE_CUDA();
  for (const int v : kVariants) {
    SCOPED_TRACE("kernel v" + std::to_string(v));
    VariantScope scope(v);
    run_unroll_case(GetParam(), gpu_unroll);
  }
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
  for (const int v : kVariants) {
    SCOPED_TRACE("kernel v" + std::to_string(v));
    VariantScope scope(v);
    for (const GradMode mode : {GC, SD}) {
      OptimizerHyper hyper;
      const std::vector<float> w = init_optimizer(hyper, 77).weights;
      const Task<float> task = sample_task<float>(spec_for(LA, 10, 3000, 78));
      const Trajectory<float> start = start_trajectory(task.x0);
      auto be = gpu();
      Trajectory<float> t1 = start, t2 = start;
      const auto r1 = unroll_once(*be, hyper, w, task, t1, 20, mode);
      auto be2 = gpu();  // a fresh backend: fresh buffers, a fresh task upload
      const auto r2 = unroll_once(*be2, hyper, w, task, t2, 20, mode);
      ASSERT_EQ(r1.grad.size(), r2.grad.size());
      EXPECT_EQ(0, std::memcmp(r1.grad.data(), r2.grad.data(), r1.grad.size() * sizeof(float)));
      EXPECT_EQ(r1.step_loss, r2.step_loss);
      EXPECT_EQ(0, std::memcmp(&r1.meta_loss, &r2.meta_loss, sizeof(float)));
      EXPECT_EQ(0, std::memcmp(t1.x.data(), t2.x.data(), t1.x.size() * sizeof(float)));
      EXPECT_EQ(0, std::memcmp(t1.coord.data(), t2.coord.data(),
                               t1.coord.size() * sizeof(CoordState<float>)));
      // and a third time on the first backend (cached task, reused buffers)
      Trajectory<float> t3 = start;
      const auto r3 = unroll_once(*be, hyper, w, task, t3, 20, mode);
      EXPECT_EQ(0, std::memcmp(r1.grad.data(), r3.grad.data(), r1.grad.size() * sizeof(float)));
    }
  }
}

TEST(CudaDeterminism, ConsecutiveUnrollsContinueTheTrajectory) {
  ML2O_REQUIRE_CUDA();
  for (const int v : kVariants) {
    SCOPED_TRACE("kernel v" + std::to_string(v));
    VariantScope scope(v);
    // Two 10-step unrolls on the GPU (the task cached across them) against the CPU doing the same.
    OptimizerHyper hyper;
    const std::vector<float> w = init_optimizer(hyper, 5).weights;
    const Task<float> task = sample_task<float>(spec_for(LA, 10, 128, 6));
    Trajectory<float> tg = start_trajectory(task.x0), tc = tg;
    auto be = gpu();
    for (int u = 0; u < 2; ++u) {
      const auto rg = unroll_once(*be, hyper, w, task, tg, 10, GC);
      const auto rc = unroll_cpu(hyper, w, view_of(task), tc, 10, GC);
      EXPECT_EQ(tg.k, tc.k);
      EXPECT_LE(nerr(rg.grad, rc.grad), 1e-4) << "unroll " << u;
      EXPECT_LE(nerr(tg.x, tc.x), 1e-5) << "unroll " << u;
    }
  }
}

// The vector operations of a meta-step run on the device and must equal the CPU backend's bit
// for bit (both round every operation, no FMA contraction).
TEST(CudaVectorOps, BitIdenticalToTheCpuBackend) {
  ML2O_REQUIRE_CUDA();
  auto g = gpu();
  auto c = make_cpu_backend();
  const size_t n = 6641;
  std::vector<std::vector<float>> in(3, std::vector<float>(n));
  for (size_t i = 0; i < 3; ++i)
    for (size_t p = 0; p < n; ++p) in[i][p] = float(normal01(40 + i, Stream::minibatch, 0, p));
  auto run = [&](Backend& be) {
    std::vector<std::unique_ptr<BackendVector>> v;
    std::vector<const BackendVector*> ptrs;
    for (const auto& x : in) {
      v.push_back(upload_vector(be, x));
      ptrs.push_back(v.back().get());
    }
    auto mean = be.vector(n);
    be.mean(*mean, ptrs);
    be.axpy(*v[0], -1e-3f, *mean);
    auto adam = be.adam(n);
    for (int k = 0; k < 3; ++k) be.adam_step(*v[1], *mean, *adam, AdamHyper{});
    EXPECT_TRUE(be.all_finite(*v[1]));
    return std::vector<std::vector<float>>{mean->read(), v[0]->read(), v[1]->read()};
  };
  const auto rg = run(*g), rc = run(*c);
  for (size_t i = 0; i < rg.size(); ++i)
    EXPECT_EQ(0, std::memcmp(rg[i].data(), rc[i].data(), n * sizeof(float))) << "output " << i;
  auto bad = upload_vector(*g, std::vector<float>{1.0f, std::numeric_limits<float>::infinity()});
  EXPECT_FALSE(g->all_finite(*bad));
}

// ---- the reference vectors (autodiff, float64) through the GPU in float32 -------------------------
class CudaVectors : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaVectors, MatchTheAutodiffMetaGradients) {
  ML2O_REQUIRE_CUDA();
  for (const int v : kVariants) {
    SCOPED_TRACE("kernel v" + std::to_string(v));
    VariantScope scope(v);
    const auto c = testing::load_vector_case(GetParam());
    const Task<float> task = cast_task<float>(c.task);
    const std::vector<float> w(c.w.begin(), c.w.end());
    const Trajectory<float> start = cast_trajectory<float>(c.start);
    auto be = gpu();
    for (const GradMode mode : {GC, SD}) {
      const char* setting = mode == GC ? "gradient_as_constant" : "second_derivatives";
      const auto& e = c.j.at("expected").at(setting);
      Trajectory<float> tg = start, tf = start;
      const auto rg = unroll_once(*be, c.hyper, w, task, tg, c.T, mode);
      const auto rf = unroll_cpu(c.hyper, w, view_of(task), tf, c.T, mode);
      const std::vector<double> want = c.flat_grad(e.at("grad"));
      const double want_loss = e.at("meta_loss").get<double>();
      expect_close(setting, nerr(rg.grad, want), nerr(rf.grad, want), kFloorGrad);
      expect_close(setting, std::abs(rg.meta_loss - want_loss) / std::abs(want_loss),
                   std::abs(rf.meta_loss - want_loss) / std::abs(want_loss), kFloorState);
      EXPECT_EQ(tg.k, c.k0 + c.T);
    }
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

#ifdef ML2O_HAVE_CUDA
TEST(CudaKernelVariant, SetterRejectsInvalidVariants) {  // no device needed
  EXPECT_THROW(cuda_set_kernel_variant(3), std::invalid_argument);
  EXPECT_THROW(cuda_set_kernel_variant(-1), std::invalid_argument);
  cuda_set_kernel_variant(2);
  EXPECT_EQ(cuda_kernel_variant(), 2);
  cuda_set_kernel_variant(1);
  EXPECT_EQ(cuda_kernel_variant(), 1);
  cuda_set_kernel_variant(0);
}
#endif

TEST(CudaBackend, RejectsDimensionsThatDoNotFitABlock) {
  ML2O_REQUIRE_CUDA();
  OptimizerHyper hyper;
  const std::vector<float> w = init_optimizer(hyper, 1).weights;
  const Task<float> task = sample_task<float>(spec_for(RA, 513, 2, 1));
  Trajectory<float> tr = start_trajectory(task.x0);
  auto be = gpu();
  EXPECT_THROW(unroll_once(*be, hyper, w, task, tr, 2, GC), std::runtime_error);
  std::vector<float> short_w(10, 0.0f);
  const Task<float> ok = sample_task<float>(spec_for(LA, 4, 2, 1));
  Trajectory<float> tr2 = start_trajectory(ok.x0);
  EXPECT_THROW(unroll_once(*be, hyper, short_w, ok, tr2, 2, GC), std::invalid_argument);
}

}  // namespace
}  // namespace ml2o

// =================================================================================================
// KernelEmulation: the kernels' own code (kernels/*_kernels.cuh, baseline_kernel.cuh) run on the
// CPU, one std::thread per CUDA thread and a std::barrier per block for __syncthreads(), blocks
// one after another, shared memory poisoned with NaN before each block. It checks the kernels'
// indexing, barriers and reductions against the CPU reference on a machine without a GPU (the
// math functions are the host's, so it says nothing about CUDA's expf/tanhf or FMA contraction:
// the Cuda* tests do). Built whenever the CUDA toolkit is (its headers give dim3 and friends).
// =================================================================================================
#ifdef ML2O_HAVE_CUDA
#include <cuda_runtime.h>

#include <barrier>
#include <limits>
#include <thread>

namespace ml2o::emulation {
inline thread_local dim3 thread_idx, block_idx;
inline dim3 block_dim, grid_dim;
inline thread_local std::barrier<>* block_barrier = nullptr;
}  // namespace ml2o::emulation

#pragma push_macro("__global__")
#pragma push_macro("__device__")
#pragma push_macro("__host__")
#pragma push_macro("__forceinline__")
#pragma push_macro("__launch_bounds__")
#pragma push_macro("__constant__")
#pragma push_macro("__shared__")
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __constant__
#undef __shared__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __constant__
#define __shared__
#define threadIdx (::ml2o::emulation::thread_idx)
#define blockIdx (::ml2o::emulation::block_idx)
#define blockDim (::ml2o::emulation::block_dim)
#define gridDim (::ml2o::emulation::grid_dim)
inline void __syncthreads() { ::ml2o::emulation::block_barrier->arrive_and_wait(); }
// Round-to-nearest operations: plain IEEE operations on the host (x86-64, no contraction).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
namespace ml2o::cuda {
using std::isfinite;
using std::min;
namespace {
alignas(16) float smem[1 << 16];  // the block's dynamic shared memory (blocks run one at a time)
}  // namespace
}  // namespace ml2o::cuda

#include "../kernels/baseline_kernel.cuh"
#include "../kernels/sampler_kernels.cuh"
#include "../kernels/unroll_kernels.cuh"
#include "../kernels/unroll_v2_kernels.cuh"
#include "../kernels/vector_kernels.cuh"

#undef threadIdx
#undef blockIdx
#undef blockDim
#undef gridDim
#pragma pop_macro("__global__")
#pragma pop_macro("__device__")
#pragma pop_macro("__host__")
#pragma pop_macro("__forceinline__")
#pragma pop_macro("__launch_bounds__")
#pragma pop_macro("__constant__")
#pragma pop_macro("__shared__")

namespace ml2o {
namespace {

// Runs body() as blocks x threads CUDA threads.
template <class F> void emulate_launch(int64_t blocks, int threads, F&& body) {
  emulation::block_dim = dim3(static_cast<unsigned>(threads), 1, 1);
  emulation::grid_dim = dim3(static_cast<unsigned>(blocks), 1, 1);
  for (int64_t b = 0; b < blocks; ++b) {
    std::fill(std::begin(cuda::smem), std::end(cuda::smem), std::numeric_limits<float>::quiet_NaN());
    std::barrier<> bar(threads);
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t, b] {
        emulation::thread_idx = dim3(static_cast<unsigned>(t), 1, 1);
        emulation::block_idx = dim3(static_cast<unsigned>(b), 1, 1);
        emulation::block_barrier = &bar;
        body();
      });
    for (auto& th : pool) th.join();
  }
}

// The CUDA backend's unroll with the kernels emulated and the block sums reduced in block order.
// variant 2 runs the tiled kernels where the launcher would (d <= 128), with 128 threads.
UnrollResult<float> emulated_unroll_variant(int variant, const OptimizerHyper& hyper,
                                            const std::vector<float>& w, const Task<float>& task,
                                            Trajectory<float>& traj, int T, GradMode mode) {
  using namespace cuda;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const int P = param_count(hyper.arch);
  const int64_t N = task.spec.instances, C = N * task.spec.dim;
  const Geometry geo = make_geometry(N, task.spec.dim);
  const bool backward = mode != GradMode::none;
  const int64_t loss_row0 = backward ? P : 0, rows = loss_row0 + T + 1;
  std::vector<float> tape(backward ? size_t(T) * kTapeFields * C : 0, nan), gT(C, nan),
      partial(rows * geo.blocks, nan);
  UnrollArgs a;
  a.hyper = hyper;
  a.w = w.data();
  a.P = P;
  a.task = view_of(task);
  a.x = traj.x.data();
  a.coord = traj.coord.data();
  a.k0 = traj.k;
  a.T = T;
  a.ipb = geo.ipb;
  a.blocks = geo.blocks;
  a.tape = backward && T > 0 ? tape.data() : nullptr;
  a.gT = backward ? gT.data() : nullptr;
  a.partial = partial.data();
  a.loss_row0 = loss_row0;
  const float inv_n = 1.0f / static_cast<float>(static_cast<double>(N));
  a.inv_n = inv_n;
  a.second = mode == GradMode::second_derivatives;
  const bool v2 = uses_v2(geo, variant);
  const int threads = v2 ? kV2Threads : geo.threads;
  if (v2) {
    EXPECT_LE(sizeof(float) * kV2BackwardFloats, sizeof(cuda::smem));
    EXPECT_LE(sizeof(float) * kV2BackwardFloats, size_t(232448));  // H100/H200 opt-in limit
  }
  emulate_launch(geo.blocks, threads, [&] {
    if (v2) unroll_forward_v2_kernel(a);
    else if (geo.large) unroll_forward_kernel<kLargeThreads>(a);
    else unroll_forward_kernel<kSmallThreads>(a);
  });
  if (backward)
    emulate_launch(geo.blocks, threads, [&] {
      if (v2) unroll_backward_v2_kernel(a);
      else if (geo.large) unroll_backward_kernel<kLargeThreads>(a);
      else unroll_backward_kernel<kSmallThreads>(a);
    });
  std::vector<float> reduced(rows, 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < geo.blocks; ++b) reduced[r] += partial[r * geo.blocks + b];
  traj.k += T;
  UnrollResult<float> out;
  out.step_loss.assign(T + 1, 0.0);
  for (int t = 0; t <= T; ++t) {
    const float step = reduced[loss_row0 + t] * inv_n;
    out.step_loss[t] = static_cast<double>(step);
    out.meta_loss += step;
  }
  if (backward) out.grad.assign(reduced.begin(), reduced.begin() + P);
  return out;
}

std::vector<double> emulated_baseline(const BaselineSpec& spec, const Task<float>& task, int steps) {
  using namespace cuda;
  const int64_t N = task.spec.instances;
  const Geometry geo = make_geometry(N, task.spec.dim);
  std::vector<float> coef(3 * size_t(steps));
  double t_fista = 1.0;
  for (int k = 1; k <= steps; ++k) {  // as CudaBackend::run_baseline
    const double t_next = 0.5 * (1.0 + std::sqrt(1.0 + 4.0 * t_fista * t_fista));
    coef[3 * (k - 1) + 0] = static_cast<float>(1.0 - std::pow(spec.beta1, k));
    coef[3 * (k - 1) + 1] = static_cast<float>(1.0 - std::pow(spec.beta2, k));
    coef[3 * (k - 1) + 2] = static_cast<float>((t_fista - 1.0) / t_next);
    t_fista = t_next;
  }
  const bool proximal = spec.kind == BaselineKind::ista || spec.kind == BaselineKind::fista;
  std::vector<double> L;
  if (proximal) L = lipschitz_constants(task);
  std::vector<double> partial((steps + 1) * geo.blocks, std::numeric_limits<double>::quiet_NaN());
  BaselineArgs a;
  a.kind = spec.kind;
  a.task = view_of(task);
  a.x0 = task.x0.data();
  a.lipschitz = proximal ? L.data() : nullptr;
  a.lam = task.spec.lam;
  a.coef = coef.data();
  a.lr = float(spec.lr);
  a.mu = float(spec.momentum);
  a.b1 = float(spec.beta1);
  a.b2 = float(spec.beta2);
  a.eps = float(spec.eps);
  a.decay = float(spec.rms_decay);
  a.one_b1 = float(1.0 - spec.beta1);
  a.one_b2 = float(1.0 - spec.beta2);
  a.one_decay = float(1.0 - spec.rms_decay);
  a.steps = steps;
  a.ipb = geo.ipb;
  a.blocks = geo.blocks;
  a.partial = partial.data();
  emulate_launch(geo.blocks, geo.threads, [&] {
    if (geo.large) baseline_kernel<kLargeThreads>(a);
    else baseline_kernel<kSmallThreads>(a);
  });
  std::vector<double> out(steps + 1, 0.0);
  for (int k = 0; k <= steps; ++k) {
    for (int64_t b = 0; b < geo.blocks; ++b) out[k] += partial[k * geo.blocks + b];
    out[k] /= double(N);
  }
  return out;
}

const UnrollCase kEmulationCases[] = {
    // Partial last blocks, d = 1 and 2, odd d, the 512-thread kernels, T = 0, forward-only.
    UnrollCase{R, LA, 7, 3, 3, SD, 41, 2}, UnrollCase{D, LA, 10, 13, 2, SD, 42, 1},
    UnrollCase{R, RO, 2, 70, 3, GC, 43, 1}, UnrollCase{D, RA, 33, 4, 2, SD, 44, 1},
    UnrollCase{R, QU, 1, 130, 2, SD, 45, 1}, UnrollCase{R, LA, 130, 2, 2, GC, 46, 1},
    UnrollCase{D, RO, 2, 3, 2, SD, 47, 1}, UnrollCase{R, QU, 4, 40, 0, GC, 48, 0},
    UnrollCase{R, LA, 10, 20, 30, NO, 49, 0},
    // full 128-coordinate tiles (d = 64, 128), a 96-thread geometry (d = 70), DM-LSTM forward-only
    UnrollCase{R, LA, 64, 3, 3, SD, 50, 1}, UnrollCase{D, QU, 128, 2, 2, GC, 51, 1},
    UnrollCase{R, RA, 70, 2, 3, GC, 52, 1}, UnrollCase{D, LA, 10, 25, 4, NO, 53, 1}};

TEST(KernelEmulation, UnrollMatchesCpuReference) {
  for (const UnrollCase& c : kEmulationCases)
    run_unroll_case(c, [](auto&&... args) { return emulated_unroll_variant(1, args...); });
}

TEST(KernelEmulation, UnrollV2MatchesCpuReference) {
  for (const UnrollCase& c : kEmulationCases)
    run_unroll_case(c, [](auto&&... args) { return emulated_unroll_variant(2, args...); });
}

TEST(KernelEmulation, UnrollV2IsBitIdenticalOnRepeat) {
  OptimizerHyper hyper;
  const std::vector<float> w = init_optimizer(hyper, 60).weights;
  const Task<float> task = sample_task<float>(spec_for(LA, 10, 25, 61));
  const Trajectory<float> start = start_trajectory(task.x0);
  Trajectory<float> t1 = start, t2 = start;
  const auto r1 = emulated_unroll_variant(2, hyper, w, task, t1, 4, SD);
  const auto r2 = emulated_unroll_variant(2, hyper, w, task, t2, 4, SD);
  ASSERT_EQ(r1.grad.size(), r2.grad.size());
  EXPECT_EQ(0, std::memcmp(r1.grad.data(), r2.grad.data(), r1.grad.size() * sizeof(float)));
  EXPECT_EQ(r1.step_loss, r2.step_loss);
  EXPECT_EQ(0, std::memcmp(t1.coord.data(), t2.coord.data(), t1.coord.size() * sizeof(CoordState<float>)));
}

TEST(KernelEmulation, BaselinesMatchCpu) {
  // The same float operations as run_baseline_cpu: only the final double sum is associated
  // differently (per block, then over blocks).
  for (const TaskSpec& s : {spec_for(LA, 7, 30, 51), spec_for(RO, 2, 70, 52), spec_for(RA, 5, 4, 53),
                            spec_for(LA, 130, 2, 54)}) {
    const Task<float> task = sample_task<float>(s);
    for (const BaselineKind kind : {BaselineKind::sgd, BaselineKind::momentum, BaselineKind::adam,
                                    BaselineKind::rmsprop, BaselineKind::ista, BaselineKind::fista}) {
      if ((kind == BaselineKind::ista || kind == BaselineKind::fista) && s.family != Family::lasso)
        continue;
      BaselineSpec spec;
      spec.kind = kind;
      spec.lr = s.family == Family::rosenbrock ? 1e-4 : 1e-3;
      const auto want = run_baseline_cpu(spec, task, 20);
      const auto got = emulated_baseline(spec, task, 20);
      ASSERT_EQ(got.size(), want.size());
      for (size_t t = 0; t < want.size(); ++t)
        EXPECT_NEAR(got[t], want[t], 1e-12 * std::abs(want[t]))
            << baseline_name(kind) << " on " << family_name(s.family) << " step " << t;
    }
  }
}

// The vector kernels (vector_kernels.cuh) against the CPU backend: bit-identical, since both round
// every operation (the emulation's __fadd_rn etc. are the host's plain IEEE operations).
TEST(KernelEmulation, VectorKernelsMatchTheCpuBackendBitForBit) {
  const int64_t n = 300;  // two blocks of 256 threads, the second partial
  const int threads = 256, blocks = int((n + threads - 1) / threads);
  std::vector<std::vector<float>> in(3, std::vector<float>(n));
  for (size_t i = 0; i < 3; ++i)
    for (int64_t p = 0; p < n; ++p) in[i][p] = float(normal01(70 + i, Stream::minibatch, 0, p));
  auto cpu = make_cpu_backend();
  std::vector<std::unique_ptr<BackendVector>> v;
  std::vector<const BackendVector*> ptrs;
  for (const auto& x : in) {
    v.push_back(upload_vector(*cpu, x));
    ptrs.push_back(v.back().get());
  }
  auto mean = cpu->vector(n);
  cpu->mean(*mean, ptrs);
  cpu->axpy(*v[0], -1e-3f, *mean);
  auto adam = cpu->adam(n);
  const AdamHyper h;
  for (int k = 0; k < 2; ++k) cpu->adam_step(*v[1], *mean, *adam, h);

  std::vector<float> m(n), y = in[0], w = in[1];
  const float* in_ptrs[3] = {in[0].data(), in[1].data(), in[2].data()};
  emulate_launch(blocks, threads, [&] { cuda::mean_kernel(m.data(), in_ptrs, 3, n); });
  emulate_launch(blocks, threads, [&] { cuda::axpy_kernel(y.data(), -1e-3f, m.data(), n); });
  std::vector<double> am(n, 0.0), av(n, 0.0);
  for (int t = 1; t <= 2; ++t) {
    const AdamCorrection c = adam_correction(h, t);
    const cuda::AdamArgs a{w.data(), m.data(), am.data(), av.data(), n, h.lr, h.beta1, h.beta2, h.eps, c.c1, c.c2};
    emulate_launch(blocks, threads, [&] { cuda::adam_kernel(a); });
  }
  EXPECT_EQ(m, mean->read());
  EXPECT_EQ(y, v[0]->read());
  EXPECT_EQ(w, v[1]->read());
  EXPECT_EQ(am, adam->read().m);
  int ok = 1;
  emulate_launch(blocks, threads, [&] { cuda::finite_kernel(w.data(), n, &ok); });
  EXPECT_EQ(ok, 1);
  w[n - 1] = std::numeric_limits<float>::quiet_NaN();
  emulate_launch(blocks, threads, [&] { cuda::finite_kernel(w.data(), n, &ok); });
  EXPECT_EQ(ok, 0);
}

TEST(KernelEmulation, SamplerIndexesLikeTheCpu) {
  for (const TaskSpec& s : {spec_for(LA, 7, 13, 61), spec_for(RA, 5, 3, 62), spec_for(RO, 2, 9, 63)}) {
    const Task<float> want = sample_task<float>(s);
    cuda::SampleArgs a;
    a.seed = s.seed;
    a.instances = s.instances;
    a.dim = s.dim;
    a.sigma = s.sigma;
    a.b_lo = s.b_lo;
    a.b_hi = s.b_hi;
    a.x0_scale = s.x0_scale;
    a.rastrigin = s.family == Family::rastrigin;
    std::vector<float> A(want.A.size()), b(want.b.size()), x0(want.x0.size());
    emulate_launch(2, 32, [&] {  // grid-stride loops over more elements than threads
      if (!A.empty()) {
        cuda::sample_matrix_kernel(a, A.data());
        cuda::sample_vector_kernel(a, b.data());
      }
      cuda::sample_start_kernel(a, x0.data());
    });
    EXPECT_EQ(mismatches(A, want.A), 0u) << family_name(s.family);
    EXPECT_EQ(mismatches(b, want.b), 0u) << family_name(s.family);
    EXPECT_EQ(mismatches(x0, want.x0), 0u) << family_name(s.family);
  }
}

}  // namespace
}  // namespace ml2o
#endif  // ML2O_HAVE_CUDA
