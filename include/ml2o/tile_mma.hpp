// Tile primitives of the v3 kernels (docs/kernels.md): the LSTM layer products on tensor cores,
// written once for the device and for a software model of the instruction on the CPU.
//
// The instruction is mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32: a warp computes
// D[16x8] = A[16x8] . B[8x8] + C[16x8], each lane holding a fixed part of every matrix in
// registers. Which (row, col) a lane's register holds is given by the layout types below (PTX ISA,
// "Matrix Fragments for mma.m16n8k8", the .tf32 tables), never by raw offsets in the callers.
//
// Float32 accuracy from TF32 inputs (10-bit mantissa) by splitting (3xTF32): a = a_hi + a_lo with
// a_hi = tf32(a), a_lo = tf32(a - a_hi), and acc += a_lo b_hi + a_hi b_lo + a_hi b_hi (the dropped
// a_lo b_lo and the residues of the split are about 2^-22 relative to each product).
//
// On a device of compute capability >= 8.0 the warp primitives issue the instruction (inline PTX).
// Everywhere else (the CPU unit tests, the kernel-emulation tests) each lane computes its own
// registers of D with mma_model_lane: it gathers every lane's A and B fragments exactly as those
// lanes would load them, assembles the matrices through the layout types and sums in the model's
// order. So the CPU checks the indexing; it cannot check the hardware's internal summation, which
// the PTX ISA does not specify (the model: products exact, added one at a time in k order, each
// sum rounded to nearest float). Device results may therefore differ from the model in the last
// bits; parity with the CPU reference is asserted within tolerances, never bit for bit.
#pragma once
#include <cstdint>
#include <cstring>

#include "ml2o/hd.hpp"

namespace ml2o::tile {

constexpr int kWarpLanes = 32;

// ---- TF32 rounding ------------------------------------------------------------------------------
// Round to the nearest TF32 value (10 explicit mantissa bits), ties away from zero: the rounding of
// cvt.rna.tf32.f32. Done with integer operations on host and device alike, so both produce the
// same bits with the 13 low bits zero (what the mma reads as a .tf32 operand). Infinities and NaNs
// are returned unchanged; a finite value within half a TF32 ulp of FLT_MAX rounds to infinity.
ML2O_HD float tf32_round(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7f800000u) == 0x7f800000u) return x;  // inf, NaN
  u = (u + 0x1000u) & 0xffffe000u;                  // add half an ulp to the magnitude, truncate
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// ---- fragment layouts ---------------------------------------------------------------------------
// Lane l of the warp: group = l / 4 (0..7), thread_in_group = l % 4 (0..3).
struct Elem {
  int row, col;
};
ML2O_HD int lane_group(int lane) { return lane >> 2; }
ML2O_HD int lane_in_group(int lane) { return lane & 3; }

// A, 16 x 8, row-major operand: a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4).
struct LayoutA {
  static constexpr int kRows = 16, kCols = 8, kRegs = 4;
  static ML2O_HD Elem at(int lane, int reg) {
    return {lane_group(lane) + 8 * (reg & 1), lane_in_group(lane) + 4 * (reg >> 1)};
  }
};
// B, 8 x 8, column operand: b0 (t, g), b1 (t + 4, g).
struct LayoutB {
  static constexpr int kRows = 8, kCols = 8, kRegs = 2;
  static ML2O_HD Elem at(int lane, int reg) { return {lane_in_group(lane) + 4 * reg, lane_group(lane)}; }
};
// C and D, 16 x 8: c0 (g, 2t), c1 (g, 2t + 1), c2 (g + 8, 2t), c3 (g + 8, 2t + 1).
struct LayoutC {
  static constexpr int kRows = 16, kCols = 8, kRegs = 4;
  static ML2O_HD Elem at(int lane, int reg) {
    return {lane_group(lane) + 8 * (reg >> 1), 2 * lane_in_group(lane) + (reg & 1)};
  }
};

// One lane's registers of a fragment with layout L.
template <class L> struct Frag {
  float r[L::kRegs];
};
using FragA = Frag<LayoutA>;
using FragB = Frag<LayoutB>;
using FragC = Frag<LayoutC>;

// A strided view of a matrix in memory: element (r, c) at p[r * rs + c * cs]. A row-major matrix
// has (rs, cs) = (ld, 1); its transpose is the same memory with (1, ld).
struct MatView {
  const float* p;
  int rs, cs;
  ML2O_HD float operator()(int r, int c) const { return p[r * rs + c * cs]; }
  ML2O_HD MatView at(int r0, int c0) const { return {p + r0 * rs + c0 * cs, rs, cs}; }
};

// This lane's fragment of the tile whose top-left element is m(0, 0).
template <class L> ML2O_HD Frag<L> load_frag(const MatView& m, int lane) {
  Frag<L> f;
  for (int i = 0; i < L::kRegs; ++i) {
    const Elem e = L::at(lane, i);
    f.r[i] = m(e.row, e.col);
  }
  return f;
}

// x = hi + lo with hi = tf32(x), lo = tf32(x - hi) (x - hi is exact in float).
template <class L> ML2O_HD void split_tf32(const Frag<L>& x, Frag<L>& hi, Frag<L>& lo) {
  for (int i = 0; i < L::kRegs; ++i) {
    hi.r[i] = tf32_round(x.r[i]);
    lo.r[i] = tf32_round(x.r[i] - hi.r[i]);
  }
}
template <class L> ML2O_HD Frag<L> round_tf32(const Frag<L>& x) {
  Frag<L> y;
  for (int i = 0; i < L::kRegs; ++i) y.r[i] = tf32_round(x.r[i]);
  return y;
}

// ---- the instruction and its software model ------------------------------------------------------
// The model reads only the TF32 bits of A and B (the 13 low mantissa bits are ignored, as the
// instruction's .tf32 operands define); products of TF32 values are exact in float.
ML2O_HD float tf32_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7f800000u) != 0x7f800000u) u &= 0xffffe000u;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// D = A . B + C for lane `lane`'s registers, from every lane's A and B fragments (the warp's
// registers) and this lane's C. Summation: c + p0 + p1 + ... + p7 (p_k = A[row][k] B[k][col]),
// left to right in float.
inline void mma_model_lane(const FragA (&a)[kWarpLanes], const FragB (&b)[kWarpLanes], int lane, FragC& c) {
  float A[LayoutA::kRows][LayoutA::kCols], B[LayoutB::kRows][LayoutB::kCols];
  for (int l = 0; l < kWarpLanes; ++l) {
    for (int i = 0; i < LayoutA::kRegs; ++i) {
      const Elem e = LayoutA::at(l, i);
      A[e.row][e.col] = tf32_bits(a[l].r[i]);
    }
    for (int i = 0; i < LayoutB::kRegs; ++i) {
      const Elem e = LayoutB::at(l, i);
      B[e.row][e.col] = tf32_bits(b[l].r[i]);
    }
  }
  for (int i = 0; i < LayoutC::kRegs; ++i) {
    const Elem e = LayoutC::at(lane, i);
    float acc = c.r[i];
    for (int k = 0; k < LayoutA::kCols; ++k) {
      const float p = A[e.row][k] * B[k][e.col];  // exact
      acc = acc + p;
    }
    c.r[i] = acc;
  }
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define ML2O_TILE_MMA_PTX 1
// The hardware instruction (every lane of the warp must execute it, converged).
__device__ __forceinline__ void mma_tf32(const FragA& a, const FragB& b, FragC& c) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c.r[0]), "+f"(c.r[1]), "+f"(c.r[2]), "+f"(c.r[3])
      : "r"(__float_as_uint(a.r[0])), "r"(__float_as_uint(a.r[1])), "r"(__float_as_uint(a.r[2])),
        "r"(__float_as_uint(a.r[3])), "r"(__float_as_uint(b.r[0])), "r"(__float_as_uint(b.r[1])));
}
#endif

// ---- warp tile products ----------------------------------------------------------------------------
enum class Precision : int {
  tf32 = 1,    // one product of TF32-rounded inputs (about 2^-11 relative per product)
  tf32x3 = 3,  // split precision: float32-level accuracy, three instructions per tile
};

// acc[n] (this lane's registers of the 16 x 8 tile n) += A[16 x K] . B[K x 8n .. 8n + 7] for
// n < NT, with A and B read from memory (shared memory in the kernels). K must be a multiple of 8
// (the callers pad with zeros). Per 8-wide k step and tile: tf32x3 adds a_lo b_hi, then a_hi b_lo,
// then a_hi b_hi, each an instruction (small terms first, as they are the least significant).
// Every lane of the warp calls it with the same A, B, K; on the device it must be converged.
template <int NT, Precision P = Precision::tf32x3>
ML2O_HD void warp_gemm(const MatView& A, const MatView& B, int K, int lane, FragC (&acc)[NT]) {
#if defined(ML2O_TILE_MMA_PTX)
  for (int k0 = 0; k0 < K; k0 += 8) {
    FragA a_hi, a_lo;
    split_tf32(load_frag<LayoutA>(A.at(0, k0), lane), a_hi, a_lo);
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      FragB b_hi, b_lo;
      split_tf32(load_frag<LayoutB>(B.at(k0, 8 * n), lane), b_hi, b_lo);
      if constexpr (P == Precision::tf32x3) {
        mma_tf32(a_lo, b_hi, acc[n]);
        mma_tf32(a_hi, b_lo, acc[n]);
      }
      mma_tf32(a_hi, b_hi, acc[n]);
    }
  }
#else
  // The software model: this lane gathers the whole warp's fragments (each as its lane loads it).
  for (int k0 = 0; k0 < K; k0 += 8) {
    FragA a_hi[kWarpLanes], a_lo[kWarpLanes];
    for (int l = 0; l < kWarpLanes; ++l) split_tf32(load_frag<LayoutA>(A.at(0, k0), l), a_hi[l], a_lo[l]);
    for (int n = 0; n < NT; ++n) {
      FragB b_hi[kWarpLanes], b_lo[kWarpLanes];
      for (int l = 0; l < kWarpLanes; ++l)
        split_tf32(load_frag<LayoutB>(B.at(k0, 8 * n), l), b_hi[l], b_lo[l]);
      if constexpr (P == Precision::tf32x3) {
        mma_model_lane(a_lo, b_hi, lane, acc[n]);
        mma_model_lane(a_hi, b_lo, lane, acc[n]);
      }
      mma_model_lane(a_hi, b_hi, lane, acc[n]);
    }
  }
#endif
}

// ---- the LSTM products as tile products (row-vector convention of cell.hpp) ----------------------
// For a tile of coordinates (rows) and an LSTM layer W [K x 80] (rows [input; h], gate columns):
//   gates  [tile x 80] = X [tile x K] . W               A = X (row-major), B = W (row-major)
//   d[input; h] [tile x K] = dgates [tile x 80] . W^T   A = dgates, B = W seen transposed
//   dW [K x 80] = X^T . dgates                          A = X seen transposed, B = dgates
// Each is warp_gemm with the views below; a warp covers 16 rows of the result per call.
ML2O_HD MatView row_major(const float* p, int ld) { return {p, ld, 1}; }
ML2O_HD MatView transposed(const float* p, int ld) { return {p, 1, ld}; }

}  // namespace ml2o::tile
