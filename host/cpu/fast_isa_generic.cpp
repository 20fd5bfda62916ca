// The fast unroll's kernels for any CPU (x86-64 baseline: SSE2, no FMA): the fallback.
#define ML2O_FAST_NS generic
#define ML2O_FAST_ISA "generic"
#define ML2O_FAST_GB 2
#define ML2O_FAST_RB 2
#define ML2O_FAST_WR 1
#define ML2O_FAST_WC 2
#include "fast_kernels.inc"

namespace ml2o::cpu_fast {
const Kernels& kernels_generic() { return generic::kernels(); }
}  // namespace ml2o::cpu_fast
