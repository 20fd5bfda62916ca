// The CUDA backend (kernels/). Declared here so host code can create it; defined only when the
// project is built with ML2O_CUDA (ML2O_HAVE_CUDA is then defined).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "ml2o/backend.hpp"

namespace ml2o {

bool cuda_device_present();                  // a CUDA device is visible at run time
std::unique_ptr<Backend> make_cuda_backend();  // throws std::runtime_error without a device

// Draws a task on the device with the same counter-based draws as sample_task<float>: the values
// are bit-identical to the CPU sampler's (up to CUDA's double log/cos, within 2 ulp of libm,
// landing on the other side of a float rounding boundary: about 1e-8 per element).
Task<float> cuda_sample_task(const TaskSpec& spec);

// Process-wide counters of the CUDA backend (benches and tests).
struct CudaStats {
  int64_t launches = 0;           // kernel launches so far (a CUB call counts as one; a kernel
                                  // replayed in a CUDA graph counts each time it runs)
  int64_t graph_launches = 0;     // CUDA graph launches so far (each replays a whole unroll)
  int64_t memcpys = 0;            // host<->device copies so far
  int64_t device_bytes = 0;       // device memory held by the backend now (buffers + task cache)
  int64_t peak_device_bytes = 0;  // its peak since the last cuda_reset_peak()
  double last_kernel_ms = 0.0;    // device time of the last unroll / baseline (CUDA events)
  size_t mem_free = 0, mem_total = 0;  // cudaMemGetInfo
};
CudaStats cuda_stats();
void cuda_reset_peak();
// Tests: fill every device output and scratch buffer with NaN before each run, so an element the
// kernels fail to write shows up as NaN.
void cuda_set_poison(bool on);
// Unroll kernel variant for tests and benches: 1 (one thread per coordinate), 2 (tiled, fully
// fused; d > 128 runs v1), 3 (v3-lab: the v3 forward with v2's backward, opt-in only, unverified on
// hardware: docs/kernels.md), 0 = back to ML2O_CUDA_KERNEL (v1|v2|v3-lab, read once) or the default.
// cuda_kernel_variant() is the variant in use; both throw for an invalid ML2O_CUDA_KERNEL.
void cuda_set_kernel_variant(int variant);
int cuda_kernel_variant();
// CUDA graphs for repeated unrolls (a launch sequence seen twice with the same layout is captured
// and replayed): 1 = off, 2 = on, 0 = back to ML2O_CUDA_GRAPHS (on|off, read once) or the default
// (on). cuda_graphs() says whether they are in use; both throw for an invalid ML2O_CUDA_GRAPHS.
void cuda_set_graphs(int mode);
bool cuda_graphs();

}  // namespace ml2o
