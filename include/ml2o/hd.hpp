// Host/device annotation: per-element math is written once and compiled for both backends.
#pragma once
#if defined(__CUDACC__)
#define ML2O_HD __host__ __device__ __forceinline__
#else
#define ML2O_HD inline
#endif
