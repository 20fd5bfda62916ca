// The CPU backend's fast float unroll: the same math as unroll_cpu<float> (the oracle it is tested
// against), run on tiles of kTile coordinates in structure-of-arrays form so that each LSTM's gate
// products are small GEMMs over the tile with the weights in cache, vectorised across the tile.
//
// Work split (fixed by the task's shape, never by the thread count, so results are bit-identical
// for any number of threads): a chunk is a run of whole instances (the optimizee gradient needs
// every coordinate of an instance), cut into tiles (the last one padded with inert lanes); chunks
// form at most kMaxGroups consecutive groups; a group is one thread's unit of work, accumulating its
// chunks in order into its own weight-gradient and loss partials, which are summed in group order.
//
// The per-tile math lives in fast_kernels.inc, compiled once per instruction set (generic x86-64 /
// any CPU, AVX2+FMA, AVX-512) into separate namespaces; the widest one the CPU supports is picked
// at run time (__builtin_cpu_supports).
#pragma once
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "fast_layout.hpp"
#include "ml2o/unroll.hpp"

namespace ml2o::cpu_fast {

// 64-byte aligned float buffer that only grows (no allocation once warm).
class Buffer {
 public:
  float* get(size_t n);  // at least n floats, contents unspecified
 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> p_;
  size_t n_ = 0;
};

// Buffers reused across calls: per thread (tape, state, gradients) and per group (partials).
struct Workspace {
  struct PerThread {
    Buffer records, states, adjoints, g_hist, x_hist, ax, dg, hv, delta, scratch;
  };
  std::vector<PerThread> threads;
  Buffer group_dw, group_loss, bc;
};

// "auto" (the widest the CPU runs), "avx512", "avx2" or "generic". Throws std::invalid_argument for
// another name or one this CPU (or build) cannot run.
void set_isa(const std::string& isa);
std::string isa();                       // the one in use
std::vector<std::string> runnable_isas();  // generic first

// The unit of work shared between the processes of a distributed run (dist.hpp): the groups,
// fixed by (d, N). group_instances: the instances [first, second) of group gi.
int64_t group_count(int d, int64_t N);
std::pair<int64_t, int64_t> group_instances(int d, int64_t N, int64_t gi);

// unroll_chunks' contract with groups for chunks: advances the coordinates of groups [first, last)
// only (traj.k is the caller's) and returns their partials, one row per group; reduce_chunks sums
// them. Any split of the groups gives the same sums, and unroll()'s.
ChunkPartials<float> unroll_groups(const OptimizerHyper& hyper, const std::vector<float>& w,
                                   const TaskView<float>& task, Trajectory<float>& traj, int T,
                                   GradMode mode, Workspace& ws, int64_t first, int64_t last,
                                   int threads = 0);

// unroll_cpu<float>'s contract (all GradModes). threads = 0: OpenMP's default, fewer for small
// calls (one thread per 2,048 coordinate-steps at most); results are the same for any count.
UnrollResult<float> unroll(const OptimizerHyper& hyper, const std::vector<float>& w,
                           const TaskView<float>& task, Trajectory<float>& traj, int T,
                           GradMode mode, Workspace& ws, int threads = 0);

}  // namespace ml2o::cpu_fast
