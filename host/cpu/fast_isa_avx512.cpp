// The fast unroll's kernels for AVX-512 (F, VL, DQ, BW) + FMA: CMakeLists.txt compiles this file
// alone with those flags; it runs only where __builtin_cpu_supports says so (fast_unroll.cpp).
#if defined(__x86_64__) && defined(__AVX512F__)
#define ML2O_FAST_NS avx512
#define ML2O_FAST_ISA "avx512"
#define ML2O_FAST_GB 16
#define ML2O_FAST_RB 8
#define ML2O_FAST_WR 4
#define ML2O_FAST_WC 4
#include "fast_kernels.inc"

namespace ml2o::cpu_fast {
const Kernels& kernels_avx512() { return avx512::kernels(); }
}  // namespace ml2o::cpu_fast
#else
#include "fast_layout.hpp"

namespace ml2o::cpu_fast {
const Kernels& kernels_avx512() {
  static const Kernels none{"", nullptr, nullptr, nullptr};  // not built for this target
  return none;
}
}  // namespace ml2o::cpu_fast
#endif
