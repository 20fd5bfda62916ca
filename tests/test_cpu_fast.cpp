// The CPU backend's fast float unroll (host/cpu/fast_unroll.hpp) against the scalar reference
// unroll_cpu, on every instruction set this CPU runs (the generic fallback always included).
//
// Tolerances as the CUDA backend's (tests/test_cuda.cpp): the error measure is the normalised
// error ||fast - cpu_double|| / ||cpu_double|| over a whole output against the float64 oracle
// unroll_cpu<double>; the float reference unroll_cpu<float> has its own error e_f on the same
// inputs, and the fast path computes the same float32 math in another order (tiles, FMA, polynomial
// exp/tanh), so it must satisfy e_fast <= max(floor, 20 e_f), floors 1e-5 (losses, states) and 1e-4
// (gradients). Outputs must be finite, and bit-identical for any thread count.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../host/cpu/fast_unroll.hpp"
#include "ml2o/backend.hpp"
#include "ml2o/lopt.hpp"

namespace ml2o {
namespace {

// Selects an instruction set for the scope, back to the automatic choice afterwards.
struct IsaScope {
  explicit IsaScope(const std::string& isa) { cpu_fast::set_isa(isa); }
  ~IsaScope() { cpu_fast::set_isa("auto"); }
  IsaScope(const IsaScope&) = delete;
  IsaScope& operator=(const IsaScope&) = delete;
};

template <class A, class B> double nerr(const A& a, const B& ref) {
  if (a.size() != ref.size()) return INFINITY;
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = double(a[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * double(ref[i]);
  }
  if (den == 0.0) return std::sqrt(num);
  return std::sqrt(num / den);  // NaN fails every <=
}

template <class S> std::vector<double> flat_state(const Trajectory<S>& t) {
  std::vector<double> v;
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

template <class V> bool finite(const V& v) {
  return std::all_of(v.begin(), v.end(), [](auto x) { return std::isfinite(double(x)); });
}

constexpr double kRatio = 20.0, kFloorState = 1e-5, kFloorGrad = 1e-4;

void expect_close(const std::string& what, double e_fast, double e_ref, double floor) {
  EXPECT_LE(e_fast, std::max(floor, kRatio * e_ref)) << what << ": error " << e_fast
                                                     << ", float reference error " << e_ref;
}

struct Case {
  Arch arch;
  Family family;
  int d;
  int64_t N;
  int T;
  GradMode mode;
  uint64_t seed;
  int warm;  // reference steps before the compared unroll: non-zero state, k > 1
};

std::string case_name(const Case& c) {
  std::ostringstream s;
  s << arch_name(c.arch) << "_" << family_name(c.family) << "_d" << c.d << "_N" << c.N << "_T" << c.T
    << "_" << (c.mode == GradMode::none ? "none" : c.mode == GradMode::gradient_constant ? "const" : "second")
    << "_s" << c.seed;
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

struct Inputs {
  OptimizerHyper hyper;
  std::vector<float> w;
  Task<float> task;
  Trajectory<float> start;
};

Inputs inputs_of(const Case& c) {
  Inputs in;
  in.hyper.arch = c.arch;
  in.w = init_optimizer(in.hyper, 1000 + c.seed).weights;
  in.task = sample_task<float>(spec_for(c.family, c.d, c.N, c.seed));
  in.start = start_trajectory(in.task.x0);
  if (c.warm > 0) unroll_cpu(in.hyper, in.w, view_of(in.task), in.start, c.warm, GradMode::none);
  return in;
}

UnrollResult<float> run_fast(const Inputs& in, Trajectory<float>& tr, const Case& c, int threads = 0) {
  cpu_fast::Workspace ws;
  return cpu_fast::unroll(in.hyper, in.w, view_of(in.task), tr, c.T, c.mode, ws, threads);
}

class CpuFastUnroll : public ::testing::TestWithParam<Case> {};

// Every instruction set against the float reference and the double oracle.
TEST_P(CpuFastUnroll, MatchesTheScalarReference) {
  const Case& c = GetParam();
  const Inputs in = inputs_of(c);
  Trajectory<float> tr_f = in.start;
  const auto r_f = unroll_cpu(in.hyper, in.w, view_of(in.task), tr_f, c.T, c.mode);
  const Task<double> task_d = cast_task<double>(in.task);
  Trajectory<double> tr_d = cast_trajectory<double>(in.start);
  const std::vector<double> w_d(in.w.begin(), in.w.end());
  const auto r_d = unroll_cpu(in.hyper, w_d, view_of(task_d), tr_d, c.T, c.mode);
  const double meta_f = std::abs(double(r_f.meta_loss) - double(r_d.meta_loss)) / std::abs(double(r_d.meta_loss));

  const auto isas = cpu_fast::runnable_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), "generic");  // the fallback is always tested
  for (const std::string& isa : isas) {
    SCOPED_TRACE("isa " + isa);
    IsaScope scope(isa);
    Trajectory<float> tr = in.start;
    const auto r = run_fast(in, tr, c);
    ASSERT_EQ(r.step_loss.size(), size_t(c.T) + 1);
    EXPECT_EQ(tr.k, in.start.k + c.T);
    EXPECT_TRUE(finite(r.step_loss));
    EXPECT_TRUE(finite(tr.x));
    EXPECT_TRUE(finite(flat_state(tr)));
    const double meta = std::abs(double(r.meta_loss) - double(r_d.meta_loss)) / std::abs(double(r_d.meta_loss));
    expect_close("meta_loss", meta, meta_f, kFloorState);
    expect_close("step_loss", nerr(r.step_loss, r_d.step_loss), nerr(r_f.step_loss, r_d.step_loss), kFloorState);
    expect_close("x", nerr(tr.x, tr_d.x), nerr(tr_f.x, tr_d.x), kFloorState);
    expect_close("state", nerr(flat_state(tr), flat_state(tr_d)), nerr(flat_state(tr_f), flat_state(tr_d)),
                 kFloorState);
    double eg = 0, ef = 0;
    if (c.mode == GradMode::none) {
      EXPECT_TRUE(r.grad.empty());
    } else {
      ASSERT_EQ(r.grad.size(), in.w.size());
      EXPECT_TRUE(finite(r.grad));
      eg = nerr(r.grad, r_d.grad);
      ef = nerr(r_f.grad, r_d.grad);
      expect_close("grad", eg, ef, kFloorGrad);
      for (const TensorInfo& t : tensor_table(c.arch)) {  // a wrong small tensor hides in the norm
        const auto slice = [&](const auto& v) {
          return std::vector<double>(v.begin() + t.offset, v.begin() + t.offset + t.size());
        };
        expect_close(t.name, nerr(slice(r.grad), slice(r_d.grad)), nerr(slice(r_f.grad), slice(r_d.grad)),
                     kFloorGrad);
      }
    }
    std::cout << "  [" << case_name(c) << " " << isa << "] step_loss err fast "
              << nerr(r.step_loss, r_d.step_loss) << " ref " << nerr(r_f.step_loss, r_d.step_loss)
              << "; grad err fast " << eg << " ref " << ef << "\n";
  }
}

constexpr Arch R = Arch::rnnprop, D = Arch::dmlstm;
constexpr Family LA = Family::lasso, QU = Family::quadratic, RO = Family::rosenbrock,
                 RA = Family::rastrigin;
constexpr GradMode NO = GradMode::none, GC = GradMode::gradient_constant,
                   SD = GradMode::second_derivatives;

// The CUDA parity suite's shapes (test_cuda.cpp: CudaSmallUnroll, CudaUnroll), with its two batches
// over 100,000 coordinates at 5,000-8,000 here (still many chunks per group) and its 1,000-step
// evaluations at 300 steps, to keep the double oracle quick; then coordinate counts around the
// tile of 16: 1, 7, 15, 16, 17, 34, 120.
INSTANTIATE_TEST_SUITE_P(
    Shapes, CpuFastUnroll,
    ::testing::Values(
        Case{R, LA, 7, 3, 2, GC, 1, 2}, Case{R, LA, 7, 3, 2, SD, 2, 2}, Case{D, QU, 1, 5, 2, SD, 3, 1},
        Case{R, RO, 2, 4, 2, SD, 4, 1}, Case{D, RA, 33, 2, 2, GC, 5, 1}, Case{D, LA, 10, 13, 2, SD, 6, 1},
        Case{R, RA, 10, 13, 1, NO, 7, 0}, Case{R, QU, 4, 40, 0, GC, 8, 0}, Case{R, LA, 130, 2, 2, SD, 9, 1},
        Case{R, LA, 10, 1, 20, GC, 11, 3}, Case{R, LA, 10, 1, 20, SD, 12, 3},
        Case{D, LA, 10, 1, 1, SD, 13, 3}, Case{R, QU, 10, 17, 2, GC, 14, 3},
        Case{D, QU, 10, 17, 5, SD, 15, 3}, Case{R, QU, 1, 200, 20, SD, 16, 3},
        Case{D, LA, 1, 129, 20, GC, 17, 3}, Case{R, RO, 2, 64, 20, GC, 18, 3},
        Case{R, RO, 2, 64, 20, SD, 19, 3}, Case{D, RO, 2, 64, 20, GC, 20, 3},
        Case{D, RO, 2, 65, 20, SD, 21, 3}, Case{R, LA, 7, 129, 20, GC, 22, 3},
        Case{R, LA, 7, 129, 20, SD, 23, 3}, Case{D, LA, 33, 129, 20, SD, 24, 3},
        Case{R, QU, 33, 129, 20, SD, 25, 3}, Case{R, LA, 10, 129, 20, GC, 26, 3},
        Case{D, LA, 10, 129, 20, GC, 27, 3}, Case{R, RA, 10, 50, 20, SD, 28, 3},
        Case{D, RA, 10, 50, 20, GC, 29, 3}, Case{R, QU, 129, 3, 5, SD, 30, 2},
        Case{D, LA, 512, 2, 3, SD, 31, 1}, Case{R, RA, 300, 3, 5, GC, 32, 1},
        Case{R, LA, 10, 800, 5, GC, 33, 2}, Case{D, RO, 2, 2500, 5, SD, 34, 2},
        Case{R, LA, 10, 64, 300, NO, 35, 0}, Case{D, QU, 7, 33, 300, NO, 36, 0},
        // around the tile
        Case{R, QU, 1, 1, 20, GC, 40, 2}, Case{D, LA, 7, 1, 20, SD, 41, 2},
        Case{R, RA, 15, 1, 20, SD, 42, 2}, Case{R, LA, 16, 1, 20, GC, 43, 2},
        Case{D, QU, 17, 1, 20, GC, 44, 2}, Case{R, LA, 17, 2, 20, SD, 45, 2},
        Case{R, LA, 10, 12, 20, GC, 46, 2}, Case{D, LA, 10, 12, 20, SD, 47, 2}),
    [](const auto& info) { return case_name(info.param); });

// Same inputs, 1, 2 and 3 threads: bit-identical results (the work split and every reduction
// order are fixed by the task's shape), on every instruction set.
TEST(CpuFastThreads, ResultsAreBitIdenticalForAnyThreadCount) {
  for (const Case& c : {Case{R, LA, 10, 300, 20, GC, 60, 2}, Case{R, QU, 7, 41, 6, SD, 61, 2},
                        Case{D, RO, 2, 500, 8, SD, 62, 1}, Case{D, LA, 10, 12, 20, GC, 63, 1},
                        Case{R, RA, 10, 50, 30, NO, 64, 0}}) {
    SCOPED_TRACE(case_name(c));
    const Inputs in = inputs_of(c);
    for (const std::string& isa : cpu_fast::runnable_isas()) {
      SCOPED_TRACE("isa " + isa);
      IsaScope scope(isa);
      Trajectory<float> t1 = in.start;
      const auto r1 = run_fast(in, t1, c, 1);
      for (const int threads : {2, 3}) {
        SCOPED_TRACE(std::to_string(threads) + " threads");
        Trajectory<float> tn = in.start;
        const auto rn = run_fast(in, tn, c, threads);
        EXPECT_EQ(0, std::memcmp(&r1.meta_loss, &rn.meta_loss, sizeof(float)));
        EXPECT_EQ(r1.step_loss, rn.step_loss);
        ASSERT_EQ(r1.grad.size(), rn.grad.size());
        EXPECT_EQ(r1.grad, rn.grad);  // empty without a meta-gradient; floats compared exactly
        EXPECT_EQ(0, std::memcmp(t1.x.data(), tn.x.data(), t1.x.size() * sizeof(float)));
        EXPECT_EQ(0, std::memcmp(t1.coord.data(), tn.coord.data(),
                                 t1.coord.size() * sizeof(CoordState<float>)));
      }
    }
  }
}

// optimizer.output_scale reaches the fast path: it matches the reference at another scale, and the
// scale changes the trajectory.
TEST(CpuFastOutputScale, MatchesTheReferenceAtAnotherScale) {
  const Case c{R, LA, 10, 40, 10, GC, 70, 1};
  Inputs in = inputs_of(c);
  Trajectory<float> base = in.start;
  (void)run_fast(in, base, c);
  in.hyper.output_scale = 0.05;
  Trajectory<float> fast = in.start, ref = in.start;
  const auto rf = run_fast(in, fast, c);
  const auto rr = unroll_cpu(in.hyper, in.w, view_of(in.task), ref, c.T, c.mode);
  EXPECT_NE(base.x, fast.x);
  EXPECT_LT(nerr(fast.x, ref.x), 1e-5);
  EXPECT_LT(nerr(rf.grad, rr.grad), 1e-4);
  EXPECT_NEAR(rf.meta_loss, rr.meta_loss, 1e-5 * std::abs(rr.meta_loss));
}

// The groups are the unit a distributed run shares out: any split of them into consecutive
// ranges, summed in order, gives unroll()'s results and trajectory bit for bit.
TEST(CpuFastGroups, AnySplitSumsToTheWholeUnroll) {
  for (const Case& c : {Case{R, LA, 10, 300, 8, GC, 71, 1}, Case{D, QU, 7, 41, 5, SD, 72, 1}}) {
    SCOPED_TRACE(case_name(c));
    const Inputs in = inputs_of(c);
    Trajectory<float> whole = in.start;
    const auto r = run_fast(in, whole, c);
    const int64_t G = cpu_fast::group_count(c.d, c.N);
    ASSERT_GT(G, 2);
    EXPECT_EQ(cpu_fast::group_instances(c.d, c.N, 0).first, 0);
    EXPECT_EQ(cpu_fast::group_instances(c.d, c.N, G - 1).second, c.N);
    for (int64_t cut : {int64_t(1), G / 2, G - 1}) {
      Trajectory<float> split = in.start;
      cpu_fast::Workspace ws;
      const auto a = cpu_fast::unroll_groups(in.hyper, in.w, view_of(in.task), split, c.T, c.mode, ws, 0, cut);
      const auto b = cpu_fast::unroll_groups(in.hyper, in.w, view_of(in.task), split, c.T, c.mode, ws, cut, G);
      split.k += c.T;
      const ChunkPartials<float>* parts[] = {&a, &b};
      const auto s = reduce_chunks<float>(parts, c.N, c.T, in.w.size(), c.mode);
      EXPECT_EQ(0, std::memcmp(&r.meta_loss, &s.meta_loss, sizeof(float)));
      EXPECT_EQ(r.step_loss, s.step_loss);
      EXPECT_EQ(0, std::memcmp(r.grad.data(), s.grad.data(), r.grad.size() * sizeof(float)));
      EXPECT_EQ(0, std::memcmp(whole.x.data(), split.x.data(), whole.x.size() * sizeof(float)));
    }
  }
}

// A workspace reused after a larger call (stale buffers) gives what a fresh one gives.
TEST(CpuFastWorkspace, ReuseAfterALargerCallChangesNothing) {
  const Case big{D, LA, 33, 40, 7, SD, 70, 1}, small{R, LA, 10, 12, 5, GC, 71, 1};
  const Inputs ib = inputs_of(big), is = inputs_of(small);
  cpu_fast::Workspace ws;
  Trajectory<float> tb = ib.start;
  cpu_fast::unroll(ib.hyper, ib.w, view_of(ib.task), tb, big.T, big.mode, ws, 2);
  Trajectory<float> reused = is.start, fresh = is.start;
  const auto a = cpu_fast::unroll(is.hyper, is.w, view_of(is.task), reused, small.T, small.mode, ws, 2);
  const auto b = run_fast(is, fresh, small, 2);
  EXPECT_EQ(0, std::memcmp(a.grad.data(), b.grad.data(), a.grad.size() * sizeof(float)));
  EXPECT_EQ(a.step_loss, b.step_loss);
  EXPECT_EQ(0, std::memcmp(reused.coord.data(), fresh.coord.data(), fresh.coord.size() * sizeof(CoordState<float>)));
}

// The CPU backend runs the fast path (bit for bit) and names its instruction set.
TEST(CpuFastBackend, UnrollIsTheFastPath) {
  const Case c{R, LA, 10, 30, 6, GC, 80, 1};
  const Inputs in = inputs_of(c);
  auto be = make_cpu_backend();
  Trajectory<float> tb = in.start, tf = in.start;
  const auto rb = unroll_once(*be, in.hyper, in.w, in.task, tb, c.T, c.mode);
  const auto rf = run_fast(in, tf, c);
  EXPECT_EQ(0, std::memcmp(rb.grad.data(), rf.grad.data(), rb.grad.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(tb.x.data(), tf.x.data(), tf.x.size() * sizeof(float)));
  EXPECT_NE(be->device().find(cpu_fast::isa()), std::string::npos) << be->device();
}

// ML2O_CPU_UNROLL: a bad value is rejected naming the allowed ones; "reference" is the scalar path.
TEST(CpuFastBackend, UnrollChoiceFromTheEnvironment) {
  ::setenv("ML2O_CPU_UNROLL", "sse9", 1);
  try {
    make_cpu_backend();
    ADD_FAILURE() << "ML2O_CPU_UNROLL=sse9 was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("allowed: auto, avx512, avx2, generic, reference"), std::string::npos)
        << e.what();
  }
  ::setenv("ML2O_CPU_UNROLL", "reference", 1);
  const Case c{D, QU, 7, 5, 4, SD, 81, 1};
  const Inputs in = inputs_of(c);
  auto be = make_cpu_backend();
  EXPECT_NE(be->device().find("reference"), std::string::npos) << be->device();
  Trajectory<float> tb = in.start, tr = in.start;
  const auto rb = unroll_once(*be, in.hyper, in.w, in.task, tb, c.T, c.mode);
  const auto rr = unroll_cpu(in.hyper, in.w, view_of(in.task), tr, c.T, c.mode);
  EXPECT_EQ(0, std::memcmp(rb.grad.data(), rr.grad.data(), rr.grad.size() * sizeof(float)));
  ::unsetenv("ML2O_CPU_UNROLL");
  cpu_fast::set_isa("auto");
}

TEST(CpuFastIsa, UnknownOrUnrunnableNamesAreRejected) {
  EXPECT_THROW(cpu_fast::set_isa("sse9"), std::invalid_argument);
  const auto isas = cpu_fast::runnable_isas();
  for (const char* name : {"avx2", "avx512"})
    if (std::find(isas.begin(), isas.end(), name) == isas.end())
      EXPECT_THROW(cpu_fast::set_isa(name), std::invalid_argument) << name;
  cpu_fast::set_isa("auto");
  EXPECT_EQ(cpu_fast::isa(), isas.back());  // the widest runnable one
}

}  // namespace
}  // namespace ml2o
