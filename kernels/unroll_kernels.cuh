// The unroll kernels' bodies (launched from unroll.cu). A header so that the CPU emulation test
// (tests/test_cuda.cpp, KernelEmulation) can run exactly this code with threads and barriers on a
// machine without a GPU; include it from one .cu only (internal linkage).
//
// Fused unroll kernels: the forward pass of T optimizer steps in one launch (optionally storing the
// BPTT tape), and the backward pass of the T steps in one launch. One thread per coordinate, a
// block owns whole instances (block_optimizee.cuh), the weights live in shared memory, the
// recurrent state in registers/local memory. The per-coordinate math is cell.hpp's
// optimizer_step_forward / optimizer_step_backward, the same functions the CPU reference runs.
//
// Weight gradient, deterministically: each block sums its coordinates' outer products in a fixed
// order into a shared-memory vector (one owner thread per weight, no atomics), then writes it as
// one column of partial[P][blocks]; the backend sums each row over blocks with
// cub::DeviceSegmentedReduce. The loss is reduced the same way (rows after the P weight rows).
//
// Batched: a launch covers the blocks of several items (unroll_plan.hpp); each block finds its item
// and its block within the item in the block table, then runs the item's body exactly as a launch
// of that item alone would.
//
// Templated on the scalar S: float for the unroll, Dual<float> for the exact Hessian-vector product
// of the meta-loss (forward-over-reverse, as hvp_dual on the CPU): the weights carry the tangent v,
// everything downstream carries its derivative along v, the starting state has none, and the block
// writes the tangent of its weight-gradient partial (the HVP's partial). The Dual kernels read the
// trajectory and never write it back.
#pragma once
#include <type_traits>

#include "block_optimizee.cuh"
#include "launch.cuh"

namespace ml2o::cuda {
namespace {

// ---- staging of one coordinate-step's weight-gradient factors -----------------------------------
// The weight gradient of a step is a sum of outer products act (x) grad over "segments", each a
// dense [rows x cols] block of the flat weight vector whose last row is the bias (act = 1):
//   RNNprop: W_in|b_in  [u0 u1 1]        x dzpre    (3 x 20)
//            W1|b1      [z; h1p; 1]      x dgates1  (41 x 80)
//            W2|b2      [h1; h2p; 1]     x dgates2  (41 x 80)
//            W_out|b_out [h2; 1]         x dout     (21 x 1)
//   DM-LSTM: the same without the input layer, W1|b1 rows [u0 u1; h1p; 1] (23 x 80).
// A staged coordinate is one row of kStageStride floats: all segments' acts, then their grads.
struct WSeg {
  int off, rows, cols, act, grad;
};
// kStageStride = 287 (RNNprop needs 106 + 181; odd: no bank conflicts) and kStageRows = 32
// (coordinates staged at a time, one warp) are in unroll_plan.hpp (shared-memory sizes).
constexpr int kRowBlock = 8;       // weight rows per work item (register tile)

__constant__ WSeg kSegRnnprop[4] = {
    {RnnpropLayout::W_in, 3, kHidden, 0, 106},
    {RnnpropLayout::W1, 2 * kHidden + 1, kGates, 3, 126},
    {RnnpropLayout::W2, 2 * kHidden + 1, kGates, 44, 206},
    {RnnpropLayout::W_out, kHidden + 1, 1, 85, 286},
};
__constant__ WSeg kSegDmlstm[3] = {
    {DmlstmLayout::W1, 2 + kHidden + 1, kGates, 0, 85},
    {DmlstmLayout::W2, 2 * kHidden + 1, kGates, 23, 165},
    {DmlstmLayout::W_out, kHidden + 1, 1, 64, 245},
};
// The layouts the tables assume (bias rows directly after the weight rows).
static_assert(RnnpropLayout::b_in == RnnpropLayout::W_in + 2 * kHidden);
static_assert(RnnpropLayout::b1 == RnnpropLayout::W1 + 2 * kHidden * kGates);
static_assert(RnnpropLayout::b2 == RnnpropLayout::W2 + 2 * kHidden * kGates);
static_assert(RnnpropLayout::b_out == RnnpropLayout::W_out + kHidden);
static_assert(DmlstmLayout::b1 == DmlstmLayout::W1 + (2 + kHidden) * kGates);
static_assert(DmlstmLayout::b2 == DmlstmLayout::W2 + 2 * kHidden * kGates);
static_assert(DmlstmLayout::b_out == DmlstmLayout::W_out + kHidden);
static_assert(RnnpropLayout::size == RnnpropLayout::W_out + kHidden + 1);
static_assert(DmlstmLayout::size == DmlstmLayout::W_out + kHidden + 1);
static_assert(106 + kHidden + 2 * kGates + 1 == kStageStride);
// Work items read act rows up to act + ceil(rows / kRowBlock) * kRowBlock - 1; they stay inside the
// written part of a staged row (RNNprop: 0..286, DM-LSTM: 0..245).
static_assert(85 + 24 <= kStageStride && 64 + 24 <= 246);

template <class S>
__device__ __forceinline__ void stage_coordinate(Arch arch, const StepTape<S>& tp,
                                                 const StepGrads<S>& sg, S* row) {
  if (arch == Arch::rnnprop) {
    row[0] = tp.u[0];
    row[1] = tp.u[1];
    row[2] = S(1.0f);
    for (int h = 0; h < kHidden; ++h) {
      row[3 + h] = tp.z[h];
      row[23 + h] = tp.h1p[h];
      row[44 + h] = tp.h1[h];
      row[64 + h] = tp.h2p[h];
      row[85 + h] = tp.h2[h];
      row[106 + h] = sg.dzpre[h];
    }
    row[43] = S(1.0f);
    row[84] = S(1.0f);
    row[105] = S(1.0f);
    for (int q = 0; q < kGates; ++q) {
      row[126 + q] = sg.dgates1[q];
      row[206 + q] = sg.dgates2[q];
    }
    row[286] = sg.dout;
  } else {
    row[0] = tp.u[0];
    row[1] = tp.u[1];
    for (int h = 0; h < kHidden; ++h) {
      row[2 + h] = tp.h1p[h];
      row[23 + h] = tp.h1[h];
      row[43 + h] = tp.h2p[h];
      row[64 + h] = tp.h2[h];
    }
    row[22] = S(1.0f);
    row[63] = S(1.0f);
    row[84] = S(1.0f);
    for (int q = 0; q < kGates; ++q) {
      row[85 + q] = sg.dgates1[q];
      row[165 + q] = sg.dgates2[q];
    }
    row[245] = sg.dout;
  }
}

// dw += sum over the `count` staged coordinates (in staging order) of their outer products. Work
// item = (segment, column, block of kRowBlock rows); item i belongs to thread i mod blockDim, so
// every weight has one owner thread and a fixed summation order.
template <class S>
__device__ __forceinline__ void accumulate_staged(Arch arch, const S* stage, int count, S* dw) {
  const WSeg* segs = arch == Arch::rnnprop ? kSegRnnprop : kSegDmlstm;
  const int nseg = arch == Arch::rnnprop ? 4 : 3;
  int total = 0;
  for (int s = 0; s < nseg; ++s) total += (segs[s].rows + kRowBlock - 1) / kRowBlock * segs[s].cols;
  for (int it = threadIdx.x; it < total; it += blockDim.x) {
    int s = 0, local = it;
    for (;;) {
      const int items = (segs[s].rows + kRowBlock - 1) / kRowBlock * segs[s].cols;
      if (local < items) break;
      local -= items;
      ++s;
    }
    const WSeg sg = segs[s];
    const int col = local % sg.cols;
    const int r0 = local / sg.cols * kRowBlock;
    S acc[kRowBlock];
#pragma unroll
    for (int rr = 0; rr < kRowBlock; ++rr) acc[rr] = S(0.0f);
    for (int cc = 0; cc < count; ++cc) {
      const S* row = stage + cc * kStageStride;
      const S gv = row[sg.grad + col];
      const S* act = row + sg.act + r0;
#pragma unroll
      for (int rr = 0; rr < kRowBlock; ++rr) acc[rr] += act[rr] * gv;
    }
#pragma unroll
    for (int rr = 0; rr < kRowBlock; ++rr)
      if (r0 + rr < sg.rows) dw[sg.off + (r0 + rr) * sg.cols + col] += acc[rr];
  }
}

// ---- scalar helpers -----------------------------------------------------------------------------
template <class S> constexpr bool kIsDual = !std::is_same_v<S, float>;

// Weight i: with its tangent v_i in the HVP kernels.
template <class S> __device__ __forceinline__ S weight_of(const UnrollArgs& a, int i) {
  if constexpr (kIsDual<S>) return S(a.w[i], a.wdot[i]);
  else return a.w[i];
}

// The starting state (no tangent: it does not depend on the weights).
template <class S> __device__ __forceinline__ CoordState<S> state_of(const CoordState<float>& f) {
  if constexpr (kIsDual<S>) {
    CoordState<S> s;
    s.m = S(f.m);
    s.v = S(f.v);
    for (int h = 0; h < kHidden; ++h) {
      s.h1[h] = S(f.h1[h]);
      s.c1[h] = S(f.c1[h]);
      s.h2[h] = S(f.h2[h]);
      s.c2[h] = S(f.c2[h]);
    }
    return s;
  } else {
    return f;
  }
}

// The optimizer's gradient input: with the gradient as a constant it carries no derivative (as
// unroll_cpu's stop_gradient; the identity for float).
template <class S> __device__ __forceinline__ S gradient_input(S g, bool second) {
  return second ? g : stop_gradient(g);
}

// What a block's weight-gradient partial holds: the gradient, or for Dual its tangent (the HVP).
__device__ __forceinline__ float reduced_part(float x) { return x; }
__device__ __forceinline__ float reduced_part(const DualF& x) { return x.d; }

// ---- forward ------------------------------------------------------------------------------------
// Shared memory (scalars S): w[P] | x[MAXT] | r[MAXT] | obj[MAXT]
template <int MAXT, class S>
__device__ __forceinline__ void unroll_forward_block(const UnrollArgs& a, int64_t blk) {
  extern __shared__ float smem[];
  S* w_sh = reinterpret_cast<S*>(smem);
  S* x_sh = w_sh + a.P;
  S* r_sh = x_sh + MAXT;
  S* obj_sh = r_sh + MAXT;
  S* const tape = reinterpret_cast<S*>(a.tape);
  S* const gT = reinterpret_cast<S*>(a.gT);
  const TaskView<float>& task = a.task;
  const int d = task.dim;
  const BlockPlace pl = block_place(task.instances, d, a.ipb, blk);
  const int64_t C = task.instances * d;
  const int64_t c = pl.n0 * d + pl.tid;
  const int64_t n = pl.n0 + pl.li;
  const bool matrix = has_matrix(task.family);

  for (int i = threadIdx.x; i < a.P; i += blockDim.x) w_sh[i] = weight_of<S>(a, i);
  CoordState<S> st{};
  if (pl.active) {
    st = state_of<S>(a.coord[c]);
    x_sh[pl.tid] = S(a.x[c]);
  }
  StepTape<S> tp;
  const S* xn = x_sh + pl.li * d;
  const S* rn = r_sh + pl.li * d;
  for (int t = 0; t <= a.T; ++t) {
    __syncthreads();  // x of step t (and, at t = 0, the weights) visible
    if (matrix && pl.active) r_sh[pl.tid] = residual_row(task, n, xn, pl.j, true);
    __syncthreads();  // residuals visible
    S g = S(0.0f);
    if (pl.active) {
      g = coord_gradient(task, n, pl.j, xn, rn, true);
      if (pl.j == 0) obj_sh[pl.li] = block_instance_objective(task, xn, rn);
    }
    __syncthreads();  // objectives visible; every read of x_sh and r_sh for step t is done
    if (pl.tid == 0) {
      S s = S(0.0f);
      for (int i = 0; i < pl.nin; ++i) s += obj_sh[i];
      a.partial[(a.loss_row0 + t) * a.blocks + blk] = value_of(s);
    }
    if (pl.active) {
      if (t == a.T) {
        if (gT) gT[c] = g;
      } else {
        if (tape) {
          S* rec = tape + static_cast<int64_t>(t) * kTapeFields * C + c;
          rec[kTapeG * C] = g;
          rec[kTapeX * C] = x_sh[pl.tid];
          rec[kTapeM * C] = st.m;
          rec[kTapeV * C] = st.v;
          for (int h = 0; h < kHidden; ++h) {
            rec[(kTapeH1 + h) * C] = st.h1[h];
            rec[(kTapeC1 + h) * C] = st.c1[h];
            rec[(kTapeH2 + h) * C] = st.h2[h];
            rec[(kTapeC2 + h) * C] = st.c2[h];
          }
        }
        x_sh[pl.tid] += optimizer_step_forward(a.hyper, w_sh, gradient_input(g, a.second), a.k0 + t, st, tp);
      }
    }
  }
  if constexpr (!kIsDual<S>) {
    if (pl.active) {
      a.x[c] = x_sh[pl.tid];
      a.coord[c] = st;
    }
  }
}

// ---- backward -----------------------------------------------------------------------------------
// Shared memory (scalars S): w[P] | dw[P] | stage[kStageRows * kStageStride] | x[MAXT] | v[MAXT] | s[MAXT]
template <int MAXT, class S>
__device__ __forceinline__ void unroll_backward_block(const UnrollArgs& a, int64_t blk) {
  extern __shared__ float smem[];
  S* w_sh = reinterpret_cast<S*>(smem);
  S* dw_sh = w_sh + a.P;
  S* stage = dw_sh + a.P;
  S* x_sh = stage + kStageRows * kStageStride;
  S* v_sh = x_sh + MAXT;
  S* s_sh = v_sh + MAXT;
  const S* const tape = reinterpret_cast<const S*>(a.tape);
  const S* const gT = reinterpret_cast<const S*>(a.gT);
  const TaskView<float>& task = a.task;
  const int d = task.dim;
  const BlockPlace pl = block_place(task.instances, d, a.ipb, blk);
  const int64_t C = task.instances * d;
  const int64_t c = pl.n0 * d + pl.tid;
  const int64_t n = pl.n0 + pl.li;
  const bool matrix = has_matrix(task.family);
  const Arch arch = a.hyper.arch;

  for (int i = threadIdx.x; i < a.P; i += blockDim.x) {
    w_sh[i] = weight_of<S>(a, i);
    dw_sh[i] = S(0.0f);
  }
  __syncthreads();  // weights and the zeroed gradient visible (dw's owners differ from this loop's)

  CoordAdjoint<S> adj{};
  CoordState<S> st{};
  StepTape<S> tp{};
  StepGrads<S> sg{};
  S ax = pl.active ? gT[c] * a.inv_n : S(0.0f);  // adjoint of x_T: d(f(x_T)/N)/dx
  const int nchunks = (pl.nact + kStageRows - 1) / kStageRows;
  const S* xn = x_sh + pl.li * d;
  const S* vn = v_sh + pl.li * d;
  const S* sn = s_sh + pl.li * d;

  for (int t = a.T - 1; t >= 0; --t) {
    S g = S(0.0f), xt = S(0.0f), dg = S(0.0f);
    if (pl.active) {
      const S* rec = tape + static_cast<int64_t>(t) * kTapeFields * C + c;
      g = rec[kTapeG * C];
      xt = rec[kTapeX * C];
      st.m = rec[kTapeM * C];
      st.v = rec[kTapeV * C];
      for (int h = 0; h < kHidden; ++h) {
        st.h1[h] = rec[(kTapeH1 + h) * C];
        st.c1[h] = rec[(kTapeC1 + h) * C];
        st.h2[h] = rec[(kTapeH2 + h) * C];
        st.c2[h] = rec[(kTapeC2 + h) * C];
      }
      // Recompute the step's activations from the state before it, then its backward.
      (void)optimizer_step_forward(a.hyper, w_sh, gradient_input(g, a.second), a.k0 + t, st, tp);
      dg = optimizer_step_backward(a.hyper, w_sh, tp, ax, a.second, adj, sg);
    }
    // Weight gradient: stage one warp's coordinates at a time, every thread accumulates.
    for (int q = 0; q < nchunks; ++q) {
      __syncthreads();  // the previous chunk's readers are done with the stage
      if (pl.active && (pl.tid / kStageRows) == q)
        stage_coordinate(arch, tp, sg, stage + (pl.tid % kStageRows) * kStageStride);
      __syncthreads();  // staged rows visible
      accumulate_staged(arch, stage, min(kStageRows, pl.nact - q * kStageRows), dw_sh);
    }
    // Adjoint of x_t: the loss term f(x_t)/N, plus H(x_t) dg_t with second derivatives. (The
    // stage loop above has barriers, so the previous step's readers of x/v/s are done.)
    if (a.second) {
      if (pl.active) {
        x_sh[pl.tid] = xt;
        v_sh[pl.tid] = dg;
      }
      __syncthreads();  // x_t and dg_t of the block visible
      if (matrix && pl.active) s_sh[pl.tid] = residual_row(task, n, vn, pl.j, false);
      __syncthreads();  // A dg visible
      if (pl.active) {
        const S hv = coord_hvp(task, n, pl.j, xn, vn, sn);
        ax += g * a.inv_n + hv;
      }
    } else if (pl.active) {
      ax += g * a.inv_n;
    }
  }
  __syncthreads();  // every owner's last accumulation done
  for (int i = threadIdx.x; i < a.P; i += blockDim.x)
    a.partial[static_cast<int64_t>(i) * a.blocks + blk] = reduced_part(dw_sh[i]);
}

// ---- the batched kernels ------------------------------------------------------------------------
template <int MAXT, class S>
__global__ void __launch_bounds__(MAXT) unroll_forward_kernel(const BatchArgs b) {
  const ItemBlock ib = locate_block(b, blockIdx.x);
  const UnrollArgs& a = b.items[ib.slot];  // read in place (L1): fewer registers than a copy
  unroll_forward_block<MAXT, S>(a, ib.block);
}

template <int MAXT, class S>
__global__ void __launch_bounds__(MAXT) unroll_backward_kernel(const BatchArgs b) {
  const ItemBlock ib = locate_block(b, blockIdx.x);
  const UnrollArgs& a = b.items[ib.slot];  // read in place (L1): fewer registers than a copy
  unroll_backward_block<MAXT, S>(a, ib.block);
}

}  // namespace
}  // namespace ml2o::cuda
