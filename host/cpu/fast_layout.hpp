// Layout and kernel table of the fast float unroll (fast_unroll.hpp). Included by the per-ISA
// kernel files, so it declares plain data only: nothing here may be emitted as code.
#pragma once
#include <cstdint>

#include "ml2o/cell.hpp"

namespace ml2o::cpu_fast {

constexpr int kTile = 16;       // coordinates per tile: the lanes of every row below
constexpr int kMaxGroups = 64;  // bounds the partial gradients kept (kMaxGroups x weights)

// Rows (of kTile floats) of one tile's recurrent state, and of its adjoint.
namespace st {
constexpr int m = 0, v = 1, h1 = 2, c1 = h1 + kHidden, h2 = c1 + kHidden, c2 = h2 + kHidden;
constexpr int rows = c2 + kHidden;
}  // namespace st

// Rows of one tile-step of the tape. in1 = [LSTM1 input (in_dim rows); h1_prev], in2 = [h1; h2_prev]
// (each the rows of its LSTM's GEMM). The backward pass overwrites act1/act2 with the gate
// gradients, zpre with its gradient and out with the output layer's, which the weight-gradient
// GEMMs then read.
namespace rec {
constexpr int g = 0, m = 1, v = 2, u = 3 /* 2 rows */, out = 5, zpre = 6;
constexpr int in1 = zpre + kHidden /* 40 rows: in_dim + kHidden used */;
constexpr int c1p = in1 + 2 * kHidden, act1 = c1p + kHidden, tc1 = act1 + kGates;
constexpr int in2 = tc1 + kHidden /* 40 rows: h1, h2_prev */;
constexpr int c2p = in2 + 2 * kHidden, act2 = c2p + kHidden, tc2 = act2 + kGates, h2 = tc2 + kHidden;
constexpr int rows = h2 + kHidden;
}  // namespace rec

// What the kernels need of the optimizer: weights and the hyper-parameters as float.
struct Net {
  Arch arch = Arch::rnnprop;
  int in_dim = kHidden;  // LSTM1 input rows: kHidden (RNNprop) or 2 (DM-LSTM)
  const float* w = nullptr;
  float out_scale = 0.01f;  // RNNprop: optimizer.output_scale (the update is out_scale x tanh)
  float dm_p = 10.f, dm_scale = 0.1f, exp_neg_p = 0.f, exp_p = 0.f;  // DM-LSTM
};

// The per-tile kernels of one instruction set. Pointers are to kTile-float rows, 64-byte aligned.
struct Kernels {
  const char* isa;
  // One optimizer step of a tile: reads g (1 row) and the state, writes the tape record and the
  // new state, and the update delta (1 row). bc = 1 - beta^k (RNNprop).
  void (*forward)(const Net& net, float bc, const float* g, float* state, float* record,
                  float* delta);
  // Backward of one tile-step: d_delta (1 row) is the adjoint of the update; adj (st:: rows) is
  // replaced by the adjoint of the state before the step; with want_dg, dg (1 row) receives the
  // adjoint of g. The record's gradient rows are filled for weight_grad.
  void (*backward)(const Net& net, float bc, float* record, float* adj, const float* d_delta,
                   bool want_dg, float* dg);
  // dw += the weight gradient of n records (after their backward): [inputs] x [gate gradients]
  // summed over records and lanes.
  void (*weight_grad)(const Net& net, const float* records, int64_t n, float* dw);
};

const Kernels& kernels_generic();
const Kernels& kernels_avx2();    // isa "" where not built (not x86-64)
const Kernels& kernels_avx512();

}  // namespace ml2o::cpu_fast
