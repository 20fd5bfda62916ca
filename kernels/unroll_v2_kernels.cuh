// Unroll kernels, variant v2 (launched from unroll.cu; the CPU emulation test includes this header
// as it does unroll_kernels.cuh). Same arguments, geometry, tape and per-block partial layout as v1;
// only the way a block computes its tile differs.
//
// "Fully fused" in the tiny-cuda-nn sense: a block (always kV2Threads = 128 threads) owns the tile
// of its <= 128 coordinates (whole instances, as v1). Per step, each LSTM layer is a small GEMM
// [tile x K] . [K x 80] computed cooperatively: warp w owns hidden units 5w..5w+4, lane l owns the
// coordinates l, l+32, l+64, l+96, so a thread holds a 4 coordinates x 5 units x 4 gates register
// tile and runs the cell nonlinearity on it in registers. Operands come from shared memory: the
// tile's layer inputs rows[128][kV2RowStride] and the layer weights re-laid out gate-interleaved
// ([k][unit * 4 + gate]) so one thread's 20 weights of a k are 5 float4 loads.
//
// Backward: recompute the step from v1's 84-float tape, layer-1 activations kept in a per-thread
// shared-memory slot, layer-2 activations in registers. The tile's dgates go to dg[128][84]; one
// phase computes the transposed product W . dgates (owner-mapped: the thread that owns (coordinate,
// unit) gets its dh) and the weight-gradient outer product (each thread owns a 5 x 5 tile of the
// layer's weight block, sums the coordinates in coordinate order and adds once into dw in shared
// memory: one owner per weight, fixed order, no atomics), then per-block partials as v1.
//
// Only geometries with blockDim <= 128 (d <= 128) have a v2 kernel; the batch plan runs v1 for the
// others. Batched like v1: a block finds its item in the block table (unroll_plan.hpp).
#pragma once
#include "block_optimizee.cuh"
#include "launch.cuh"

namespace ml2o::cuda {
namespace {

constexpr int kV2Threads = 128;        // threads per block, and the largest tile
static_assert(kV2Threads == kSmallThreads, "the batch plan launches v2 groups with kSmallThreads");
constexpr int kV2Units = 5;            // hidden units per warp (4 warps x 5 = kHidden)
constexpr int kV2Coords = 4;           // coordinates per thread (lane + 32 i)
constexpr int kV2RowStride = 101;      // odd: the lanes' coordinate rows fall in distinct banks
constexpr int kV2Z = 0, kV2H1P = 20, kV2H1 = 40, kV2H2P = 60, kV2H2 = 80;  // rows' columns
constexpr int kV2DgStride = 84;        // a multiple of 4 (float4 rows) and conflict-free per 8 lanes
constexpr int kV2Slots = kV2Coords * kV2Units;  // (coordinate, unit) pairs a thread owns
// Weights in shared memory: layer 1 and 2 interleaved, each [(rows) + bias][80], then W_in|b_in,
// W_out|b_out in their original layout.
constexpr int kV2L1 = 0;
constexpr int kV2L2Rnnprop = (kHidden + kHidden + 1) * kGates;     // 3280
constexpr int kV2L2Dmlstm = (2 + kHidden + 1) * kGates;            // 1840
constexpr int kV2WFloats = 2 * kV2L2Rnnprop + 3 * kHidden + kHidden + 1 + 3;  // 6644 (16-byte multiple)
static_assert(kV2WFloats % 4 == 0 && kV2L2Rnnprop % 4 == 0 && kV2L2Dmlstm % 4 == 0);
static_assert(kV2Units * (kV2Threads / 32) == kHidden && kV2Coords * 32 == kV2Threads);

struct V2Layout {
  int in1;    // layer-1 input rows (RNNprop 20, DM-LSTM 2)
  int off1;   // layer-1 input's first column in rows (z at 0; DM-LSTM's u at 18, 19)
  int l2;     // layer 2's offset in the shared weights
  int win;    // W_in|b_in offset (RNNprop)
  int wout;   // W_out|b_out offset
  int oW1, oW2, oWin, oWout;  // offsets in the flat weight vector
};

__device__ __forceinline__ V2Layout v2_layout(Arch arch) {
  V2Layout L;
  if (arch == Arch::rnnprop) {
    L.in1 = kHidden;
    L.off1 = kV2Z;
    L.l2 = kV2L2Rnnprop;
    L.oW1 = RnnpropLayout::W1;
    L.oW2 = RnnpropLayout::W2;
    L.oWin = RnnpropLayout::W_in;
    L.oWout = RnnpropLayout::W_out;
  } else {
    L.in1 = 2;
    L.off1 = kV2H1P - 2;
    L.l2 = kV2L2Dmlstm;
    L.oW1 = DmlstmLayout::W1;
    L.oW2 = DmlstmLayout::W2;
    L.oWin = 0;
    L.oWout = DmlstmLayout::W_out;
  }
  L.win = L.l2 + kV2L2Rnnprop;
  L.wout = L.win + 3 * kHidden;
  return L;
}

// Original flat index of interleaved column qi = unit * 4 + gate (gate columns are gate * 20 + unit).
__device__ __forceinline__ int v2_orig_col(int qi) { return (qi & 3) * kHidden + (qi >> 2); }

// Loads the weights into the shared layout (every thread; the caller synchronises).
__device__ __forceinline__ void v2_load_weights(const float* w, const V2Layout& L, Arch arch,
                                                float* wsm) {
  const int n1 = (L.in1 + kHidden + 1) * kGates, n2 = (2 * kHidden + 1) * kGates;
  for (int i = threadIdx.x; i < n1; i += blockDim.x)
    wsm[kV2L1 + i] = w[L.oW1 + (i / kGates) * kGates + v2_orig_col(i % kGates)];
  for (int i = threadIdx.x; i < n2; i += blockDim.x)
    wsm[L.l2 + i] = w[L.oW2 + (i / kGates) * kGates + v2_orig_col(i % kGates)];
  for (int i = threadIdx.x; i < 3 * kHidden; i += blockDim.x)
    wsm[L.win + i] = arch == Arch::rnnprop ? w[L.oWin + i] : 0.0f;
  for (int i = threadIdx.x; i < kHidden + 1; i += blockDim.x) wsm[L.wout + i] = w[L.oWout + i];
}

// acc[i][j][g] = bias + sum_k in[coord_i][k] * W[k][unit_j, g]: the layer's gate pre-activations
// for the thread's tile, summed in k order as lstm_cell_forward does.
__device__ __forceinline__ void v2_gates(const float* W, int K, const float* in, int lane, int warp,
                                         float (&acc)[kV2Coords][kV2Units][4]) {
  const float4* bias = reinterpret_cast<const float4*>(W + K * kGates) + kV2Units * warp;
#pragma unroll
  for (int j = 0; j < kV2Units; ++j) {
    const float4 b = bias[j];
#pragma unroll
    for (int i = 0; i < kV2Coords; ++i) {
      acc[i][j][0] = b.x;
      acc[i][j][1] = b.y;
      acc[i][j][2] = b.z;
      acc[i][j][3] = b.w;
    }
  }
  for (int k = 0; k < K; ++k) {
    float a[kV2Coords];
#pragma unroll
    for (int i = 0; i < kV2Coords; ++i) a[i] = in[(32 * i + lane) * kV2RowStride + k];
    const float4* wr = reinterpret_cast<const float4*>(W + k * kGates) + kV2Units * warp;
#pragma unroll
    for (int j = 0; j < kV2Units; ++j) {
      const float4 wv = wr[j];
#pragma unroll
      for (int i = 0; i < kV2Coords; ++i) {
        acc[i][j][0] += a[i] * wv.x;
        acc[i][j][1] += a[i] * wv.y;
        acc[i][j][2] += a[i] * wv.z;
        acc[i][j][3] += a[i] * wv.w;
      }
    }
  }
}

// Gate nonlinearities in place: (sigmoid i, tanh j, sigmoid(f + 1), sigmoid o), as lstm_cell_forward.
__device__ __forceinline__ void v2_activate(float (&g)[4]) {
  g[0] = sigmoid(g[0]);
  g[1] = tanh(g[1]);
  g[2] = sigmoid(g[2] + 1.0f);
  g[3] = sigmoid(g[3]);
}

// Owner phase of a transposed product and the weight-gradient outer product of one layer, reading
// dg[128][84] (interleaved gate columns) and the layer input rows[c][col0 .. col0 + nrows - 1]:
//   out0[i][j] = sum_q W[r0 + unit_j][q] dg[c_i][q], out1 likewise for row r1 + unit_j
//   dw[layer (r, q)] += sum_{c < nact} rows[c][col0 + r] dg[c][q] (and the bias row: sum dg)
__device__ __forceinline__ void v2_layer_backward(const float* W, int r0, int r1, bool want0,
                                                  const float* rows, int col0, int nrows,
                                                  const float* dg, int nact, int lane, int warp,
                                                  float* dw, int oW, float (&out0)[kV2Coords][kV2Units],
                                                  float (&out1)[kV2Coords][kV2Units]) {
#pragma unroll
  for (int i = 0; i < kV2Coords; ++i)
#pragma unroll
    for (int j = 0; j < kV2Units; ++j) out0[i][j] = out1[i][j] = 0.0f;
  for (int ub = 0; ub < kHidden; ++ub) {
    float4 dv[kV2Coords];
#pragma unroll
    for (int i = 0; i < kV2Coords; ++i)
      dv[i] = reinterpret_cast<const float4*>(dg + (32 * i + lane) * kV2DgStride)[ub];
#pragma unroll
    for (int j = 0; j < kV2Units; ++j) {
      const int u = kV2Units * warp + j;
      const float4 w1 = reinterpret_cast<const float4*>(W + (r1 + u) * kGates)[ub];
#pragma unroll
      for (int i = 0; i < kV2Coords; ++i)
        out1[i][j] += w1.x * dv[i].x + w1.y * dv[i].y + w1.z * dv[i].z + w1.w * dv[i].w;
      if (want0) {
        const float4 w0 = reinterpret_cast<const float4*>(W + (r0 + u) * kGates)[ub];
#pragma unroll
        for (int i = 0; i < kV2Coords; ++i)
          out0[i][j] += w0.x * dv[i].x + w0.y * dv[i].y + w0.z * dv[i].z + w0.w * dv[i].w;
      }
    }
  }
  // Outer product: lane % 8 picks 5 rows, lane / 8 + 4 warp picks 5 interleaved columns.
  const int rg = lane % 8, cg = lane / 8 + 4 * warp;
  float acc[5][5], bacc[5];
#pragma unroll
  for (int a = 0; a < 5; ++a) {
    bacc[a] = 0.0f;
#pragma unroll
    for (int b = 0; b < 5; ++b) acc[a][b] = 0.0f;
  }
  for (int c = 0; c < nact; ++c) {
    const float* rr = rows + c * kV2RowStride + col0 + 5 * rg;
    const float* gg = dg + c * kV2DgStride + 5 * cg;
    float av[5], gv[5];
#pragma unroll
    for (int a = 0; a < 5; ++a) {
      av[a] = 5 * rg + a < nrows ? rr[a] : 0.0f;
      gv[a] = gg[a];
    }
#pragma unroll
    for (int a = 0; a < 5; ++a) {
      bacc[a] += gv[a];
#pragma unroll
      for (int b = 0; b < 5; ++b) acc[a][b] += av[a] * gv[b];
    }
  }
#pragma unroll
  for (int a = 0; a < 5; ++a) {
    const int r = 5 * rg + a;
#pragma unroll
    for (int b = 0; b < 5; ++b) {
      const int col = v2_orig_col(5 * cg + b);
      if (r < nrows) dw[oW + r * kGates + col] += acc[a][b];
      if (rg == 0 && a == 0) dw[oW + nrows * kGates + col] += bacc[b];
    }
  }
}

// ---- forward ------------------------------------------------------------------------------------
// Shared memory: wsm[kV2WFloats] | rows[128 * kV2RowStride] | x[128] | r[128] | obj[128]
__device__ __forceinline__ void unroll_forward_v2_block(const UnrollArgs& a, int64_t blk) {
  extern __shared__ float smem[];
  float* wsm = smem;
  float* rows = wsm + kV2WFloats;
  float* x_sh = rows + kV2Threads * kV2RowStride;
  float* r_sh = x_sh + kV2Threads;
  float* obj_sh = r_sh + kV2Threads;
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
  const V2Layout L = v2_layout(arch);
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;

  v2_load_weights(a.w, L, arch, wsm);
  for (int i = threadIdx.x; i < kV2Threads * kV2RowStride; i += blockDim.x) rows[i] = 0.0f;
  __syncthreads();  // rows zeroed before the owners write their state

  float m = 0.0f, v = 0.0f;
  if (pl.active) {
    m = a.coord[c].m;
    v = a.coord[c].v;
    x_sh[pl.tid] = a.x[c];
  }
  float c1[kV2Coords][kV2Units], c2[kV2Coords][kV2Units];
#pragma unroll
  for (int i = 0; i < kV2Coords; ++i)
#pragma unroll
    for (int j = 0; j < kV2Units; ++j) {
      const int cc = 32 * i + lane, u = kV2Units * warp + j;
      c1[i][j] = c2[i][j] = 0.0f;
      if (cc < pl.nact) {
        const CoordState<float>& s = a.coord[cbase + cc];
        c1[i][j] = s.c1[u];
        c2[i][j] = s.c2[u];
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
          const float pre = wsm[L.win + 2 * kHidden + h] + u[0] * wsm[L.win + h] +
                            u[1] * wsm[L.win + kHidden + h];
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
      for (int i = 0; i < kV2Coords; ++i)
#pragma unroll
        for (int j = 0; j < kV2Units; ++j) {
          const int cc = 32 * i + lane, u = kV2Units * warp + j;
          if (cc < pl.nact) {
            const int64_t cg = cbase + cc;
            rec[(kTapeH1 + u) * C + cg] = rows[cc * kV2RowStride + kV2H1P + u];
            rec[(kTapeC1 + u) * C + cg] = c1[i][j];
            rec[(kTapeH2 + u) * C + cg] = rows[cc * kV2RowStride + kV2H2P + u];
            rec[(kTapeC2 + u) * C + cg] = c2[i][j];
          }
        }
    }
    __syncthreads();  // layer-1 inputs visible
    float acc[kV2Coords][kV2Units][4];
    v2_gates(wsm + kV2L1, L.in1 + kHidden, rows + L.off1, lane, warp, acc);
#pragma unroll
    for (int i = 0; i < kV2Coords; ++i)
#pragma unroll
      for (int j = 0; j < kV2Units; ++j) {
        v2_activate(acc[i][j]);
        c1[i][j] = acc[i][j][2] * c1[i][j] + acc[i][j][0] * acc[i][j][1];
        rows[(32 * i + lane) * kV2RowStride + kV2H1 + kV2Units * warp + j] =
            tanh(c1[i][j]) * acc[i][j][3];
      }
    __syncthreads();  // h1 visible
    v2_gates(wsm + L.l2, 2 * kHidden, rows + kV2H1, lane, warp, acc);
    __syncthreads();  // every read of h1 / h2_prev done: they can be replaced
#pragma unroll
    for (int i = 0; i < kV2Coords; ++i)
#pragma unroll
      for (int j = 0; j < kV2Units; ++j) {
        v2_activate(acc[i][j]);
        c2[i][j] = acc[i][j][2] * c2[i][j] + acc[i][j][0] * acc[i][j][1];
        float* row = rows + (32 * i + lane) * kV2RowStride;
        const int u = kV2Units * warp + j;
        const float h2 = tanh(c2[i][j]) * acc[i][j][3];
        row[kV2H2 + u] = h2;
        row[kV2H2P + u] = h2;
        row[kV2H1P + u] = row[kV2H1 + u];  // own element
      }
    __syncthreads();  // h2 visible
    if (pl.active) {
      const float* row = rows + pl.tid * kV2RowStride;
      float pre = wsm[L.wout + kHidden];
      for (int h = 0; h < kHidden; ++h) pre += row[kV2H2 + h] * wsm[L.wout + h];
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
  for (int i = 0; i < kV2Coords; ++i)
#pragma unroll
    for (int j = 0; j < kV2Units; ++j) {
      const int cc = 32 * i + lane, u = kV2Units * warp + j;
      if (cc < pl.nact) {
        CoordState<float>& s = a.coord[cbase + cc];
        s.h1[u] = rows[cc * kV2RowStride + kV2H1P + u];
        s.c1[u] = c1[i][j];
        s.h2[u] = rows[cc * kV2RowStride + kV2H2P + u];
        s.c2[u] = c2[i][j];
      }
    }
}

// ---- backward -----------------------------------------------------------------------------------
// Shared memory: wsm | dw | rows[128 * kV2RowStride] | dg[128 * kV2DgStride] | act1[80][128] |
// adjh[40][128] | dz[128 * 21] | x[128] | v[128] | s[128] | dout[128] | u[2 * 128]
constexpr int kV2BackwardFloats = 2 * kV2WFloats + kV2Threads * kV2RowStride +
                                  kV2Threads * kV2DgStride + (4 * kV2Slots + 2 * kV2Slots) * kV2Threads +
                                  kV2Threads * (kHidden + 1) + 6 * kV2Threads;
constexpr int kV2ForwardFloats = kV2WFloats + kV2Threads * kV2RowStride + 3 * kV2Threads;
static_assert((2 * kV2WFloats + kV2Threads * kV2RowStride) % 4 == 0, "dg must be 16-byte aligned");

__device__ __forceinline__ void unroll_backward_v2_block(const UnrollArgs& a, int64_t blk) {
  extern __shared__ float smem[];
  float* wsm = smem;
  float* dw = wsm + kV2WFloats;
  float* rows = dw + kV2WFloats;
  float* dg = rows + kV2Threads * kV2RowStride;
  float* act1 = dg + kV2Threads * kV2DgStride;
  float* adjh = act1 + 4 * kV2Slots * kV2Threads;
  float* dz = adjh + 2 * kV2Slots * kV2Threads;
  float* x_sh = dz + kV2Threads * (kHidden + 1);
  float* v_sh = x_sh + kV2Threads;
  float* s_sh = v_sh + kV2Threads;
  float* dout_sh = s_sh + kV2Threads;
  float* u_sh = dout_sh + kV2Threads;
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
  const V2Layout L = v2_layout(arch);
  const int P = a.P;
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  const int tid = static_cast<int>(threadIdx.x);

  v2_load_weights(a.w, L, arch, wsm);
  for (int i = tid; i < P; i += blockDim.x) dw[i] = 0.0f;
  for (int i = tid; i < kV2Threads * kV2RowStride; i += blockDim.x) rows[i] = 0.0f;
  for (int i = tid; i < kV2Threads * kV2DgStride; i += blockDim.x) dg[i] = 0.0f;
  for (int i = tid; i < kV2Threads * (kHidden + 1); i += blockDim.x) dz[i] = 0.0f;
  for (int i = tid; i < 2 * kV2Threads; i += blockDim.x) u_sh[i] = 0.0f;
  for (int k = 0; k < 2 * kV2Slots; ++k) adjh[k * kV2Threads + tid] = 0.0f;  // own slots

  float adjc1[kV2Coords][kV2Units], adjc2[kV2Coords][kV2Units], dh1[kV2Coords][kV2Units];
#pragma unroll
  for (int i = 0; i < kV2Coords; ++i)
#pragma unroll
    for (int j = 0; j < kV2Units; ++j) adjc1[i][j] = adjc2[i][j] = 0.0f;
  float ax = pl.active ? a.gT[c] * a.inv_n : 0.0f;  // adjoint of x_T: d(f(x_T)/N)/dx
  float adj_m = 0.0f, adj_v = 0.0f;
  const float* xn = x_sh + pl.li * d;
  const float* vn = v_sh + pl.li * d;
  const float* sn = s_sh + pl.li * d;
  const float pdm = static_cast<float>(a.hyper.dm_p);

  for (int t = a.T - 1; t >= 0; --t) {
    __syncthreads();  // previous step's readers done; at the start, the zeroed buffers visible
    const float* rec = a.tape + static_cast<int64_t>(t) * kTapeFields * C;
    // Phase A: features of every coordinate, the owners' recurrent inputs from the tape.
    float g = 0.0f, xt = 0.0f, mt = 0.0f, vt = 0.0f, bc = 0.0f;
    if (pl.active) {
      g = rec[kTapeG * C + c];
      xt = rec[kTapeX * C + c];
      mt = rec[kTapeM * C + c];
      vt = rec[kTapeV * C + c];
      float* row = rows + tid * kV2RowStride;
      float u[2];
      if (rnn) {
        rnnprop_features(g, a.k0 + t, mt, vt, bc, u);
        for (int h = 0; h < kHidden; ++h) {
          const float pre = wsm[L.win + 2 * kHidden + h] + u[0] * wsm[L.win + h] +
                            u[1] * wsm[L.win + kHidden + h];
          row[kV2Z + h] = pre > 0.0f ? pre : exp(pre) - 1.0f;  // ELU
        }
      } else {
        dmlstm_features(g, pdm, u);
        row[kV2H1P - 2] = u[0];
        row[kV2H1P - 1] = u[1];
      }
      u_sh[2 * tid] = u[0];
      u_sh[2 * tid + 1] = u[1];
    }
#pragma unroll
    for (int i = 0; i < kV2Coords; ++i)
#pragma unroll
      for (int j = 0; j < kV2Units; ++j) {
        const int cc = 32 * i + lane, u = kV2Units * warp + j;
        if (cc < pl.nact) {
          rows[cc * kV2RowStride + kV2H1P + u] = rec[(kTapeH1 + u) * C + cbase + cc];
          rows[cc * kV2RowStride + kV2H2P + u] = rec[(kTapeH2 + u) * C + cbase + cc];
        }
      }
    __syncthreads();  // layer-1 inputs visible
    // Recompute layer 1; its activations go to this thread's slots.
    float acc[kV2Coords][kV2Units][4];
    v2_gates(wsm + kV2L1, L.in1 + kHidden, rows + L.off1, lane, warp, acc);
#pragma unroll
    for (int i = 0; i < kV2Coords; ++i)
#pragma unroll
      for (int j = 0; j < kV2Units; ++j) {
        const int cc = 32 * i + lane, u = kV2Units * warp + j;
        const float cp = cc < pl.nact ? rec[(kTapeC1 + u) * C + cbase + cc] : 0.0f;
        v2_activate(acc[i][j]);
        const float cn = acc[i][j][2] * cp + acc[i][j][0] * acc[i][j][1];
        rows[cc * kV2RowStride + kV2H1 + u] = tanh(cn) * acc[i][j][3];
#pragma unroll
        for (int q = 0; q < 4; ++q) act1[((i * kV2Units + j) * 4 + q) * kV2Threads + tid] = acc[i][j][q];
      }
    __syncthreads();  // h1 visible
    // Recompute layer 2; activations stay in acc, tanh(c2) in tc2.
    v2_gates(wsm + L.l2, 2 * kHidden, rows + kV2H1, lane, warp, acc);
    float tc2[kV2Coords][kV2Units];
#pragma unroll
    for (int i = 0; i < kV2Coords; ++i)
#pragma unroll
      for (int j = 0; j < kV2Units; ++j) {
        const int cc = 32 * i + lane, u = kV2Units * warp + j;
        const float cp = cc < pl.nact ? rec[(kTapeC2 + u) * C + cbase + cc] : 0.0f;
        v2_activate(acc[i][j]);
        const float cn = acc[i][j][2] * cp + acc[i][j][0] * acc[i][j][1];
        tc2[i][j] = tanh(cn);
        rows[cc * kV2RowStride + kV2H2 + u] = tc2[i][j] * acc[i][j][3];
      }
    __syncthreads();  // h2 visible
    // Output layer and its adjoint, per coordinate.
    {
      float dout = 0.0f;
      if (pl.active) {
        const float* row = rows + tid * kV2RowStride;
        float pre = wsm[L.wout + kHidden];
        for (int h = 0; h < kHidden; ++h) pre += row[kV2H2 + h] * wsm[L.wout + h];
        if (rnn) {
          const float out = tanh(pre);
          dout = ax * static_cast<float>(a.hyper.output_scale) * (1.0f - out * out);
        } else {
          dout = ax * static_cast<float>(a.hyper.dm_scale);
        }
      }
      dout_sh[tid] = dout;
    }
    __syncthreads();  // dout visible
    // Layer-2 cell backward (owners): dgates2 into dg, adjoint of c2_prev in registers.
#pragma unroll
    for (int i = 0; i < kV2Coords; ++i)
#pragma unroll
      for (int j = 0; j < kV2Units; ++j) {
        const int cc = 32 * i + lane, u = kV2Units * warp + j;
        const float cp = cc < pl.nact ? rec[(kTapeC2 + u) * C + cbase + cc] : 0.0f;
        const float dh = adjh[(kV2Slots + i * kV2Units + j) * kV2Threads + tid] +
                         wsm[L.wout + u] * dout_sh[cc];
        const float si = acc[i][j][0], tj = acc[i][j][1], sf = acc[i][j][2], so = acc[i][j][3];
        const float tc = tc2[i][j];
        const float dcu = adjc2[i][j] + dh * so * (1.0f - tc * tc);
        float* out = dg + cc * kV2DgStride + 4 * u;
        out[0] = dcu * tj * si * (1.0f - si);
        out[1] = dcu * si * (1.0f - tj * tj);
        out[2] = dcu * cp * sf * (1.0f - sf);
        out[3] = dh * tc * so * (1.0f - so);
        adjc2[i][j] = dcu * sf;
      }
    __syncthreads();  // dgates2 visible
    {
      float adj2[kV2Coords][kV2Units];
      v2_layer_backward(wsm + L.l2, 0, kHidden, true, rows, kV2H1, 2 * kHidden, dg, pl.nact, lane,
                        warp, dw, L.oW2, dh1, adj2);
#pragma unroll
      for (int i = 0; i < kV2Coords; ++i)
#pragma unroll
        for (int j = 0; j < kV2Units; ++j)
          adjh[(kV2Slots + i * kV2Units + j) * kV2Threads + tid] = adj2[i][j];
    }
    __syncthreads();  // every read of dgates2 done
    // Layer-1 cell backward (owners).
#pragma unroll
    for (int i = 0; i < kV2Coords; ++i)
#pragma unroll
      for (int j = 0; j < kV2Units; ++j) {
        const int cc = 32 * i + lane, u = kV2Units * warp + j;
        const float cp = cc < pl.nact ? rec[(kTapeC1 + u) * C + cbase + cc] : 0.0f;
        const float* ac = act1 + (i * kV2Units + j) * 4 * kV2Threads + tid;
        const float si = ac[0], tj = ac[kV2Threads], sf = ac[2 * kV2Threads], so = ac[3 * kV2Threads];
        const float tc = tanh(sf * cp + si * tj);
        const float dh = adjh[(i * kV2Units + j) * kV2Threads + tid] + dh1[i][j];
        const float dcu = adjc1[i][j] + dh * so * (1.0f - tc * tc);
        float* out = dg + cc * kV2DgStride + 4 * u;
        out[0] = dcu * tj * si * (1.0f - si);
        out[1] = dcu * si * (1.0f - tj * tj);
        out[2] = dcu * cp * sf * (1.0f - sf);
        out[3] = dh * tc * so * (1.0f - so);
        adjc1[i][j] = dcu * sf;
      }
    __syncthreads();  // dgates1 visible
    {
      float din[kV2Coords][kV2Units], adj1[kV2Coords][kV2Units];
      v2_layer_backward(wsm + kV2L1, 0, L.in1, rnn, rows, L.off1, L.in1 + kHidden, dg, pl.nact,
                        lane, warp, dw, L.oW1, din, adj1);
#pragma unroll
      for (int i = 0; i < kV2Coords; ++i)
#pragma unroll
        for (int j = 0; j < kV2Units; ++j) {
          const int cc = 32 * i + lane, u = kV2Units * warp + j;
          adjh[(i * kV2Units + j) * kV2Threads + tid] = adj1[i][j];
          if (rnn) {  // ELU backward: z > 0 exactly when its input is
            const float z = rows[cc * kV2RowStride + kV2Z + u];
            dz[cc * (kHidden + 1) + u] = din[i][j] * (z > 0.0f ? 1.0f : z + 1.0f);
          }
        }
    }
    __syncthreads();  // dz visible
    // Per coordinate: the adjoint of g; the input and output layers' weight gradients.
    float dgv = 0.0f;
    if (pl.active) {
      if (rnn) {
        float du0 = 0.0f, du1 = 0.0f;
        for (int h = 0; h < kHidden; ++h) {
          const float dzh = dz[tid * (kHidden + 1) + h];
          du0 += wsm[L.win + h] * dzh;
          du1 += wsm[L.win + kHidden + h] * dzh;
        }
        if (a.second) {
          const float root = sqrt(vt / bc);
          const float s = root + static_cast<float>(kRnnpropEps);
          const float ds = -(du0 * (mt / bc) + du1 * g) / (s * s);
          const float dv_total = adj_v + (root > 0.0f ? ds / (2.0f * root * bc) : 0.0f);
          const float dm_total = adj_m + du0 / (bc * s);
          dgv = du1 / s + static_cast<float>(1 - kRnnpropBeta) * dm_total +
                static_cast<float>(2 * (1 - kRnnpropBeta)) * g * dv_total;
          adj_m = static_cast<float>(kRnnpropBeta) * dm_total;
          adj_v = static_cast<float>(kRnnpropBeta) * dv_total;
        }
      } else if (a.second) {
        float din0 = 0.0f, din1 = 0.0f;
        const float* drow = dg + tid * kV2DgStride;
        for (int q = 0; q < kGates; ++q) {
          din0 += wsm[kV2L1 + q] * drow[q];
          din1 += wsm[kV2L1 + kGates + q] * drow[q];
        }
        dgv = fabs(g) >= exp(-pdm) ? din0 / (pdm * g) : din1 * exp(pdm);
      }
    }
    if (rnn && tid < 3 * kHidden) {  // W_in (rows u0, u1) and b_in: one owner per weight
      const int k = tid / kHidden, h = tid % kHidden;
      float s = 0.0f;
      for (int cc = 0; cc < pl.nact; ++cc)
        s += (k < 2 ? u_sh[2 * cc + k] : 1.0f) * dz[cc * (kHidden + 1) + h];
      dw[L.oWin + tid] += s;
    } else if (tid >= 64 && tid < 64 + kHidden + 1) {  // W_out and b_out
      const int h = tid - 64;
      float s = 0.0f;
      for (int cc = 0; cc < pl.nact; ++cc)
        s += (h < kHidden ? rows[cc * kV2RowStride + kV2H2 + h] : 1.0f) * dout_sh[cc];
      dw[L.oWout + h] += s;
    }
    // Adjoint of x_t: the loss term f(x_t)/N, plus H(x_t) dg_t with second derivatives.
    if (a.second) {
      if (pl.active) {
        x_sh[tid] = xt;
        v_sh[tid] = dgv;
      }
      __syncthreads();  // x_t and dg_t of the block visible
      if (matrix && pl.active) s_sh[tid] = residual_row(task, n, vn, pl.j, false);
      __syncthreads();  // A dg visible
      if (pl.active) ax += g * a.inv_n + coord_hvp(task, n, pl.j, xn, vn, sn);
    } else if (pl.active) {
      ax += g * a.inv_n;
    }
  }
  __syncthreads();  // every owner's last accumulation done
  for (int i = tid; i < P; i += blockDim.x)
    a.partial[static_cast<int64_t>(i) * a.blocks + blk] = dw[i];
}

// ---- the batched kernels (block table: unroll_plan.hpp) ------------------------------------------
__global__ void __launch_bounds__(kV2Threads) unroll_forward_v2_kernel(const BatchArgs b) {
  const ItemBlock ib = locate_block(b, blockIdx.x);
  const UnrollArgs& a = b.items[ib.slot];  // read in place (L1): fewer registers than a copy
  unroll_forward_v2_block(a, ib.block);
}

__global__ void __launch_bounds__(kV2Threads) unroll_backward_v2_kernel(const BatchArgs b) {
  const ItemBlock ib = locate_block(b, blockIdx.x);
  const UnrollArgs& a = b.items[ib.slot];  // read in place (L1): fewer registers than a copy
  unroll_backward_v2_block(a, ib.block);
}

}  // namespace
}  // namespace ml2o::cuda
