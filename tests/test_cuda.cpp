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
// with floors 1e-5 for losses and states and 1e-4 for gradients (tests/data/README.md: ~1e-4 in float32 over a
// 20-step unroll). NaN fails every comparison; outputs are also checked to be finite.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "ml2o/backend.hpp"
#include "ml2o/lopt.hpp"
#include "ml2o/meta.hpp"
#include "ml2o/rng.hpp"
#include "../kernels/unroll_plan.hpp"  // host code only: built without CUDA too
#include "ml2o/tile_mma.hpp"
#include "vectors.hpp"
#ifdef ML2O_HAVE_CUDA
#include "ml2o/cuda_backend.hpp"
#include "../kernels/lab/tile_mma_check.hpp"
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
  double output_scale = kRnnpropDefaultScale;  // optimizer.output_scale
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
  hyper.output_scale = c.output_scale;
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

// ---- Hessian-vector products ----------------------------------------------------------------------
// The device HVP (Dual<float> forward-over-reverse through the v1 kernels) against hvp_dual's
// Dual<double> oracle, with the same rule as the unroll: its error must be of the size of the float
// CPU reference's own (unroll_cpu on Dual<float>), at most kRatio times it, floor kFloorGrad.
struct HvpCase {
  Arch arch;
  Family family;
  int d;
  int64_t N;
  int T;
  GradMode mode;
  uint64_t seed;
  int warm;
};

std::string hvp_name(const HvpCase& c) {
  return case_name(UnrollCase{c.arch, c.family, c.d, c.N, c.T, c.mode, c.seed, c.warm});
}

using HvpRunner = std::function<std::vector<float>(
    const OptimizerHyper&, const std::vector<float>& w, const Task<float>&,
    const Trajectory<float>& start, int T, const std::vector<float>& v, GradMode)>;

// The float CPU reference: the BPTT pass on Dual<float>.
std::vector<float> hvp_float_cpu(const OptimizerHyper& hyper, const std::vector<float>& w,
                                 const Task<float>& task, const Trajectory<float>& start, int T,
                                 const std::vector<float>& v, GradMode mode) {
  using D = Dual<float>;
  std::vector<D> wd(w.size());
  for (size_t p = 0; p < w.size(); ++p) wd[p] = D(w[p], v[p]);
  const Task<D> td = cast_task<D>(task);
  Trajectory<D> traj = cast_trajectory<D>(start);
  const auto r = unroll_cpu(hyper, wd, view_of(td), traj, T, mode);
  std::vector<float> out(w.size());
  for (size_t p = 0; p < w.size(); ++p) out[p] = r.grad[p].d;
  return out;
}

void run_hvp_case(const HvpCase& c, const HvpRunner& run) {
  SCOPED_TRACE(hvp_name(c));
  OptimizerHyper hyper;
  hyper.arch = c.arch;
  const std::vector<float> w = init_optimizer(hyper, 2000 + c.seed).weights;
  std::vector<float> v(w.size());
  for (size_t p = 0; p < v.size(); ++p) v[p] = float(normal01(3000 + c.seed, Stream::minibatch, 0, p));
  const Task<float> task = sample_task<float>(spec_for(c.family, c.d, c.N, c.seed));
  Trajectory<float> start = start_trajectory(task.x0);
  if (c.warm > 0) unroll_cpu(hyper, w, view_of(task), start, c.warm, GradMode::none);

  const std::vector<double> w_d(w.begin(), w.end()), v_d(v.begin(), v.end());
  const std::vector<double> want =
      hvp_dual(hyper, w_d, task, cast_trajectory<double>(start), c.T, v_d, c.mode);
  const std::vector<float> cpu = hvp_float_cpu(hyper, w, task, start, c.T, v, c.mode);
  const std::vector<float> got = run(hyper, w, task, start, c.T, v, c.mode);
  ASSERT_EQ(got.size(), w.size());
  EXPECT_TRUE(all_finite(got));
  const double eg = nerr(got, want), ef = nerr(cpu, want);
  expect_close("hvp", eg, ef, kFloorGrad);
  for (const TensorInfo& t : tensor_table(c.arch)) {
    const auto slice = [&](const auto& x) {
      return std::vector<double>(x.begin() + t.offset, x.begin() + t.offset + t.size());
    };
    expect_close(t.name.c_str(), nerr(slice(got), slice(want)), nerr(slice(cpu), slice(want)), kFloorGrad);
  }
  std::cout << "  [" << hvp_name(c) << "] hvp err run " << eg << " cpu float " << ef << "\n";
}

// Small shapes (also the compute-sanitizer subset), then the rest: both archs, every family, both
// modes, d = 1 .. 130 (the 512-thread kernels), partial last blocks, warm starts (k > 1).
const HvpCase kSmallHvpCases[] = {HvpCase{R, LA, 7, 3, 2, GC, 1, 2}, HvpCase{D, LA, 10, 13, 2, SD, 2, 1},
                                  HvpCase{R, RO, 2, 4, 2, SD, 3, 1}};
const HvpCase kHvpCases[] = {
    HvpCase{R, LA, 10, 13, 5, GC, 11, 3},  HvpCase{R, LA, 10, 13, 5, SD, 12, 3},
    HvpCase{D, LA, 10, 13, 5, GC, 13, 3},  HvpCase{D, QU, 1, 5, 3, SD, 14, 2},
    HvpCase{R, QU, 33, 4, 3, SD, 15, 1},   HvpCase{R, RA, 10, 3, 3, SD, 16, 1},
    HvpCase{D, RO, 2, 70, 4, GC, 17, 2},   HvpCase{R, LA, 10, 129, 20, GC, 18, 0},
    HvpCase{R, QU, 130, 2, 2, SD, 19, 1},  HvpCase{R, LA, 7, 3, 0, GC, 20, 1}};

std::vector<float> gpu_hvp(const OptimizerHyper& hyper, const std::vector<float>& w,
                           const Task<float>& task, const Trajectory<float>& start, int T,
                           const std::vector<float>& v, GradMode mode) {
  auto be = gpu();
  const auto t = be->upload(task);
  const auto traj = be->trajectory(*t);
  traj->write(start);
  const auto wv = upload_vector(*be, w), vv = upload_vector(*be, v);
  const auto out = be->vector(w.size());
  const HvpItem item{traj.get(), wv.get(), vv.get(), out.get()};
  be->hvp(hyper, std::span<const HvpItem>(&item, 1), T, mode);
  const Trajectory<float> after = traj->read();  // the start is left unchanged
  EXPECT_EQ(after.k, start.k);
  EXPECT_EQ(0, std::memcmp(after.x.data(), start.x.data(), start.x.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(after.coord.data(), start.coord.data(), start.coord.size() * sizeof(CoordState<float>)));
  return out->read();
}

TEST(CudaSmallHvp, MatchesTheDualReference) {
  ML2O_REQUIRE_CUDA();
  for (const HvpCase& c : kSmallHvpCases) run_hvp_case(c, gpu_hvp);
}

TEST(CudaHvp, MatchesTheDualReference) {
  ML2O_REQUIRE_CUDA();
  for (const HvpCase& c : kHvpCases) run_hvp_case(c, gpu_hvp);
}

TEST(CudaHvp, IsOnTheDeviceAndRepeatsBitIdentically) {
  ML2O_REQUIRE_CUDA();
  EXPECT_EQ(gpu()->caps().hvp, HvpSupport::device);
  OptimizerHyper hyper;
  const std::vector<float> w = init_optimizer(hyper, 9).weights;
  std::vector<float> v(w.size());
  for (size_t p = 0; p < v.size(); ++p) v[p] = float(normal01(10, Stream::minibatch, 0, p));
  const Task<float> task = sample_task<float>(spec_for(LA, 10, 300, 11));
  const Trajectory<float> start = start_trajectory(task.x0);
  for (const GradMode mode : {GC, SD}) {
    const auto a = gpu_hvp(hyper, w, task, start, 20, v, mode);
    const auto b = gpu_hvp(hyper, w, task, start, 20, v, mode);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  }
  auto be = gpu();
  const auto t = be->upload(task);
  const auto traj = be->trajectory(*t);
  const auto wv = upload_vector(*be, w);
  const auto out = be->vector(w.size());
  const HvpItem item{traj.get(), wv.get(), wv.get(), out.get()};
  EXPECT_THROW(be->hvp(hyper, std::span<const HvpItem>(&item, 1), 5, NO), std::invalid_argument);
}

// ---- batches, launch sequences and graphs ---------------------------------------------------------
// Items of one batched call: different tasks (d = 10 with a partial last block; d = 70, whose own
// block is 96 threads, launched in a 128-thread group; d = 130: the 512-thread kernels, so two
// kernel classes in one call), two items sharing a task, different weights and steps k.
struct BatchFixture {
  OptimizerHyper hyper;
  std::vector<Task<float>> tasks;
  std::vector<int> task_of;  // item -> task
  std::vector<std::vector<float>> w;
  std::vector<Trajectory<float>> start;
  BatchFixture() {
    tasks = {sample_task<float>(spec_for(LA, 10, 13, 71)), sample_task<float>(spec_for(QU, 70, 2, 72)),
             sample_task<float>(spec_for(RA, 130, 2, 73))};
    task_of = {0, 1, 2, 0};
    for (size_t i = 0; i < task_of.size(); ++i) {
      w.push_back(init_optimizer(hyper, 80 + i).weights);
      Trajectory<float> t = start_trajectory(tasks[task_of[i]].x0);
      unroll_cpu(hyper, w.back(), view_of(tasks[task_of[i]]), t, int(i), GradMode::none);  // k differs
      start.push_back(t);
    }
  }
  size_t items() const { return task_of.size(); }
};

struct BatchOut {
  std::vector<UnrollLoss> loss;
  std::vector<std::vector<float>> grad;
  std::vector<Trajectory<float>> traj;
};

void expect_bit_identical(const BatchOut& a, size_t i, const BatchOut& b, size_t j, GradMode mode) {
  SCOPED_TRACE("item " + std::to_string(i));
  EXPECT_EQ(a.loss[i].step_loss, b.loss[j].step_loss);
  EXPECT_EQ(0, std::memcmp(&a.loss[i].meta_loss, &b.loss[j].meta_loss, sizeof(float)));
  if (mode != GradMode::none) {
    ASSERT_EQ(a.grad[i].size(), b.grad[j].size());
    EXPECT_EQ(0, std::memcmp(a.grad[i].data(), b.grad[j].data(), a.grad[i].size() * sizeof(float)));
  }
  EXPECT_EQ(a.traj[i].k, b.traj[j].k);
  EXPECT_EQ(0, std::memcmp(a.traj[i].x.data(), b.traj[j].x.data(), a.traj[i].x.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(a.traj[i].coord.data(), b.traj[j].coord.data(),
                           a.traj[i].coord.size() * sizeof(CoordState<float>)));
}

// Runs the fixture's items `which` as one call on a backend.
BatchOut backend_batch(Backend& be, const BatchFixture& f, const std::vector<size_t>& which, int T,
                       GradMode mode) {
  std::vector<std::unique_ptr<BackendTask>> tasks;
  for (const auto& t : f.tasks) tasks.push_back(be.upload(t));
  std::vector<std::unique_ptr<BackendTrajectory>> trajs;
  std::vector<std::unique_ptr<BackendVector>> ws, grads;
  std::vector<UnrollItem> items;
  for (const size_t i : which) {
    const BackendTask* t = tasks[f.task_of[i]].get();
    trajs.push_back(be.trajectory(*t));
    trajs.back()->write(f.start[i]);
    ws.push_back(upload_vector(be, f.w[i]));
    grads.push_back(be.vector(f.w[i].size()));
    items.push_back(UnrollItem{t, trajs.back().get(), ws.back().get(),
                               mode == GradMode::none ? nullptr : grads.back().get()});
  }
  BatchOut out;
  out.loss = be.unroll(f.hyper, items, T, mode);
  for (size_t k = 0; k < which.size(); ++k) {
    out.grad.push_back(grads[k]->read());
    out.traj.push_back(trajs[k]->read());
  }
  return out;
}

TEST(CudaBatch, EachItemIsBitIdenticalToRunningItAlone) {
  ML2O_REQUIRE_CUDA();
  const BatchFixture f;
  for (const int v : kVariants) {
    SCOPED_TRACE("kernel v" + std::to_string(v));
    VariantScope scope(v);
    for (const GradMode mode : {GC, SD, NO}) {
      SCOPED_TRACE(mode_name(mode));
      auto be = gpu();
      const BatchOut all = backend_batch(*be, f, {0, 1, 2, 3}, 4, mode);
      for (size_t i = 0; i < f.items(); ++i) {
        auto alone_be = gpu();
        const BatchOut alone = backend_batch(*alone_be, f, {i}, 4, mode);
        expect_bit_identical(all, i, alone, 0, mode);
      }
    }
  }
}

TEST(CudaBatch, RejectsItemsThatShareATrajectory) {
  ML2O_REQUIRE_CUDA();
  auto be = gpu();
  OptimizerHyper hyper;
  const auto t = be->upload(sample_task<float>(spec_for(LA, 4, 3, 1)));
  const auto traj = be->trajectory(*t);
  const auto w = upload_vector(*be, init_optimizer(hyper, 1).weights);
  const auto g1 = be->vector(w->size()), g2 = be->vector(w->size());
  const std::vector<UnrollItem> items = {UnrollItem{t.get(), traj.get(), w.get(), g1.get()},
                                         UnrollItem{t.get(), traj.get(), w.get(), g2.get()}};
  EXPECT_THROW(be->unroll(hyper, items, 2, GC), std::logic_error);
}

// Every item's product of one batched hvp call, from backend objects.
std::vector<std::vector<float>> backend_hvp(Backend& be, const BatchFixture& f,
                                            const std::vector<size_t>& which, int T, GradMode mode) {
  std::vector<std::unique_ptr<BackendTask>> tasks;
  for (const auto& t : f.tasks) tasks.push_back(be.upload(t));
  std::vector<std::unique_ptr<BackendTrajectory>> trajs;
  std::vector<std::unique_ptr<BackendVector>> ws, vs, outs;
  std::vector<HvpItem> items;
  for (const size_t i : which) {
    trajs.push_back(be.trajectory(*tasks[f.task_of[i]]));
    trajs.back()->write(f.start[i]);
    ws.push_back(upload_vector(be, f.w[i]));
    vs.push_back(upload_vector(be, f.w[(i + 1) % f.items()]));  // any direction
    outs.push_back(be.vector(f.w[i].size()));
    items.push_back(HvpItem{trajs.back().get(), ws.back().get(), vs.back().get(), outs.back().get()});
  }
  be.hvp(f.hyper, items, T, mode);
  std::vector<std::vector<float>> out;
  for (const auto& o : outs) out.push_back(o->read());
  return out;
}

TEST(CudaHvp, EachItemOfABatchIsBitIdenticalToItAlone) {
  ML2O_REQUIRE_CUDA();
  const BatchFixture f;
  for (const GradMode mode : {GC, SD}) {
    auto be = gpu();
    const auto all = backend_hvp(*be, f, {0, 1, 2, 3}, 3, mode);
    for (size_t i = 0; i < f.items(); ++i) {
      auto alone_be = gpu();
      const auto alone = backend_hvp(*alone_be, f, {i}, 3, mode);
      ASSERT_EQ(all[i].size(), alone[0].size());
      EXPECT_EQ(0, std::memcmp(all[i].data(), alone[0].data(), all[i].size() * sizeof(float)))
          << mode_name(mode) << " item " << i;
    }
  }
}

#ifdef ML2O_HAVE_CUDA
struct GraphScope {
  explicit GraphScope(int mode) { cuda_set_graphs(mode); }
  ~GraphScope() { cuda_set_graphs(0); }
  GraphScope(const GraphScope&) = delete;
  GraphScope& operator=(const GraphScope&) = delete;
};

// One call = one launch sequence: per kernel class a forward (and backward) launch, one reduction,
// one scatter; one upload of the arguments and one download of the losses. From the third call of
// a layout on, the sequence is a graph replay.
TEST(CudaBatch, OneLaunchSequencePerCallAndGraphReplays) {
  ML2O_REQUIRE_CUDA();
  GraphScope graphs(2);
  VariantScope scope(2);
  OptimizerHyper hyper;
  auto be = gpu();
  std::vector<std::unique_ptr<BackendTask>> tasks;
  std::vector<std::unique_ptr<BackendTrajectory>> trajs;
  std::vector<std::unique_ptr<BackendVector>> grads;
  const auto w = upload_vector(*be, init_optimizer(hyper, 3).weights);
  std::vector<UnrollItem> items;
  for (int i = 0; i < 3; ++i) {  // the paper's training batch: 3 x 128 x d = 10
    tasks.push_back(be->upload(sample_task<float>(spec_for(LA, 10, 128, 90 + i))));
    trajs.push_back(be->trajectory(*tasks.back()));
    grads.push_back(be->vector(w->size()));
    items.push_back(UnrollItem{tasks.back().get(), trajs.back().get(), w.get(), grads.back().get()});
  }
  for (const GradMode mode : {GC, NO}) {
    for (int call = 0; call < 4; ++call) {
      const CudaStats before = cuda_stats();
      be->unroll(hyper, items, 20, mode);
      const CudaStats after = cuda_stats();
      SCOPED_TRACE(std::string(mode_name(mode)) + " call " + std::to_string(call));
      EXPECT_EQ(after.launches - before.launches, mode == GC ? 4 : 2);  // fwd, [bwd,] reduce, [scatter]
      // arguments up, losses down (the first call of a layout also uploads its tables)
      EXPECT_EQ(after.memcpys - before.memcpys, call == 0 ? 3 : 2);
      EXPECT_EQ(after.graph_launches - before.graph_launches, call == 0 ? 0 : 1);
    }
  }
}

TEST(CudaGraphs, ReplaysAreBitIdenticalToPlainLaunches) {
  ML2O_REQUIRE_CUDA();
  const BatchFixture f;
  for (const GradMode mode : {GC, SD, NO}) {
    SCOPED_TRACE(mode_name(mode));
    BatchOut plain;
    {
      GraphScope off(1);
      auto be = gpu();
      plain = backend_batch(*be, f, {0, 1, 2, 3}, 5, mode);
    }
    GraphScope on(2);
    auto be = gpu();
    for (int call = 0; call < 3; ++call) {  // plain, capture + launch, replay
      const BatchOut r = backend_batch(*be, f, {0, 1, 2, 3}, 5, mode);
      for (size_t i = 0; i < f.items(); ++i) expect_bit_identical(r, i, plain, i, mode);
    }
  }
}

TEST(CudaGraphs, SetterRejectsInvalidModes) {  // no device needed
  EXPECT_THROW(cuda_set_graphs(3), std::invalid_argument);
  EXPECT_THROW(cuda_set_graphs(-1), std::invalid_argument);
  cuda_set_graphs(1);
  EXPECT_FALSE(cuda_graphs());
  cuda_set_graphs(2);
  EXPECT_TRUE(cuda_graphs());
  cuda_set_graphs(0);
}
#endif

// ---- whole training runs ----------------------------------------------------------------------------
// A few epochs of meta-training (batched unrolls, device HVPs, vector ops and Adam on the device,
// periodic evaluations) against the CPU backend, for plain L2O and M-L2O first and second order;
// and twice on the GPU, bit-identically.
TEST(CudaTraining, MatchesTheCpuAndRepeatsBitIdentically) {
  ML2O_REQUIRE_CUDA();
  TrainConfig tc;
  for (int i = 0; i < 2; ++i) {
    TaskSpec t = spec_for(LA, 10, 32, 100 + i);
    t.sigma = i == 0 ? 0.5 : 1.0;
    tc.tasks.push_back(t);
  }
  tc.unroll = 5;
  tc.curriculum = {20, 40};
  tc.max_epochs = 2;
  tc.eval_every = 1;
  tc.eval_batches = 2;
  tc.patience = 5;
  struct Run {
    Method method;
    MetaGradient mg;
    GradMode mode;
  };
  for (const Run r : {Run{Method::l2o, MetaGradient::first_order, GC},
                      Run{Method::ml2o, MetaGradient::first_order, GC},
                      Run{Method::ml2o, MetaGradient::second_order, GC}}) {  // as configs allow
    SCOPED_TRACE(std::string(method_name(r.method)) + " " + meta_gradient_name(r.mg));
    tc.grad_mode = r.mode;
    Ml2oConfig mc;
    mc.meta_gradient = r.mg;
    const auto run = [&](Backend& be) {
      TrainerState st = make_trainer(r.method, OptimizerHyper{}, 7);
      train(tc, mc, be, st, TrainHooks{});
      return st;
    };
    const std::vector<float> w0 = make_trainer(r.method, OptimizerHyper{}, 7).opt.weights;
    auto cpu = make_cpu_backend();
    auto g1 = gpu(), g2 = gpu();
    const TrainerState c = run(*cpu), a = run(*g1), b = run(*g2);
    ASSERT_EQ(a.opt.weights.size(), b.opt.weights.size());
    EXPECT_EQ(0, std::memcmp(a.opt.weights.data(), b.opt.weights.data(), a.opt.weights.size() * sizeof(float)));
    EXPECT_EQ(a.adam.m, b.adam.m);
    EXPECT_EQ(a.loss_history, b.loss_history);
    EXPECT_EQ(a.eval_history, b.eval_history);
    // Against the CPU: the same number of steps; losses and scores to float accuracy; the weights'
    // change to 1% (Adam's normalised steps amplify rounding in near-zero gradient elements).
    EXPECT_EQ(a.epoch, c.epoch);
    EXPECT_EQ(a.skipped_steps, c.skipped_steps);
    ASSERT_EQ(a.loss_history.size(), c.loss_history.size());
    EXPECT_LE(nerr(a.loss_history, c.loss_history), 1e-4);
    ASSERT_EQ(a.eval_history.size(), c.eval_history.size());
    EXPECT_LE(nerr(a.eval_history, c.eval_history), 1e-4);
    std::vector<double> da(w0.size()), dc(w0.size());
    for (size_t p = 0; p < w0.size(); ++p) {
      da[p] = double(a.opt.weights[p]) - w0[p];
      dc[p] = double(c.opt.weights[p]) - w0[p];
    }
    EXPECT_LE(nerr(da, dc), 1e-2);
    std::cout << "  [" << method_name(r.method) << " " << meta_gradient_name(r.mg) << "] loss err "
              << nerr(a.loss_history, c.loss_history) << ", weight-change err " << nerr(da, dc) << "\n";
  }
}

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
  specs[0].sigma = 100.0;  // the paper's D_test
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

// The mlp family is not wired into the CUDA unroll yet: the backend says so and refuses an mlp
// task with a message naming the way out, and "auto" picks the CPU for a run with mlp tasks.
TEST(CudaBackend, RefusesMlpTasksClearly) {
  ML2O_REQUIRE_CUDA();
  if (!std::filesystem::exists(kDigitsPath)) GTEST_SKIP() << "no " << kDigitsPath;
  auto be = gpu();
  EXPECT_FALSE(be->caps().mlp_family);
  TaskSpec s;
  s.family = Family::mlp;
  s.layers = {64, 4, 10};
  s.instances = 2;
  const Task<float> task = sample_task<float>(s);
  try {
    be->upload(task);
    ADD_FAILURE() << "the cuda backend should refuse an mlp task";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("run.backend"), std::string::npos) << e.what();
  }
  EXPECT_THROW(be->run_baseline(BaselineSpec{}, task, 3), std::invalid_argument);
  EXPECT_EQ(make_backend("auto", /*mlp=*/true)->name(), "cpu");
}

#ifdef ML2O_HAVE_CUDA
TEST(CudaKernelVariant, SetterRejectsInvalidVariants) {  // no device needed
  EXPECT_THROW(cuda_set_kernel_variant(4), std::invalid_argument);
  EXPECT_THROW(cuda_set_kernel_variant(-1), std::invalid_argument);
  cuda_set_kernel_variant(3);
  EXPECT_EQ(cuda_kernel_variant(), 3);
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

// ---- the batch plan (kernels/unroll_plan.hpp): host code, no device needed --------------------------
std::vector<cuda::PlanShape> mixed_shapes() {
  return {{13, 10}, {4, 33}, {2, 130}, {13, 10}, {1, 1}, {300, 512}};
}

TEST(UnrollPlan, AnItemsLayoutDoesNotDependOnTheBatch) {
  using namespace cuda;
  const auto shapes = mixed_shapes();
  for (const bool dual : {false, true})
    for (const GradMode mode : {NO, GC, SD}) {
      if (dual && mode == NO) continue;
      const UnrollPlan all = plan_unroll(Arch::rnnprop, shapes, 5, mode, 2, dual);
      std::vector<int64_t> begin, end;
      segment_offsets(all, begin, end);
      ASSERT_EQ(begin.size(), size_t(all.total_rows));
      for (size_t i = 0; i < shapes.size(); ++i) {
        SCOPED_TRACE("item " + std::to_string(i));
        const UnrollPlan alone = plan_unroll(Arch::rnnprop, std::span(&shapes[i], 1), 5, mode, 2, dual);
        std::vector<int64_t> b1, e1;
        segment_offsets(alone, b1, e1);
        EXPECT_EQ(all.geo[i].blocks, alone.geo[0].blocks);
        EXPECT_EQ(all.geo[i].ipb, alone.geo[0].ipb);
        EXPECT_EQ(kernel_class(all.geo[i], 2, dual), kernel_class(alone.geo[0], 2, dual));
        // Every segment of the item: same length, same place relative to the item's partial rows,
        // the same alignment (CUB's reduction order depends on it).
        const auto check = [&](int64_t s_all, int64_t s_alone) {
          EXPECT_EQ(end[s_all] - begin[s_all], e1[s_alone] - b1[s_alone]);
          EXPECT_EQ(begin[s_all] - all.partial_off[i], b1[s_alone] - alone.partial_off[0]);
          EXPECT_EQ(all.partial_off[i] % kAlignFloats, 0);
        };
        for (int t = 0; t <= all.T; ++t) check(int64_t(i) * (all.T + 1) + t, t);
        if (all.backward)
          for (int r = 0; r < all.P; ++r) check(all.loss_rows + int64_t(i) * all.P + r, alone.loss_rows + r);
      }
    }
}

TEST(UnrollPlan, SegmentsCoverEveryPartialOnceAndScratchDoesNotOverlap) {
  using namespace cuda;
  const auto shapes = mixed_shapes();
  const UnrollPlan p = plan_unroll(Arch::dmlstm, shapes, 3, SD, 1, false);
  std::vector<int64_t> begin, end;
  segment_offsets(p, begin, end);
  std::vector<int> hits(p.partial_floats, 0);
  for (int64_t s = 0; s < p.total_rows; ++s)
    for (int64_t k = begin[s]; k < end[s]; ++k) ++hits[k];
  int64_t covered = 0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const int64_t rows = p.item_rows() * p.geo[i].blocks;
    for (int64_t k = 0; k < rows; ++k) EXPECT_EQ(hits[p.partial_off[i] + k], 1) << "item " << i;
    covered += rows;
    const int64_t C = shapes[i].instances * shapes[i].dim;
    if (i + 1 < shapes.size()) {  // each item's tape and gT end before the next begins
      EXPECT_LE(p.tape_off[i] + int64_t(p.T) * kTapeFields * C, p.tape_off[i + 1]);
      EXPECT_LE(p.gT_off[i] + C, p.gT_off[i + 1]);
      EXPECT_LE(p.partial_off[i] + rows, p.partial_off[i + 1]);
    }
  }
  EXPECT_EQ(std::count(hits.begin(), hits.end(), 1), covered);  // padding only between items
  // The Dual plan holds Dual<float> tape and gT scalars (two floats each); partials stay float.
  const UnrollPlan d = plan_unroll(Arch::dmlstm, shapes, 3, SD, 1, true);
  int64_t tape = 0, gT = 0;
  for (const PlanShape& sh : shapes) {
    tape += int64_t(p.T) * kTapeFields * sh.instances * sh.dim;
    gT += sh.instances * sh.dim;
  }
  EXPECT_GE(d.tape_floats, 2 * tape);
  EXPECT_GE(d.gT_floats, 2 * gT);
  EXPECT_LT(p.tape_floats, 2 * tape);
  EXPECT_EQ(d.partial_floats, p.partial_floats);
}

TEST(UnrollPlan, BlockTableMapsEveryBlockToItsItem) {
  using namespace cuda;
  const auto shapes = mixed_shapes();
  for (const int variant : {1, 2, 3}) {
    const UnrollPlan p = plan_unroll(Arch::rnnprop, shapes, 2, GC, variant, false);
    std::vector<UnrollArgs> items(shapes.size());
    int64_t launched = 0;
    int next_slot = 0;
    for (const LaunchGroup& g : p.groups) {
      EXPECT_EQ(g.first_slot, next_slot);  // groups cover the slots in order
      next_slot += g.count;
      int widest = 0;  // v1: the widest item's block; v2 always kSmallThreads
      for (size_t i = 0; i < shapes.size(); ++i)
        if (p.slot[i] >= g.first_slot && p.slot[i] < g.first_slot + g.count) widest = std::max(widest, p.geo[i].threads);
      const bool tiled = g.cls == KernelClass::v2 || g.cls == KernelClass::v3_lab;
      EXPECT_EQ(g.threads, tiled ? kSmallThreads : widest);
      const BatchArgs b{items.data(), p.first_block.data(), int(shapes.size()), g.block0};
      for (int64_t blk = 0; blk < g.blocks; ++blk) {
        const ItemBlock ib = locate_block(b, blk);
        EXPECT_GE(ib.slot, g.first_slot);
        EXPECT_LT(ib.slot, g.first_slot + g.count);
        EXPECT_GE(ib.block, 0);
        const size_t item = size_t(std::find(p.slot.begin(), p.slot.end(), ib.slot) - p.slot.begin());
        ASSERT_LT(item, shapes.size());
        EXPECT_LT(ib.block, p.geo[item].blocks);
        EXPECT_EQ(kernel_class(p.geo[item], variant, false), g.cls);
        EXPECT_LE(p.geo[item].threads, g.threads);
      }
      launched += g.blocks;
    }
    EXPECT_EQ(next_slot, int(shapes.size()));
    int64_t want = 0;
    for (const Geometry& g : p.geo) want += g.blocks;
    EXPECT_EQ(launched, want);
    ASSERT_EQ(p.groups.size(), 2u);  // d <= 128 (v2 or v1 small), then d > 128 (v1 large)
    const KernelClass small = variant == 3 ? KernelClass::v3_lab : variant == 2 ? KernelClass::v2 : KernelClass::v1_small;
    EXPECT_EQ(p.groups[0].cls, small);
    EXPECT_EQ(p.groups[1].cls, KernelClass::v1_large);
    EXPECT_EQ(p.groups[1].threads, kLargeThreads);  // d = 512
  }
}

TEST(UnrollPlan, ArgumentsAndAssembly) {
  using namespace cuda;
  const std::vector<PlanShape> shapes = {{13, 10}, {5, 7}};
  const UnrollPlan p = plan_unroll(Arch::rnnprop, shapes, 3, GC, 2, false);
  std::vector<float> tape(p.tape_floats), gT(p.gT_floats), partial(p.partial_floats), g0(p.P), g1(p.P);
  std::vector<PlanInput> in(2);
  in[0].k0 = 4;
  in[0].grad = g0.data();
  in[1].k0 = 9;
  in[1].grad = g1.data();
  const auto args = bind_args(OptimizerHyper{}, p, in, PlanScratch{tape.data(), gT.data(), partial.data()});
  for (size_t i = 0; i < 2; ++i) {
    const UnrollArgs& a = args[p.slot[i]];
    EXPECT_EQ(a.k0, in[i].k0);
    EXPECT_EQ(a.grad, in[i].grad);
    EXPECT_EQ(a.tape, tape.data() + p.tape_off[i]);
    EXPECT_EQ(a.partial, partial.data() + p.partial_off[i]);
    EXPECT_EQ(a.blocks, p.geo[i].blocks);
    EXPECT_EQ(a.loss_row0, p.P);
    EXPECT_EQ(a.grad_row0, p.loss_rows + int64_t(i) * p.P);
    EXPECT_EQ(a.inv_n, 1.0f / float(shapes[i].instances));
  }
  // Assembly: as unroll_cpu, step = sum * (1/N) in float, meta_loss summed in float.
  std::vector<float> losses(p.loss_rows);
  for (size_t k = 0; k < losses.size(); ++k) losses[k] = 0.1f * float(k + 1);
  const auto out = assemble(p, losses);
  ASSERT_EQ(out.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    float meta = 0.0f;
    for (int t = 0; t <= 3; ++t) {
      const float step = losses[i * 4 + t] * (1.0f / float(shapes[i].instances));
      EXPECT_EQ(out[i].step_loss[t], double(step));
      meta += step;
    }
    EXPECT_EQ(out[i].meta_loss, meta);
  }
  EXPECT_THROW(plan_unroll(Arch::rnnprop, shapes, 3, NO, 1, true), std::invalid_argument);
  EXPECT_THROW(plan_unroll(Arch::rnnprop, std::vector<PlanShape>{{2, 513}}, 3, GC, 1, false), std::runtime_error);
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
#include "../kernels/lab/unroll_v3_lab_kernels.cuh"
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

// One item of an emulated batch: host data in place of the backend's device objects.
struct HostItem {
  const Task<float>* task = nullptr;
  Trajectory<float>* traj = nullptr;
  const std::vector<float>* w = nullptr;
  const std::vector<float>* wdot = nullptr;  // HVP: the direction v
  std::vector<float>* grad = nullptr;        // resized to P; the meta-gradient or the HVP
};

// Runs a plan's group (forward or backward) with the kernels emulated, as launch_unroll_group does.
void emulate_group(const cuda::UnrollPlan& p, const cuda::LaunchGroup& g, const cuda::BatchArgs& b,
                   bool backward) {
  using namespace cuda;
  emulate_launch(g.blocks, g.threads, [&] {
    switch (g.cls) {
      case KernelClass::v2:
        if (backward) unroll_backward_v2_kernel(b);
        else unroll_forward_v2_kernel(b);
        break;
      case KernelClass::v3_lab:  // as launch_unroll_group: the lab forward, v2's backward
        if (backward) unroll_backward_v2_kernel(b);
        else unroll_forward_v3_lab_kernel(b);
        break;
      case KernelClass::v1_small:
        if (p.dual) {
          if (backward) unroll_backward_kernel<kSmallThreads, DualF>(b);
          else unroll_forward_kernel<kSmallThreads, DualF>(b);
        } else {
          if (backward) unroll_backward_kernel<kSmallThreads, float>(b);
          else unroll_forward_kernel<kSmallThreads, float>(b);
        }
        break;
      case KernelClass::v1_large:
        if (p.dual) {
          if (backward) unroll_backward_kernel<kLargeThreads, DualF>(b);
          else unroll_forward_kernel<kLargeThreads, DualF>(b);
        } else {
          if (backward) unroll_backward_kernel<kLargeThreads, float>(b);
          else unroll_forward_kernel<kLargeThreads, float>(b);
        }
        break;
    }
  });
}

// The CUDA backend's batched unroll (or, with dual, its HVP) on host data: the production plan
// (plan_unroll, segment_offsets, bind_args, assemble: kernels/unroll_plan.hpp), the kernels and
// the scatter emulated, and each reduction segment summed in order (standing in for CUB's tree).
// Scratch starts as NaN, so anything the kernels fail to write shows up.
std::vector<UnrollLoss> emulated_batch(int variant, bool dual, const OptimizerHyper& hyper,
                                       std::span<const HostItem> items, int T, GradMode mode) {
  using namespace cuda;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<PlanShape> shapes;
  for (const HostItem& it : items) shapes.push_back(PlanShape{it.task->spec.instances, it.task->spec.dim});
  const UnrollPlan plan = plan_unroll(hyper.arch, shapes, T, mode, variant, dual);
  std::vector<float> tape(plan.tape_floats, nan), gT(plan.gT_floats, nan), partial(plan.partial_floats, nan);
  std::vector<PlanInput> in;
  for (const HostItem& it : items) {
    if (it.grad) it.grad->assign(plan.P, nan);
    in.push_back(PlanInput{view_of(*it.task), it.traj->x.data(), it.traj->coord.data(), it.traj->k,
                           it.w->data(), it.wdot ? it.wdot->data() : nullptr,
                           it.grad ? it.grad->data() : nullptr});
  }
  const std::vector<UnrollArgs> args =
      bind_args(hyper, plan, in, PlanScratch{tape.data(), gT.data(), partial.data()});
  const int n = static_cast<int>(items.size());
  for (const bool backward : {false, true}) {
    if (backward && !plan.backward) break;
    for (const LaunchGroup& g : plan.groups)
      emulate_group(plan, g, BatchArgs{args.data(), plan.first_block.data(), n, g.block0}, backward);
  }
  std::vector<int64_t> begin, end;
  segment_offsets(plan, begin, end);
  std::vector<float> reduced(plan.total_rows, nan);
  for (int64_t s = 0; s < plan.total_rows; ++s) {
    float acc = 0.0f;
    for (int64_t k = begin[s]; k < end[s]; ++k) acc += partial[k];
    reduced[s] = acc;
  }
  if (plan.backward)  // grid-stride: two blocks of 32 threads cover every element
    emulate_launch(2, 32, [&] { cuda::scatter_rows_kernel(reduced.data(), args.data(), n, plan.P); });
  if (dual) return {};
  for (const HostItem& it : items) it.traj->k += T;
  return assemble(plan, std::span<const float>(reduced.data(), plan.loss_rows));
}

// One item through emulated_batch, in the shape of unroll_cpu's result.
UnrollResult<float> emulated_unroll_variant(int variant, const OptimizerHyper& hyper,
                                            const std::vector<float>& w, const Task<float>& task,
                                            Trajectory<float>& traj, int T, GradMode mode) {
  UnrollResult<float> out;
  const HostItem item{&task, &traj, &w, nullptr, mode == GradMode::none ? nullptr : &out.grad};
  const auto r = emulated_batch(variant, false, hyper, std::span<const HostItem>(&item, 1), T, mode);
  out.meta_loss = r[0].meta_loss;
  out.step_loss = r[0].step_loss;
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

// The v3 lab forward (tensor-core layer products through the software model of mma.sync) with
// v2's backward: the same cases and tolerances. Says nothing about the hardware (docs/kernels.md).
TEST(KernelEmulation, UnrollV3LabMatchesCpuReference) {
  for (const UnrollCase& c : kEmulationCases)
    run_unroll_case(c, [](auto&&... args) { return emulated_unroll_variant(3, args...); });
}

// optimizer.output_scale reaches every kernel generation (v2 and v3 compute the update themselves), with
// gradients, and changes the trajectory.
TEST(KernelEmulation, UnrollHonoursTheOutputScale) {
  const UnrollCase big{R, LA, 10, 20, 6, SD, 54, 1, 0.05};
  for (int v : {1, 2, 3})
    run_unroll_case(big, [v](auto&&... args) { return emulated_unroll_variant(v, args...); });
  OptimizerHyper hyper;
  const std::vector<float> w = init_optimizer(hyper, 62).weights;
  const Task<float> task = sample_task<float>(spec_for(LA, 10, 20, 63));
  Trajectory<float> a = start_trajectory(task.x0), b = a;
  (void)emulated_unroll_variant(2, hyper, w, task, a, 3, NO);
  hyper.output_scale = 0.05;
  (void)emulated_unroll_variant(2, hyper, w, task, b, 3, NO);
  EXPECT_NE(a.x, b.x);
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

// The production plan on a batch of different tasks, dims (all three kernel classes), shared tasks
// and weights: each item bit-identical to running it alone through the same emulation.
TEST(KernelEmulation, BatchIsBitIdenticalToItemsAlone) {
  const BatchFixture f;
  for (const int variant : {1, 2})
    for (const GradMode mode : {GC, NO}) {  // SD differs only inside an item (emulation is slow)
      SCOPED_TRACE("kernel v" + std::to_string(variant) + " " + mode_name(mode));
      const auto run = [&](const std::vector<size_t>& which) {
        BatchOut out;
        out.grad.resize(which.size());
        for (const size_t i : which) out.traj.push_back(f.start[i]);
        std::vector<HostItem> items;
        for (size_t k = 0; k < which.size(); ++k)
          items.push_back(HostItem{&f.tasks[f.task_of[which[k]]], &out.traj[k], &f.w[which[k]], nullptr,
                                   mode == GradMode::none ? nullptr : &out.grad[k]});
        out.loss = emulated_batch(variant, false, f.hyper, items, 2, mode);
        return out;
      };
      const BatchOut all = run({0, 1, 2, 3});
      for (size_t i = 0; i < f.items(); ++i) expect_bit_identical(all, i, run({i}), 0, mode);
    }
  // The HVP's plan (Dual kernels) likewise.
  for (const GradMode mode : {SD}) {
    const auto run = [&](const std::vector<size_t>& which) {
      std::vector<Trajectory<float>> trajs;
      for (const size_t i : which) trajs.push_back(f.start[i]);
      std::vector<std::vector<float>> out(which.size());
      std::vector<HostItem> items;
      for (size_t k = 0; k < which.size(); ++k)
        items.push_back(HostItem{&f.tasks[f.task_of[which[k]]], &trajs[k], &f.w[which[k]],
                                 &f.w[(which[k] + 1) % f.items()], &out[k]});
      emulated_batch(1, true, f.hyper, items, 2, mode);
      return out;
    };
    const auto all = run({0, 1, 2, 3});
    for (size_t i = 0; i < f.items(); ++i) {
      const auto alone = run({i});
      EXPECT_TRUE(all_finite(all[i]));
      EXPECT_EQ(0, std::memcmp(all[i].data(), alone[0].data(), all[i].size() * sizeof(float)))
          << "hvp " << mode_name(mode) << " item " << i;
    }
  }
}

// The device HVP's kernels (v1 on Dual<float>) through the production plan, against hvp_dual.
std::vector<float> emulated_hvp(const OptimizerHyper& hyper, const std::vector<float>& w,
                                const Task<float>& task, const Trajectory<float>& start, int T,
                                const std::vector<float>& v, GradMode mode) {
  Trajectory<float> traj = start;
  std::vector<float> out;
  const HostItem item{&task, &traj, &w, &v, &out};
  emulated_batch(1, true, hyper, std::span<const HostItem>(&item, 1), T, mode);
  EXPECT_EQ(traj.k, start.k);  // the HVP leaves its start unchanged
  EXPECT_EQ(0, std::memcmp(traj.x.data(), start.x.data(), start.x.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(traj.coord.data(), start.coord.data(), start.coord.size() * sizeof(CoordState<float>)));
  return out;
}

TEST(KernelEmulation, HvpMatchesTheDualReference) {
  for (const HvpCase& c : kSmallHvpCases) run_hvp_case(c, emulated_hvp);
  for (const HvpCase& c : kHvpCases)
    if (c.N * c.d * c.T <= 600) run_hvp_case(c, emulated_hvp);  // the emulation is slow
}

// Every kernel's shared memory fits the emulation's buffer and an H100/H200 (227 KiB opt-in).
TEST(KernelEmulation, SharedMemoryFitsTheDevice) {
  using namespace cuda;
  constexpr size_t kOptin = 232448;
  const int P = RnnpropLayout::size;
  std::vector<size_t> sizes = {sizeof(float) * kV2ForwardFloats, sizeof(float) * kV2BackwardFloats,
                               sizeof(float) * kV3ForwardFloats};
  for (const KernelClass cls : {KernelClass::v1_small, KernelClass::v1_large})
    for (const bool dual : {false, true}) {
      sizes.push_back(v1_forward_smem(cls, P, dual));
      sizes.push_back(v1_backward_smem(cls, P, dual));
    }
  for (const size_t s : sizes) {
    EXPECT_LE(s, sizeof(cuda::smem));
    EXPECT_LE(s, kOptin);
  }
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
  int bad = 0;
  emulate_launch(blocks, threads, [&] { cuda::finite_kernel(w.data(), n, &bad); });
  EXPECT_EQ(bad, 0);
  w[n - 1] = std::numeric_limits<float>::quiet_NaN();
  emulate_launch(blocks, threads, [&] { cuda::finite_kernel(w.data(), n, &bad); });
  EXPECT_EQ(bad, 1);
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

// ---- v3 lab on a device (not in the '*Cuda*' suites: the lab kernel is unverified, and its
// failure must not read as a failure of the default kernels; bench/gpu_check.sh runs these) -------

// The tile primitive on the real mma.sync against the software model. With small-integer inputs
// every product and partial sum is exact, so any summation order gives the same float: equality
// checks the fragment layouts bit for bit. With random inputs, 3xTF32 within float32-level error.
TEST(TileMmaOnDevice, HardwareMatchesTheModel) {
  ML2O_REQUIRE_CUDA();
  std::mt19937_64 rng(91);
  std::uniform_int_distribution<int> small(-8, 8);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const int K : {8, 40, 80}) {
    for (const bool exact : {true, false}) {
      SCOPED_TRACE(::testing::Message() << "K " << K << (exact ? " integers" : " normal"));
      auto draw = [&] { return exact ? float(small(rng)) : nd(rng); };
      std::vector<float> A(16 * size_t(K)), B(size_t(K) * 80), C(16 * 80);
      for (float& v : A) v = draw();
      for (float& v : B) v = draw();
      for (float& v : C) v = draw();
      for (const bool split : {false, true}) {
        const std::vector<float> dev = lab::cuda_tile_gemm(A, B, C, K, split);
        // The model: the host path of the same primitive, lane by lane.
        std::vector<float> model(C.size());
        for (int lane = 0; lane < tile::kWarpLanes; ++lane) {
          tile::FragC acc[10];
          for (int n = 0; n < 10; ++n) acc[n] = tile::load_frag<tile::LayoutC>(tile::row_major(C.data() + 8 * n, 80), lane);
          if (split)
            tile::warp_gemm<10, tile::Precision::tf32x3>(tile::row_major(A.data(), K), tile::row_major(B.data(), 80), K, lane, acc);
          else
            tile::warp_gemm<10, tile::Precision::tf32>(tile::row_major(A.data(), K), tile::row_major(B.data(), 80), K, lane, acc);
          for (int n = 0; n < 10; ++n)
            for (int i = 0; i < tile::LayoutC::kRegs; ++i) {
              const tile::Elem e = tile::LayoutC::at(lane, i);
              model[e.row * 80 + 8 * n + e.col] = acc[n].r[i];
            }
        }
        double max_rel = 0.0, max_model = 0.0;
        for (int r = 0; r < 16; ++r)
          for (int c = 0; c < 80; ++c) {
            double exact_v = C[r * 80 + c], mag = std::abs(double(C[r * 80 + c]));
            for (int k = 0; k < K; ++k) {
              exact_v += double(A[r * K + k]) * double(B[k * 80 + c]);
              mag += std::abs(double(A[r * K + k]) * double(B[k * 80 + c]));
            }
            const size_t i = size_t(r) * 80 + c;
            if (exact) ASSERT_EQ(dev[i], model[i]) << "(" << r << ", " << c << ") split " << split;
            if (mag > 0) {
              max_rel = std::max(max_rel, std::abs(double(dev[i]) - exact_v) / mag);
              max_model = std::max(max_model, std::abs(double(dev[i]) - double(model[i])) / mag);
            }
          }
        std::cout << "  [tile mma K " << K << (split ? " 3xTF32" : " TF32") << (exact ? " integers" : " normal")
                  << "] max |dev - exact| / sum|terms| " << max_rel << ", |dev - model| / sum|terms| " << max_model << "\n";
        if (split) EXPECT_LE(max_rel, 1e-6);
      }
    }
  }
}

// The v3 lab forward (v2's backward) on the device: the emulation cases (small: the sanitizer
// subset) and larger shapes, the same tolerances as every unroll test; bit-identical on repeat.
TEST(V3LabOnDevice, SmallShapesMatchCpuReference) {
  ML2O_REQUIRE_CUDA();
  VariantScope scope(3);
  for (const UnrollCase& c : kEmulationCases) run_unroll_case(c, gpu_unroll);
}

TEST(V3LabOnDevice, LargeShapesMatchCpuReferenceAndRepeatBitIdentically) {
  ML2O_REQUIRE_CUDA();
  VariantScope scope(3);
  for (const UnrollCase& c : {UnrollCase{R, LA, 10, 10000, 5, GC, 71, 2}, UnrollCase{D, RO, 2, 5000, 20, SD, 72, 1},
                              UnrollCase{R, LA, 10, 128, 1000, NO, 73, 0}})
    run_unroll_case(c, gpu_unroll);
  OptimizerHyper hyper;
  const std::vector<float> w = init_optimizer(hyper, 74).weights;
  const Task<float> task = sample_task<float>(spec_for(LA, 10, 3000, 74));
  const Trajectory<float> start = start_trajectory(task.x0);
  Trajectory<float> t1 = start, t2 = start;
  const auto r1 = gpu_unroll(hyper, w, task, t1, 20, SD);
  const auto r2 = gpu_unroll(hyper, w, task, t2, 20, SD);
  ASSERT_EQ(r1.grad.size(), r2.grad.size());
  EXPECT_EQ(0, std::memcmp(r1.grad.data(), r2.grad.data(), r1.grad.size() * sizeof(float)));
  EXPECT_EQ(r1.step_loss, r2.step_loss);
  EXPECT_EQ(0, std::memcmp(t1.coord.data(), t2.coord.data(), t1.coord.size() * sizeof(CoordState<float>)));
}

}  // namespace
}  // namespace ml2o
#endif  // ML2O_HAVE_CUDA
