// Tile primitives of the v3 kernels (include/ml2o/tile_mma.hpp) on the CPU: TF32 rounding, the
// mma.m16n8k8 fragment layouts, the software model of the instruction against plain matrix
// products, and the accuracy of split-precision (3xTF32) products at the LSTM layer sizes. What
// the hardware does is not checked here (no GPU): docs/kernels.md lists the device checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iostream>
#include <limits>
#include <random>
#include <vector>

#include "ml2o/cell.hpp"
#include "ml2o/lopt.hpp"
#include "ml2o/tile_mma.hpp"

namespace ml2o {
namespace {

using tile::FragA;
using tile::FragB;
using tile::FragC;
using tile::kWarpLanes;
using tile::LayoutA;
using tile::LayoutB;
using tile::LayoutC;
using tile::MatView;
using tile::Precision;

uint32_t bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
float from_bits(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// ---- TF32 rounding ---------------------------------------------------------------------------------
TEST(TileMma, Tf32RoundIsNearestTiesAwayFromZero) {
  const float ulp = std::ldexp(1.0f, -10);  // TF32 ulp at 1
  EXPECT_EQ(tile::tf32_round(1.0f), 1.0f);
  EXPECT_EQ(tile::tf32_round(1.0f + ulp), 1.0f + ulp);
  // Ties: away from zero (round-to-nearest-even would give 1 here).
  EXPECT_EQ(tile::tf32_round(1.0f + ulp / 2), 1.0f + ulp);
  EXPECT_EQ(tile::tf32_round(-(1.0f + ulp / 2)), -(1.0f + ulp));
  EXPECT_EQ(tile::tf32_round(1.0f + 3 * ulp / 2), 1.0f + 2 * ulp);
  // Just below a tie: down.
  EXPECT_EQ(tile::tf32_round(std::nextafter(1.0f + ulp / 2, 0.0f)), 1.0f);
  // Carry into the exponent.
  EXPECT_EQ(tile::tf32_round(std::nextafter(2.0f, 0.0f)), 2.0f);
  // Subnormals: the TF32 grid there is 2^-136 apart.
  EXPECT_EQ(tile::tf32_round(std::ldexp(1.0f, -137)), std::ldexp(1.0f, -136));
  EXPECT_EQ(tile::tf32_round(std::ldexp(1.0f, -137) - std::ldexp(1.0f, -149)), 0.0f);
  // Specials and overflow.
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(tile::tf32_round(inf), inf);
  EXPECT_EQ(tile::tf32_round(-inf), -inf);
  EXPECT_TRUE(std::isnan(tile::tf32_round(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(tile::tf32_round(std::numeric_limits<float>::max()), inf);
  EXPECT_EQ(bits(tile::tf32_round(-0.0f)), bits(-0.0f));
}

TEST(TileMma, Tf32RoundMatchesAnIndependentReferenceOnNormals) {
  // Reference: the significand scaled to 11 bits, rounded half away from zero (std::round), in double.
  std::mt19937_64 rng(7);
  for (int i = 0; i < 200000; ++i) {
    const uint32_t u = static_cast<uint32_t>(rng());
    const float x = from_bits(u);
    if (!std::isnormal(x) || std::fabs(x) > 1e38f) continue;
    int e;
    const double m = std::frexp(static_cast<double>(x), &e);  // |m| in [0.5, 1)
    const double ref = std::ldexp(std::round(std::ldexp(m, 11)), e - 11);
    const float r = tile::tf32_round(x);
    ASSERT_EQ(static_cast<double>(r), ref) << "x = " << x;
    ASSERT_EQ(bits(r) & 0x1fffu, 0u);
  }
}

// ---- fragment layouts --------------------------------------------------------------------------------
template <class L> void expect_bijection() {
  std::vector<int> hits(L::kRows * L::kCols, 0);
  for (int lane = 0; lane < kWarpLanes; ++lane)
    for (int i = 0; i < L::kRegs; ++i) {
      const tile::Elem e = L::at(lane, i);
      ASSERT_TRUE(e.row >= 0 && e.row < L::kRows && e.col >= 0 && e.col < L::kCols)
          << "lane " << lane << " reg " << i;
      ++hits[e.row * L::kCols + e.col];
    }
  static_assert(kWarpLanes * L::kRegs == L::kRows * L::kCols);
  for (int h : hits) EXPECT_EQ(h, 1);
}

TEST(TileMma, FragmentLayoutsAreBijectionsOverTheirTiles) {
  expect_bijection<LayoutA>();
  expect_bijection<LayoutB>();
  expect_bijection<LayoutC>();
}

TEST(TileMma, FragmentLayoutsMatchThePtxTables) {
  // groupID = lane / 4, threadID_in_group = lane % 4; spot checks of each register's rule.
  auto eq = [](tile::Elem e, int r, int c) { return e.row == r && e.col == c; };
  EXPECT_TRUE(eq(LayoutA::at(0, 0), 0, 0));
  EXPECT_TRUE(eq(LayoutA::at(5, 0), 1, 1));
  EXPECT_TRUE(eq(LayoutA::at(5, 1), 9, 1));
  EXPECT_TRUE(eq(LayoutA::at(5, 2), 1, 5));
  EXPECT_TRUE(eq(LayoutA::at(31, 3), 15, 7));
  EXPECT_TRUE(eq(LayoutB::at(6, 0), 2, 1));
  EXPECT_TRUE(eq(LayoutB::at(6, 1), 6, 1));
  EXPECT_TRUE(eq(LayoutB::at(31, 1), 7, 7));
  EXPECT_TRUE(eq(LayoutC::at(7, 0), 1, 6));
  EXPECT_TRUE(eq(LayoutC::at(7, 1), 1, 7));
  EXPECT_TRUE(eq(LayoutC::at(7, 2), 9, 6));
  EXPECT_TRUE(eq(LayoutC::at(30, 3), 15, 5));
}

// ---- the instruction model ---------------------------------------------------------------------------
// Random float with a spread of magnitudes (2^-6 .. 2^6) and both signs.
float spread(std::mt19937_64& rng) {
  std::uniform_real_distribution<float> m(0.5f, 1.0f);
  std::uniform_int_distribution<int> e(-6, 6);
  return (rng() & 1 ? 1.0f : -1.0f) * std::ldexp(m(rng), e(rng));
}

TEST(TileMma, ModelEqualsTheMatrixProductOfTf32Inputs) {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 50; ++trial) {
    float A[16][8], B[8][8], C[16][8];
    for (auto& r : A) for (float& v : r) v = tile::tf32_round(spread(rng));
    for (auto& r : B) for (float& v : r) v = tile::tf32_round(spread(rng));
    for (auto& r : C) for (float& v : r) v = spread(rng);  // C stays a float
    FragA a[kWarpLanes];
    FragB b[kWarpLanes];
    for (int l = 0; l < kWarpLanes; ++l) {
      a[l] = tile::load_frag<LayoutA>(tile::row_major(&A[0][0], 8), l);
      b[l] = tile::load_frag<LayoutB>(tile::row_major(&B[0][0], 8), l);
    }
    float D[16][8];
    for (int l = 0; l < kWarpLanes; ++l) {
      FragC c = tile::load_frag<LayoutC>(tile::row_major(&C[0][0], 8), l);
      tile::mma_model_lane(a, b, l, c);
      for (int i = 0; i < LayoutC::kRegs; ++i) {
        const tile::Elem e = LayoutC::at(l, i);
        D[e.row][e.col] = c.r[i];
      }
    }
    for (int r = 0; r < 16; ++r)
      for (int c = 0; c < 8; ++c) {
        float ref = C[r][c];
        for (int k = 0; k < 8; ++k) ref = ref + A[r][k] * B[k][c];
        ASSERT_EQ(D[r][c], ref) << "trial " << trial << " (" << r << ", " << c << ")";
      }
  }
}

TEST(TileMma, ModelReadsOnlyTheTf32BitsOfItsInputs) {
  // Unrounded inputs: the model uses their truncation (the .tf32 operand ignores 13 low bits).
  std::mt19937_64 rng(12);
  float A[16][8], B[8][8];
  for (auto& r : A) for (float& v : r) v = spread(rng);
  for (auto& r : B) for (float& v : r) v = spread(rng);
  FragA a[kWarpLanes];
  FragB b[kWarpLanes];
  for (int l = 0; l < kWarpLanes; ++l) {
    a[l] = tile::load_frag<LayoutA>(tile::row_major(&A[0][0], 8), l);
    b[l] = tile::load_frag<LayoutB>(tile::row_major(&B[0][0], 8), l);
  }
  for (int l = 0; l < kWarpLanes; ++l) {
    FragC c{};
    tile::mma_model_lane(a, b, l, c);
    for (int i = 0; i < LayoutC::kRegs; ++i) {
      const tile::Elem e = LayoutC::at(l, i);
      float ref = 0.0f;
      for (int k = 0; k < 8; ++k)
        ref = ref + from_bits(bits(A[e.row][k]) & 0xffffe000u) * from_bits(bits(B[k][e.col]) & 0xffffe000u);
      ASSERT_EQ(c.r[i], ref);
    }
  }
}

// ---- warp tile products on whole matrices -----------------------------------------------------------------
// A host matrix with an element function; materialised padded, row-major or transposed in memory.
struct Matrix {
  int rows, cols;
  std::vector<float> v;  // row-major
  float operator()(int r, int c) const { return v[size_t(r) * cols + c]; }
};
Matrix make(int rows, int cols, const std::function<float(int, int)>& f) {
  Matrix m{rows, cols, std::vector<float>(size_t(rows) * cols)};
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) m.v[size_t(r) * cols + c] = f(r, c);
  return m;
}
int round_up(int x, int m) { return (x + m - 1) / m * m; }

// Padded storage of m (rows_p x cols_p, zeros outside) and the view of it: row-major, or stored
// transposed ([cols_p][rows_p]) and read through a transposed view.
struct Stored {
  std::vector<float> mem;
  MatView view;
};
Stored store(const Matrix& m, int rows_p, int cols_p, bool transposed) {
  Stored s;
  s.mem.assign(size_t(rows_p) * cols_p, 0.0f);
  for (int r = 0; r < m.rows; ++r)
    for (int c = 0; c < m.cols; ++c)
      (transposed ? s.mem[size_t(c) * rows_p + r] : s.mem[size_t(r) * cols_p + c]) = m(r, c);
  s.view = transposed ? tile::transposed(s.mem.data(), rows_p) : tile::row_major(s.mem.data(), cols_p);
  return s;
}

template <int NT, Precision P>
void gemm_rows(const MatView& A, const MatView& B, int K, int lane, FragC* acc) {
  FragC a[NT];
  std::copy(acc, acc + NT, a);
  tile::warp_gemm<NT, P>(A, B, K, lane, a);
  std::copy(a, a + NT, acc);
}

// D = C + A . B through warp_gemm: every 16-row block by one emulated warp (all 32 lanes), with
// NT = (padded N) / 8 tiles per call when it is one of the layer widths, else one tile per call.
template <Precision P>
Matrix tile_product(const Matrix& A, const Matrix& B, const Matrix& C, bool a_transposed_storage,
                    bool b_transposed_storage) {
  const int M = A.rows, K = A.cols, N = B.cols;
  const int Mp = round_up(M, 16), Kp = round_up(K, 8), Np = round_up(N, 8);
  const Stored sa = store(A, Mp, Kp, a_transposed_storage);
  const Stored sb = store(B, Kp, Np, b_transposed_storage);
  const Stored sc = store(C, Mp, Np, false);
  Matrix D{M, N, std::vector<float>(size_t(M) * N)};
  const int NT = Np / 8;
  for (int m0 = 0; m0 < Mp; m0 += 16)
    for (int lane = 0; lane < kWarpLanes; ++lane) {
      std::vector<FragC> acc(NT);
      for (int n = 0; n < NT; ++n) acc[n] = tile::load_frag<LayoutC>(sc.view.at(m0, 8 * n), lane);
      const MatView a = sa.view.at(m0, 0);
      if (NT == 10) gemm_rows<10, P>(a, sb.view, Kp, lane, acc.data());
      else if (NT == 5) gemm_rows<5, P>(a, sb.view, Kp, lane, acc.data());
      else
        for (int n = 0; n < NT; ++n) gemm_rows<1, P>(a, sb.view.at(0, 8 * n), Kp, lane, &acc[n]);
      for (int n = 0; n < NT; ++n)
        for (int i = 0; i < LayoutC::kRegs; ++i) {
          const tile::Elem e = LayoutC::at(lane, i);
          const int r = m0 + e.row, c = 8 * n + e.col;
          if (r < M && c < N) D.v[size_t(r) * N + c] = acc[n].r[i];
        }
    }
  return D;
}

// The same sums as tile_product in the model's order, written as plain loops: per 8-wide k step
// the small terms' instructions first (3xTF32), each adding its 8 exact products one at a time.
template <Precision P> Matrix ordered_reference(const Matrix& A, const Matrix& B, const Matrix& C) {
  const int M = A.rows, K = A.cols, N = B.cols;
  auto hi = [](float x) { return tile::tf32_round(x); };
  auto lo = [](float x) { return tile::tf32_round(x - tile::tf32_round(x)); };
  Matrix D = C;
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) {
      float acc = C(r, c);
      for (int k0 = 0; k0 < K; k0 += 8) {
        const int k1 = std::min(K, k0 + 8);
        if (P == Precision::tf32x3) {
          for (int k = k0; k < k1; ++k) acc = acc + lo(A(r, k)) * hi(B(k, c));
          for (int k = k0; k < k1; ++k) acc = acc + hi(A(r, k)) * lo(B(k, c));
        }
        for (int k = k0; k < k1; ++k) acc = acc + hi(A(r, k)) * hi(B(k, c));
      }
      D.v[size_t(r) * N + c] = acc;
    }
  return D;
}

struct Shape {
  int M, K, N;
};
// Awkward shapes: partial tiles in every dimension, K below and above one step, DM-LSTM's K = 22,
// the layer shapes (40 x 80, 80 x 40) and the weight-gradient shape (K = coordinates).
constexpr Shape kAwkward[] = {{1, 1, 1},   {3, 5, 7},    {17, 9, 8},  {16, 8, 8},  {33, 22, 80},
                              {20, 40, 80}, {31, 80, 40}, {40, 37, 80}, {5, 16, 13}};

TEST(TileMma, WarpGemmEqualsOrderedReferenceExactly) {
  std::mt19937_64 rng(21);
  for (const Shape& s : kAwkward)
    for (const bool ta : {false, true})
      for (const bool tb : {false, true}) {
        SCOPED_TRACE(testing::Message() << s.M << "x" << s.K << "x" << s.N << " ta " << ta << " tb " << tb);
        const Matrix A = make(s.M, s.K, [&](int, int) { return spread(rng); });
        const Matrix B = make(s.K, s.N, [&](int, int) { return spread(rng); });
        const Matrix C = make(s.M, s.N, [&](int, int) { return spread(rng); });
        const Matrix d1 = tile_product<Precision::tf32>(A, B, C, ta, tb);
        const Matrix r1 = ordered_reference<Precision::tf32>(A, B, C);
        const Matrix d3 = tile_product<Precision::tf32x3>(A, B, C, ta, tb);
        const Matrix r3 = ordered_reference<Precision::tf32x3>(A, B, C);
        for (size_t i = 0; i < d1.v.size(); ++i) {
          ASSERT_EQ(d1.v[i], r1.v[i]) << "tf32, element " << i;
          ASSERT_EQ(d3.v[i], r3.v[i]) << "3xtf32, element " << i;
        }
      }
}

// ---- accuracy against float64 ---------------------------------------------------------------------------
// max over elements of |D - exact| / (|c| + sum_k |a_k b_k|).
struct ErrorStats {
  double max_rel = 0.0;
};
ErrorStats measure(const Matrix& D, const Matrix& A, const Matrix& B, const Matrix& C) {
  ErrorStats s;
  for (int r = 0; r < A.rows; ++r)
    for (int c = 0; c < B.cols; ++c) {
      double exact = C(r, c), mag = std::fabs(double(C(r, c)));
      for (int k = 0; k < A.cols; ++k) {
        exact += double(A(r, k)) * double(B(k, c));
        mag += std::fabs(double(A(r, k)) * double(B(k, c)));
      }
      if (mag > 0) s.max_rel = std::max(s.max_rel, std::fabs(double(D(r, c)) - exact) / mag);
    }
  return s;
}
// The plain float32 product (sequential, as cell.hpp's loops), for comparison.
Matrix float_product(const Matrix& A, const Matrix& B, const Matrix& C) {
  Matrix D = C;
  for (int r = 0; r < A.rows; ++r)
    for (int c = 0; c < B.cols; ++c) {
      float acc = C(r, c);
      for (int k = 0; k < A.cols; ++k) acc += A(r, k) * B(k, c);
      D.v[size_t(r) * B.cols + c] = acc;
    }
  return D;
}

// 3xTF32 within float32-level error; plain TF32 at least 30 times worse. The bound 1e-6 is 17
// float32 ulps (2^-24) relative to the sum of |terms|: the split's residues are about 3 * 2^-22,
// the rest is float32 summation over at most 3 x 80 terms, typically far below its worst case.
constexpr double k3xBound = 1e-6;

void check_accuracy(const char* what, const Matrix& A, const Matrix& B, const Matrix& C,
                    bool ta = false, bool tb = false) {
  const ErrorStats e3 = measure(tile_product<Precision::tf32x3>(A, B, C, ta, tb), A, B, C);
  const ErrorStats e1 = measure(tile_product<Precision::tf32>(A, B, C, ta, tb), A, B, C);
  const ErrorStats ef = measure(float_product(A, B, C), A, B, C);
  std::cout << "[ accuracy ] " << what << " [" << A.rows << "x" << A.cols << "].[" << B.rows << "x"
            << B.cols << "]: max |err| / sum|terms|: 3xTF32 " << e3.max_rel << ", TF32 " << e1.max_rel
            << ", float32 (sequential) " << ef.max_rel << "\n";
  EXPECT_LE(e3.max_rel, k3xBound) << what;
  EXPECT_GE(e1.max_rel, 30.0 * e3.max_rel) << what;
}

TEST(TileMma, SplitPrecisionReachesFloat32Accuracy) {
  std::mt19937_64 rng(31);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const Shape& s : kAwkward) {
    if (s.K < 8) continue;  // too few terms for a meaningful ratio
    const Matrix A = make(s.M, s.K, [&](int, int) { return nd(rng); });
    const Matrix B = make(s.K, s.N, [&](int, int) { return nd(rng); });
    const Matrix C = make(s.M, s.N, [&](int, int) { return 0.1f * nd(rng); });
    check_accuracy("normal", A, B, C);
  }
  // Wide dynamic range and cancellation (terms of 2^-6 .. 2^6 of both signs).
  const Matrix A = make(64, 40, [&](int, int) { return spread(rng); });
  const Matrix B = make(40, 80, [&](int, int) { return spread(rng); });
  const Matrix C = make(64, 80, [&](int, int) { return 0.0f; });
  check_accuracy("spread", A, B, C);
}

// The three products of an RNNprop step at its sizes, with its initial weights and inputs in the
// ranges the cell produces (ELU outputs, h in (-1, 1), dgates small).
TEST(TileMma, RnnpropLayerProducts) {
  OptimizerHyper hyper;
  const std::vector<float> w = init_optimizer(hyper, 5).weights;
  using L = RnnpropLayout;
  const int tile_rows = 128, K = 2 * kHidden;
  std::mt19937_64 rng(41);
  std::uniform_real_distribution<float> u11(-1.0f, 1.0f);
  for (const int layer_offset : {L::W1, L::W2}) {
    const int bias_offset = layer_offset == L::W1 ? L::b1 : L::b2;
    const Matrix W = make(K, kGates, [&](int r, int c) { return w[layer_offset + r * kGates + c]; });
    // Inputs [z or h1; h_prev]: z = ELU(pre) in (-1, ~3), h in (-1, 1).
    const Matrix X = make(tile_rows, K, [&](int, int c) {
      const float v = u11(rng);
      return c < kHidden && layer_offset == L::W1 ? (v > 0 ? 3.0f * v : std::exp(v) - 1.0f) : v;
    });
    const Matrix bias = make(tile_rows, kGates, [&](int, int c) { return w[bias_offset + c]; });
    check_accuracy("gates = [input; h] . W + b", X, W, bias);
    // The same gates through cell.hpp's float loop (lstm_cell_forward's order) agree closely.
    const Matrix g3 = tile_product<Precision::tf32x3>(X, W, bias, false, false);
    for (int r = 0; r < tile_rows; ++r) {
      float act[kGates], c_new[kHidden], tc[kHidden], h[kHidden], c_prev[kHidden] = {};
      lstm_cell_forward(&W.v[0], &w[bias_offset], kHidden, &X.v[size_t(r) * K], &X.v[size_t(r) * K + kHidden],
                        c_prev, act, c_new, tc, h);
      for (int u = 0; u < kHidden; ++u)  // sigmoid of the i gate: compare through the nonlinearity
        ASSERT_NEAR(act[u], 1.0f / (1.0f + std::exp(-g3(r, u))), 1e-6f);
    }
    // d[input; h] = dgates . W^T (B = W read transposed: [80 x 40]).
    const Matrix dG = make(tile_rows, kGates, [&](int, int) { return 1e-3f * u11(rng); });
    const Matrix Wt = make(kGates, K, [&](int r, int c) { return W(c, r); });
    const Matrix zero_in = make(tile_rows, K, [](int, int) { return 0.0f; });
    check_accuracy("d[input; h] = dgates . W^T", dG, Wt, zero_in, false, true);
    // dW = X^T . dgates over the tile's coordinates (A = X read transposed: [40 x 128]).
    const Matrix Xt = make(K, tile_rows, [&](int r, int c) { return X(c, r); });
    const Matrix zero_w = make(K, kGates, [](int, int) { return 0.0f; });
    check_accuracy("dW = [input; h]^T . dgates", Xt, dG, zero_w, true, false);
  }
}

}  // namespace
}  // namespace ml2o
