// How the CUDA backend lays out one batched unroll (or Hessian-vector product) on the device, as
// plain host code: block geometry, the kernels' per-item arguments, the block table, the segments
// of the one reduction, and the assembly of the results. The backend (cuda_backend.cu) and the
// KernelEmulation tests (tests/test_cuda.cpp) both run exactly these functions; only the memory
// the pointers point into differs (device buffers there, host vectors in the tests).
//
// A batch of n items runs as one launch sequence:
//   forward launch per kernel class (one grid over every item's blocks: blockIdx -> (item, block)
//   through the block table), backward launch per kernel class, one segmented reduction over every
//   item's partial rows, one scatter of the gradient rows into the items' gradient vectors, and one
//   download of all items' T + 1 losses.
// An item's blocks, partial rows and reduction segments are exactly those of the item run alone
// (they depend only on its N and d), so its result does not depend on the batch.
#pragma once
#include <algorithm>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "ml2o/backend.hpp"
#include "ml2o/cell.hpp"
#include "ml2o/hd.hpp"
#include "ml2o/optimizee.hpp"
#include "ml2o/unroll.hpp"

namespace ml2o::cuda {

// ---- block geometry -----------------------------------------------------------------------------
// One thread per coordinate; a block owns `ipb` whole instances (the optimizee gradient couples an
// instance's d coordinates and is computed in the block through shared memory). Everything here
// is a function of (N, d) only, never of the device or of the batch, so the reduction order, and
// the result, is the same on any GPU and in any batch.
constexpr int kMaxDim = 512;        // largest d: one instance must fit in one block
constexpr int kSmallThreads = 128;  // target block size for d <= 128 (and v2's block size)
constexpr int kLargeThreads = 512;  // block size limit for 128 < d <= 512

struct Geometry {
  int d = 0;
  int ipb = 0;          // instances per block
  int threads = 0;      // ipb * d rounded up to a warp
  int64_t blocks = 0;   // ceil(N / ipb)
  bool large = false;   // threads > kSmallThreads: the 512-thread kernel instantiation
};

inline Geometry make_geometry(int64_t instances, int dim) {
  if (dim < 1 || dim > kMaxDim)
    throw std::runtime_error("cuda backend: dimension d = " + std::to_string(dim) +
                             " is not supported (1 <= d <= " + std::to_string(kMaxDim) +
                             ": one instance's coordinates must fit in one thread block)");
  if (instances < 1) throw std::runtime_error("cuda backend: a task needs at least one instance");
  Geometry g;
  g.d = dim;
  g.ipb = dim <= kSmallThreads ? std::max(1, kSmallThreads / dim) : 1;
  g.threads = (g.ipb * dim + 31) / 32 * 32;
  g.blocks = (instances + g.ipb - 1) / g.ipb;
  g.large = g.threads > kSmallThreads;
  if (g.blocks > 0x7fffffffLL) throw std::runtime_error("cuda backend: too many instances for one launch");
  return g;
}

// ---- the BPTT tape ------------------------------------------------------------------------------
// One record per coordinate-step, field-major [T][kTapeFields][C] so that a warp's accesses are
// coalesced: the gradient input g, the iterate x_t, and the coordinate's recurrent state before
// the step. The backward kernel recomputes the step's activations from it (recompute instead of
// storing StepTape's 387 floats). The HVP kernels store the same fields as Dual<float>.
constexpr int kTapeG = 0, kTapeX = 1, kTapeM = 2, kTapeV = 3;
constexpr int kTapeH1 = 4, kTapeC1 = kTapeH1 + kHidden, kTapeH2 = kTapeC1 + kHidden,
              kTapeC2 = kTapeH2 + kHidden;
constexpr int kTapeFields = kTapeC2 + kHidden;  // 84 floats = 336 bytes per coordinate-step

// ---- one item's kernel arguments ----------------------------------------------------------------
struct UnrollArgs {
  OptimizerHyper hyper;
  const float* w = nullptr;      // [P] weights
  const float* wdot = nullptr;   // [P] weight tangents v (HVP kernels only)
  int P = 0;
  TaskView<float> task{};
  float* x = nullptr;            // [C] iterate, advanced in place (read only by the HVP kernels)
  CoordState<float>* coord = nullptr;  // [C] recurrent state, likewise
  int64_t k0 = 1;                // global step of the first update
  int T = 0;
  int ipb = 0;
  int64_t blocks = 0;            // the item's own blocks
  float* tape = nullptr;         // [T][kTapeFields][C] scalars, null for forward-only or T = 0
  float* gT = nullptr;           // [C] scalars: gradient at x_T (seeds the adjoint), null forward-only
  float* partial = nullptr;      // [rows][blocks]: weight-gradient rows 0..P-1, loss rows after
  int64_t loss_row0 = 0;         // first loss row (P with a backward pass, else 0)
  float inv_n = 0.0f;            // 1 / N (float, as the CPU reference rounds it)
  bool second = false;           // GradMode::second_derivatives
  float* grad = nullptr;         // [P] where the scatter puts the reduced gradient (or HVP) rows
  int64_t grad_row0 = 0;         // their first row in the reduced array
};

// The kernel that runs an item: v1 (one thread per coordinate; 128- or 512-thread instantiation)
// or v2 (tiled, d <= 128). The HVP always runs v1 (its Dual<float> instantiation). v3_lab (variant
// 3, opt-in only, unverified on hardware: kernels/lab/) is the v3 forward with v2's backward.
enum class KernelClass : int { v1_small = 0, v1_large = 1, v2 = 2, v3_lab = 3 };

inline KernelClass kernel_class(const Geometry& g, int variant, bool dual) {
  if (g.large) return KernelClass::v1_large;
  if (dual) return KernelClass::v1_small;
  if (variant == 3) return KernelClass::v3_lab;
  return variant == 2 ? KernelClass::v2 : KernelClass::v1_small;
}

// What a batched launch receives (device pointers): the items in slot order and the block table.
struct BatchArgs {
  const UnrollArgs* items = nullptr;    // [count]
  const int64_t* first_block = nullptr; // [count + 1]: slot s owns global blocks [fb[s], fb[s+1])
  int count = 0;
  int64_t block0 = 0;                   // this launch's first global block
};

struct ItemBlock {
  int slot;
  int64_t block;  // block within the item
};

// The item and item-block of a launch's block (binary search of the block table).
ML2O_HD ItemBlock locate_block(const BatchArgs& b, int64_t launch_block) {
  const int64_t g = b.block0 + launch_block;
  int lo = 0, hi = b.count - 1;  // the last slot whose first block is <= g
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (b.first_block[mid] <= g) lo = mid;
    else hi = mid - 1;
  }
  return ItemBlock{lo, g - b.first_block[lo]};
}

// ---- the plan -----------------------------------------------------------------------------------
struct PlanShape {
  int64_t instances = 0;
  int dim = 0;
  bool operator==(const PlanShape&) const = default;
};

// One launch of a kernel class over the slots [first_slot, first_slot + count).
struct LaunchGroup {
  KernelClass cls = KernelClass::v1_small;
  int threads = 0;      // blockDim.x: the largest of its items' (128 for v2)
  int first_slot = 0, count = 0;
  int64_t block0 = 0;   // first global block
  int64_t blocks = 0;   // gridDim.x
};

// Everything a batch's layout depends on (the cache key), and the layout.
struct UnrollPlan {
  // key
  std::vector<PlanShape> shapes;  // per item, input order
  int T = 0;
  GradMode mode = GradMode::none;
  Arch arch = Arch::rnnprop;
  int variant = 1;
  bool dual = false;  // a Hessian-vector product: Dual<float> kernels, output = tangent rows
  // layout
  int P = 0;
  bool backward = false;
  std::vector<Geometry> geo;             // per item
  std::vector<int> slot;                 // item -> slot (slots are grouped by kernel class)
  std::vector<int64_t> first_block;      // [n + 1], by slot
  std::vector<LaunchGroup> groups;
  std::vector<int64_t> tape_off, gT_off, partial_off;  // per item, in floats
  int64_t tape_floats = 0, gT_floats = 0, partial_floats = 0;
  int64_t loss_rows = 0;   // n * (T + 1): the reduced array starts with every item's losses
  int64_t total_rows = 0;  // loss_rows + n * P with a backward pass

  size_t items() const { return shapes.size(); }
  int64_t item_rows() const { return (backward ? P : 0) + T + 1; }  // partial rows per item
  bool same_layout(const UnrollPlan& o) const {
    return shapes == o.shapes && T == o.T && mode == o.mode && arch == o.arch &&
           variant == o.variant && dual == o.dual;
  }
};

// Offsets of per-item scratch are multiples of 64 floats (256 bytes, cudaMalloc's alignment), so
// an item's partial rows have the same alignment as when it ran alone: CUB's block reduction picks
// vectorised or scalar loads by the alignment of a segment's start, and the two sum in different
// orders.
constexpr int64_t kAlignFloats = 64;
inline int64_t align_up(int64_t n) { return (n + kAlignFloats - 1) / kAlignFloats * kAlignFloats; }

inline UnrollPlan plan_unroll(Arch arch, std::span<const PlanShape> shapes, int T, GradMode mode,
                              int variant, bool dual) {
  if (T < 0) throw std::invalid_argument("cuda unroll: T must be >= 0");
  if (dual && mode == GradMode::none)
    throw std::invalid_argument("cuda hvp: a Hessian-vector product needs a meta-gradient mode");
  UnrollPlan p;
  p.shapes.assign(shapes.begin(), shapes.end());
  p.T = T;
  p.mode = mode;
  p.arch = arch;
  p.variant = variant;
  p.dual = dual;
  p.P = param_count(arch);
  p.backward = mode != GradMode::none;
  const size_t n = shapes.size();
  const int64_t scalar = dual ? 2 : 1;  // floats per tape / gT scalar
  p.tape_off.resize(n);
  p.gT_off.resize(n);
  p.partial_off.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const Geometry g = make_geometry(shapes[i].instances, shapes[i].dim);
    p.geo.push_back(g);
    const int64_t C = shapes[i].instances * shapes[i].dim;
    p.tape_off[i] = p.tape_floats;
    if (p.backward) p.tape_floats += align_up(scalar * int64_t(T) * kTapeFields * C);
    p.gT_off[i] = p.gT_floats;
    if (p.backward) p.gT_floats += align_up(scalar * C);
    p.partial_off[i] = p.partial_floats;
    p.partial_floats += align_up(p.item_rows() * g.blocks);
  }
  // Slots grouped by kernel class (items keep their order within a class), one launch per class.
  p.slot.assign(n, -1);
  p.first_block.assign(n + 1, 0);
  int next = 0;
  for (const KernelClass cls :
       {KernelClass::v2, KernelClass::v3_lab, KernelClass::v1_small, KernelClass::v1_large}) {
    LaunchGroup grp;
    grp.cls = cls;
    grp.first_slot = next;
    grp.block0 = p.first_block[next];
    for (size_t i = 0; i < n; ++i) {
      if (kernel_class(p.geo[i], variant, dual) != cls) continue;
      p.slot[i] = next;
      p.first_block[next + 1] = p.first_block[next] + p.geo[i].blocks;
      grp.threads = cls == KernelClass::v2 || cls == KernelClass::v3_lab ? kSmallThreads
                                                                        : std::max(grp.threads, p.geo[i].threads);
      ++next;
    }
    grp.count = next - grp.first_slot;
    grp.blocks = p.first_block[next] - grp.block0;
    if (grp.count > 0) p.groups.push_back(grp);
  }
  if (p.first_block[n] > 0x7fffffffLL) throw std::runtime_error("cuda backend: too many blocks for one launch");
  p.loss_rows = int64_t(n) * (T + 1);
  p.total_rows = p.loss_rows + (p.backward ? int64_t(n) * p.P : 0);
  return p;
}

// Segment s of the reduction sums partial[begin[s] .. end[s]) into reduced[s]: first every item's
// T + 1 loss rows (item order), then every item's P gradient rows. Each segment is one of the
// item's partial rows: its `blocks` per-block values, in block order.
inline void segment_offsets(const UnrollPlan& p, std::vector<int64_t>& begin, std::vector<int64_t>& end) {
  begin.assign(p.total_rows, 0);
  end.assign(p.total_rows, 0);
  const size_t n = p.items();
  const int64_t loss_row0 = p.backward ? p.P : 0;
  for (size_t i = 0; i < n; ++i) {
    const int64_t B = p.geo[i].blocks;
    for (int t = 0; t <= p.T; ++t) {
      const int64_t s = int64_t(i) * (p.T + 1) + t;
      begin[s] = p.partial_off[i] + (loss_row0 + t) * B;
      end[s] = begin[s] + B;
    }
    if (!p.backward) continue;
    for (int r = 0; r < p.P; ++r) {
      const int64_t s = p.loss_rows + int64_t(i) * p.P + r;
      begin[s] = p.partial_off[i] + int64_t(r) * B;
      end[s] = begin[s] + B;
    }
  }
}

// One item's operands (device pointers on the GPU, host pointers in the emulation).
struct PlanInput {
  TaskView<float> task{};
  float* x = nullptr;
  CoordState<float>* coord = nullptr;
  int64_t k0 = 1;
  const float* w = nullptr;
  const float* wdot = nullptr;  // HVP: the direction v
  float* grad = nullptr;        // meta-gradient (or HVP) output; null forward-only
};

// The backend's shared scratch, sized by plan.tape_floats / gT_floats / partial_floats.
struct PlanScratch {
  float* tape = nullptr;
  float* gT = nullptr;
  float* partial = nullptr;
};

// The kernels' arguments, in slot order.
inline std::vector<UnrollArgs> bind_args(const OptimizerHyper& hyper, const UnrollPlan& p,
                                         std::span<const PlanInput> in, const PlanScratch& s) {
  if (in.size() != p.items()) throw std::logic_error("cuda plan: inputs do not match the plan");
  std::vector<UnrollArgs> args(p.items());
  for (size_t i = 0; i < in.size(); ++i) {
    UnrollArgs& a = args[p.slot[i]];
    const Geometry& g = p.geo[i];
    a.hyper = hyper;
    a.w = in[i].w;
    a.wdot = p.dual ? in[i].wdot : nullptr;
    a.P = p.P;
    a.task = in[i].task;
    a.x = in[i].x;
    a.coord = in[i].coord;
    a.k0 = in[i].k0;
    a.T = p.T;
    a.ipb = g.ipb;
    a.blocks = g.blocks;
    a.tape = p.backward && p.T > 0 ? s.tape + p.tape_off[i] : nullptr;
    a.gT = p.backward ? s.gT + p.gT_off[i] : nullptr;
    a.partial = s.partial + p.partial_off[i];
    a.loss_row0 = p.backward ? p.P : 0;
    a.inv_n = 1.0f / static_cast<float>(static_cast<double>(p.shapes[i].instances));  // as unroll_cpu
    a.second = p.mode == GradMode::second_derivatives;
    a.grad = p.backward ? in[i].grad : nullptr;
    a.grad_row0 = p.loss_rows + int64_t(i) * p.P;
  }
  return args;
}

// The items' losses from the first loss_rows values of the reduced array, summed exactly as
// unroll_cpu does from its per-chunk sums.
inline std::vector<UnrollLoss> assemble(const UnrollPlan& p, std::span<const float> losses) {
  if (int64_t(losses.size()) < p.loss_rows) throw std::logic_error("cuda plan: too few losses");
  std::vector<UnrollLoss> out(p.items());
  for (size_t i = 0; i < p.items(); ++i) {
    const float inv_n = 1.0f / static_cast<float>(static_cast<double>(p.shapes[i].instances));
    out[i].step_loss.assign(p.T + 1, 0.0);
    for (int t = 0; t <= p.T; ++t) {
      const float step = losses[i * (p.T + 1) + t] * inv_n;
      out[i].step_loss[t] = static_cast<double>(step);
      out[i].meta_loss += step;
    }
  }
  return out;
}

// Dynamic shared memory of a kernel class, in bytes (dual: the HVP's Dual<float> instantiation).
// v2's sizes are the kernel header's (unroll_v2_kernels.cuh), passed in by the caller.
constexpr int kStageRows = 32;     // v1: coordinates staged at a time for the weight gradient
constexpr int kStageStride = 287;  // v1: floats per staged coordinate (RNNprop's 106 + 181)

inline size_t v1_forward_smem(KernelClass cls, int P, bool dual) {
  const size_t maxt = cls == KernelClass::v1_large ? kLargeThreads : kSmallThreads;
  return (dual ? 8 : 4) * (static_cast<size_t>(P) + 3 * maxt);
}
inline size_t v1_backward_smem(KernelClass cls, int P, bool dual) {
  const size_t maxt = cls == KernelClass::v1_large ? kLargeThreads : kSmallThreads;
  return (dual ? 8 : 4) * (2 * static_cast<size_t>(P) + kStageRows * kStageStride + 3 * maxt);
}

}  // namespace ml2o::cuda
