// Host/device annotation: per-element math is written once and compiled for both backends.
#pragma once
#if defined(__CUDACC__)
#define ML2O_HD __host__ __device__ __forceinline__
#else
#define ML2O_HD inline
#endif

#include <cmath>

namespace ml2o {
// Unqualified math in templated code must pick the float overloads for float (not ::exp(double)),
// on the host as on the device; Dual numbers still find theirs by argument-dependent lookup.
using std::cos;
using std::exp;
using std::fabs;
using std::log;
using std::pow;
using std::sin;
using std::sqrt;
using std::tanh;
}  // namespace ml2o
