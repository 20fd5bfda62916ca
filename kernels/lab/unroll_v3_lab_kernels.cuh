// LAB: v3 forward kernel, UNVERIFIED ON HARDWARE (docs/kernels.md). Never used by default: only
// ML2O_CUDA_KERNEL=v3-lab (or cuda_set_kernel_variant(3)) selects it, and only for the forward
// pass; the backward of that variant is v2's (it recomputes from the same 84-float tape).
// Checked on the CPU by the kernel-emulation tests (tests/test_cuda.cpp) with the software model of
// mma.sync (include/ml2o/tile_mma.hpp); compiled for sm_90 by nvcc. Whether it is correct or fast
// on a GPU has not been seen.
//
// What changes against v2's forward (unroll_v2_kernels.cuh; arguments, geometry, tape, partials,
// barriers and the per-coordinate parts are v2's): the two LSTM layer products run on tensor cores
// as split-precision 3xTF32 tile products (tile::warp_gemm), and the (coordinate, unit) cells a
// thread owns follow the mma accumulator layout instead of v2's lane/warp split.
//
//   Warp w owns coordinates 32w .. 32w + 31 of the block as two 16-row m-tiles. A layer is
//   gates[16 x 80] = [input; h][16 x 40] . W'[40 x 80] + b' per m-tile: 10 n-tiles of 8 columns,
//   5 k-steps, 3 instructions each. W' is the layer's W with its columns permuted "gate-paired":
//   n-tile 2p holds (i, j) and n-tile 2p + 1 holds (f, o) of units 4p .. 4p + 3, so that the lane
//   (group g, thread t) holds all four gates of unit 4p + t for rows g and g + 8 in its own
//   accumulator registers: the cell runs in registers with no exchange between lanes.
//   A thread owns rows {g, g + 8} of both m-tiles (4 coordinates) x units {t, t + 4, ..., t + 16}.
//
//   DM-LSTM's layer 1 has 22 input rows ([u0, u1; h1]): its W' is stored as 40 rows aligned with
//   the rows[] columns 0..39 (rows 0..17 zero; those columns of rows[] stay zero), so both archs
//   run the same K = 40 product.
#pragma once
#include "../block_optimizee.cuh"
#include "../launch.cuh"
#include "../unroll_v2_kernels.cuh"  // v2's tile constants (rows[] layout) and backward
#include "ml2o/tile_mma.hpp"

namespace ml2o::cuda {
namespace {

constexpr int kV3Threads = kV2Threads;  // 4 warps, one 128-coordinate tile, as v2
constexpr int kV3Rows = 4;              // coordinates per thread: rows g, g + 8 of two m-tiles
constexpr int kV3Units = 5;             // units per thread: t + 4p
constexpr int kV3K = 2 * kHidden;       // product depth of both layers (multiple of 8)
constexpr int kV3NTiles = kGates / 8;   // 10
// Shared weights: W1' [40][80] | b1' [80] | W2' [40][80] | b2' [80] | W_in|b_in [60] | W_out|b_out [21]
constexpr int kV3W1 = 0, kV3B1 = kV3W1 + kV3K * kGates, kV3W2 = kV3B1 + kGates,
              kV3B2 = kV3W2 + kV3K * kGates, kV3Win = kV3B2 + kGates, kV3Wout = kV3Win + 3 * kHidden;
constexpr int kV3WFloats = (kV3Wout + kHidden + 1 + 3) / 4 * 4;  // 6644
constexpr int kV3ForwardFloats = kV3WFloats + kV3Threads * kV2RowStride + 3 * kV3Threads;
static_assert(kV3K % 8 == 0 && kGates % 8 == 0 && kV3NTiles == 2 * kV3Units);

// Permuted column q' -> (unit, gate): n = q' / 8, within the tile c = q' % 8; lane_in_group t = c / 2.
ML2O_HD int v3_unit(int qp) { return 4 * (qp / 16) + (qp % 8) / 2; }
ML2O_HD int v3_gate(int qp) { return 2 * ((qp / 8) % 2) + qp % 2; }
ML2O_HD int v3_orig_col(int qp) { return v3_gate(qp) * kHidden + v3_unit(qp); }

// The block's coordinate of the thread's row i (0..3) and its unit of slot p (0..4).
ML2O_HD int v3_row(int warp, int lane, int i) {
  return 32 * warp + 16 * (i >> 1) + tile::lane_group(lane) + 8 * (i & 1);
}
ML2O_HD int v3_unit_of(int lane, int p) { return 4 * p + tile::lane_in_group(lane); }

__device__ __forceinline__ void v3_load_weights(const float* w, Arch arch, float* wsm) {
  const bool rnn = arch == Arch::rnnprop;
  const int oW1 = rnn ? RnnpropLayout::W1 : DmlstmLayout::W1, ob1 = rnn ? RnnpropLayout::b1 : DmlstmLayout::b1;
  const int oW2 = rnn ? RnnpropLayout::W2 : DmlstmLayout::W2, ob2 = rnn ? RnnpropLayout::b2 : DmlstmLayout::b2;
  const int oWout = rnn ? RnnpropLayout::W_out : DmlstmLayout::W_out;
  const int shift = rnn ? 0 : kV3K - (2 + kHidden);  // DM-LSTM's 22 rows end at row 39
  for (int i = threadIdx.x; i < kV3K * kGates; i += blockDim.x) {
    const int k = i / kGates, col = v3_orig_col(i % kGates), src = k - shift;
    wsm[kV3W1 + i] = src >= 0 ? w[oW1 + src * kGates + col] : 0.0f;
    wsm[kV3W2 + i] = w[oW2 + k * kGates + col];
  }
  for (int i = threadIdx.x; i < kGates; i += blockDim.x) {
    wsm[kV3B1 + i] = w[ob1 + v3_orig_col(i)];
    wsm[kV3B2 + i] = w[ob2 + v3_orig_col(i)];
  }
  for (int i = threadIdx.x; i < 3 * kHidden; i += blockDim.x)
    wsm[kV3Win + i] = rnn ? w[RnnpropLayout::W_in + i] : 0.0f;
  for (int i = threadIdx.x; i < kHidden + 1; i += blockDim.x) wsm[kV3Wout + i] = w[oWout + i];
}

// One layer for the warp's two m-tiles: in = the rows[] columns of the layer input ([input; h],
// 40 wide), W = W' and b = b' in shared memory. On return act[i][p] holds the four gate
// activations (sigmoid i, tanh j, sigmoid(f + 1), sigmoid o) of row i, unit slot p.
__device__ __forceinline__ void v3_layer(const float* rows, int col0, const float* W, const float* b,
                                         int warp, int lane, float (&act)[kV3Rows][kV3Units][4]) {
  const int t = tile::lane_in_group(lane);
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
    tile::FragC acc[kV3NTiles];
#pragma unroll
    for (int n = 0; n < kV3NTiles; ++n) {
      const float b0 = b[8 * n + 2 * t], b1 = b[8 * n + 2 * t + 1];
      acc[n].r[0] = b0;
      acc[n].r[1] = b1;
      acc[n].r[2] = b0;
      acc[n].r[3] = b1;
    }
    const tile::MatView A = tile::row_major(rows + (32 * warp + 16 * mt) * kV2RowStride + col0, kV2RowStride);
    tile::warp_gemm<kV3NTiles, tile::Precision::tf32x3>(A, tile::row_major(W, kGates), kV3K, lane, acc);
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int p = 0; p < kV3Units; ++p) {
        float* g = act[2 * mt + h][p];
        g[0] = sigmoid(acc[2 * p].r[2 * h]);
        g[1] = tanh(acc[2 * p].r[2 * h + 1]);
        g[2] = sigmoid(acc[2 * p + 1].r[2 * h] + 1.0f);
        g[3] = sigmoid(acc[2 * p + 1].r[2 * h + 1]);
      }
  }
}

// ---- forward (v2's, with the layer products above) -------------------------------------------------
// Shared memory: wsm[kV3WFloats] | rows[128 * kV2RowStride] | x[128] | r[128] | obj[128]
__device__ __forceinline__ void unroll_forward_v3_lab_block(const UnrollArgs& a, int64_t blk) {
  extern __shared__ float smem[];
  float* wsm = smem;
  float* rows = wsm + kV3WFloats;
  float* x_sh = rows + kV3Threads * kV2RowStride;
  float* r_sh = x_sh + kV3Threads;
  float* obj_sh = r_sh + kV3Threads;
  const TaskView<float>& task = a.task;
  const int d = task.dim;
  const BlockPlace pl = block_place(task.instances, d, a.ipb, blk);
  const int64_t C = task.instances * d;
  const int64_t cbase = pl.n0 * d;
  const int64_t c = cbase + pl.tid;
  const int64_t n = pl.n0 + pl.li;
  const bool matrix = has_matrix(task.family);
  const Arch arch = a.hyper.arch;
  const bool rnn = arch == Arch::rnnprop;
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;

  v3_load_weights(a.w, arch, wsm);
  for (int i = threadIdx.x; i < kV3Threads * kV2RowStride; i += blockDim.x) rows[i] = 0.0f;
  __syncthreads();  // rows zeroed before the owners write their state

  float m = 0.0f, v = 0.0f;
  if (pl.active) {
    m = a.coord[c].m;
    v = a.coord[c].v;
    x_sh[pl.tid] = a.x[c];
  }
  float c1[kV3Rows][kV3Units], c2[kV3Rows][kV3Units];
#pragma unroll
  for (int i = 0; i < kV3Rows; ++i)
#pragma unroll
    for (int p = 0; p < kV3Units; ++p) {
      const int cc = v3_row(warp, lane, i), u = v3_unit_of(lane, p);
      c1[i][p] = c2[i][p] = 0.0f;
      if (cc < pl.nact) {
        const CoordState<float>& s = a.coord[cbase + cc];
        c1[i][p] = s.c1[u];
        c2[i][p] = s.c2[u];
        rows[cc * kV2RowStride + kV2H1P + u] = s.h1[u];
        rows[cc * kV2RowStride + kV2H2P + u] = s.h2[u];
      }
    }
  const float* xn = x_sh + pl.li * d;
  const float* rn = r_sh + pl.li * d;
  for (int t = 0; t <= a.T; ++t) {
    __syncthreads();  // x of step t and the previous step's rows visible
    if (matrix && pl.active) r_sh[pl.tid] = residual_row(task, n, xn, pl.j, true);
    __syncthreads();  // residuals visible
    float g = 0.0f;
    if (pl.active) {
      g = coord_gradient(task, n, pl.j, xn, rn, true);
      if (pl.j == 0) obj_sh[pl.li] = block_instance_objective(task, xn, rn);
    }
    __syncthreads();  // objectives visible; every read of x_sh and r_sh for step t is done
    if (pl.tid == 0) {
      float s = 0.0f;
      for (int i = 0; i < pl.nin; ++i) s += obj_sh[i];
      a.partial[(a.loss_row0 + t) * a.blocks + blk] = s;
    }
    if (t == a.T) {
      if (pl.active && a.gT) a.gT[c] = g;
      break;
    }
    float* rec = a.tape ? a.tape + static_cast<int64_t>(t) * kTapeFields * C : nullptr;
    if (pl.active) {
      if (rec) {
        rec[kTapeG * C + c] = g;
        rec[kTapeX * C + c] = x_sh[pl.tid];
        rec[kTapeM * C + c] = m;
        rec[kTapeV * C + c] = v;
      }
      float* row = rows + pl.tid * kV2RowStride;
      float u[2];
      if (rnn) {
        float bc;
        rnnprop_features(g, a.k0 + t, m, v, bc, u);
        for (int h = 0; h < kHidden; ++h) {
          const float pre = wsm[kV3Win + 2 * kHidden + h] + u[0] * wsm[kV3Win + h] +
                            u[1] * wsm[kV3Win + kHidden + h];
          row[kV2Z + h] = pre > 0.0f ? pre : exp(pre) - 1.0f;  // ELU
        }
      } else {
        dmlstm_features(g, static_cast<float>(a.hyper.dm_p), u);
        row[kV2H1P - 2] = u[0];
        row[kV2H1P - 1] = u[1];
      }
    }
    if (rec) {
#pragma unroll
      for (int i = 0; i < kV3Rows; ++i)
#pragma unroll
        for (int p = 0; p < kV3Units; ++p) {
          const int cc = v3_row(warp, lane, i), u = v3_unit_of(lane, p);
          if (cc < pl.nact) {
            const int64_t cg = cbase + cc;
            rec[(kTapeH1 + u) * C + cg] = rows[cc * kV2RowStride + kV2H1P + u];
            rec[(kTapeC1 + u) * C + cg] = c1[i][p];
            rec[(kTapeH2 + u) * C + cg] = rows[cc * kV2RowStride + kV2H2P + u];
            rec[(kTapeC2 + u) * C + cg] = c2[i][p];
          }
        }
    }
    __syncthreads();  // layer-1 inputs visible
    float act[kV3Rows][kV3Units][4];
    v3_layer(rows, 0, wsm + kV3W1, wsm + kV3B1, warp, lane, act);
#pragma unroll
    for (int i = 0; i < kV3Rows; ++i)
#pragma unroll
      for (int p = 0; p < kV3Units; ++p) {
        const float* q = act[i][p];
        c1[i][p] = q[2] * c1[i][p] + q[0] * q[1];
        rows[v3_row(warp, lane, i) * kV2RowStride + kV2H1 + v3_unit_of(lane, p)] = tanh(c1[i][p]) * q[3];
      }
    __syncthreads();  // h1 visible
    v3_layer(rows, kV2H1, wsm + kV3W2, wsm + kV3B2, warp, lane, act);
    __syncthreads();  // every read of h1 / h2_prev done: they can be replaced
#pragma unroll
    for (int i = 0; i < kV3Rows; ++i)
#pragma unroll
      for (int p = 0; p < kV3Units; ++p) {
        const float* q = act[i][p];
        c2[i][p] = q[2] * c2[i][p] + q[0] * q[1];
        float* row = rows + v3_row(warp, lane, i) * kV2RowStride;
        const int u = v3_unit_of(lane, p);
        const float h2 = tanh(c2[i][p]) * q[3];
        row[kV2H2 + u] = h2;
        row[kV2H2P + u] = h2;
        row[kV2H1P + u] = row[kV2H1 + u];  // own element
      }
    __syncthreads();  // h2 visible
    if (pl.active) {
      const float* row = rows + pl.tid * kV2RowStride;
      float pre = wsm[kV3Wout + kHidden];
      for (int h = 0; h < kHidden; ++h) pre += row[kV2H2 + h] * wsm[kV3Wout + h];
      x_sh[pl.tid] += rnn ? static_cast<float>(a.hyper.output_scale) * tanh(pre)
                          : static_cast<float>(a.hyper.dm_scale) * pre;
    }
  }
  if (pl.active) {
    a.x[c] = x_sh[pl.tid];
    a.coord[c].m = m;
    a.coord[c].v = v;
  }
#pragma unroll
  for (int i = 0; i < kV3Rows; ++i)
#pragma unroll
    for (int p = 0; p < kV3Units; ++p) {
      const int cc = v3_row(warp, lane, i), u = v3_unit_of(lane, p);
      if (cc < pl.nact) {
        CoordState<float>& s = a.coord[cbase + cc];
        s.h1[u] = rows[cc * kV2RowStride + kV2H1P + u];
        s.c1[u] = c1[i][p];
        s.h2[u] = rows[cc * kV2RowStride + kV2H2P + u];
        s.c2[u] = c2[i][p];
      }
    }
}

__global__ void __launch_bounds__(kV3Threads) unroll_forward_v3_lab_kernel(const BatchArgs b) {
  const ItemBlock ib = locate_block(b, blockIdx.x);
  const UnrollArgs& a = b.items[ib.slot];
  unroll_forward_v3_lab_block(a, ib.block);
}

}  // namespace
}  // namespace ml2o::cuda
