// The fast unroll's kernels for AVX2 + FMA: CMakeLists.txt compiles this file alone with
// -mavx2 -mfma; it runs only where __builtin_cpu_supports says so (fast_unroll.cpp).
#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#define ML2O_FAST_NS avx2
#define ML2O_FAST_ISA "avx2"
#define ML2O_FAST_GB 5
#define ML2O_FAST_RB 4
#define ML2O_FAST_WR 2
#define ML2O_FAST_WC 2
#include "fast_kernels.inc"

namespace ml2o::cpu_fast {
const Kernels& kernels_avx2() { return avx2::kernels(); }
}  // namespace ml2o::cpu_fast
#else
#include "fast_layout.hpp"

namespace ml2o::cpu_fast {
const Kernels& kernels_avx2() {
  static const Kernels none{"", nullptr, nullptr, nullptr};  // not built for this target
  return none;
}
}  // namespace ml2o::cpu_fast
#endif
