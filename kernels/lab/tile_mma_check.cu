// LAB: tile_mma_check.hpp's device check (one warp, global-memory operands, no performance intent).
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "ml2o/tile_mma.hpp"
#include "tile_mma_check.hpp"

namespace ml2o::lab {
namespace {

constexpr int kN = 80, kNT = kN / 8;

template <tile::Precision P>
__global__ void tile_gemm_kernel(const float* A, const float* B, const float* C, float* D, int K) {
  const int lane = static_cast<int>(threadIdx.x);
  tile::FragC acc[kNT];
  for (int n = 0; n < kNT; ++n) acc[n] = tile::load_frag<tile::LayoutC>(tile::row_major(C + 8 * n, kN), lane);
  tile::warp_gemm<kNT, P>(tile::row_major(A, K), tile::row_major(B, kN), K, lane, acc);
  for (int n = 0; n < kNT; ++n)
    for (int i = 0; i < tile::LayoutC::kRegs; ++i) {
      const tile::Elem e = tile::LayoutC::at(lane, i);
      D[e.row * kN + 8 * n + e.col] = acc[n].r[i];
    }
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("cuda_tile_gemm: ") + what + ": " + cudaGetErrorString(e));
}

}  // namespace

std::vector<float> cuda_tile_gemm(const std::vector<float>& A, const std::vector<float>& B,
                                  const std::vector<float>& C, int K, bool split) {
  if (K <= 0 || K % 8 != 0 || A.size() != size_t(16) * K || B.size() != size_t(K) * kN ||
      C.size() != size_t(16) * kN)
    throw std::invalid_argument("cuda_tile_gemm: A [16 x K], B [K x 80], C [16 x 80], K a multiple of 8");
  float *dA = nullptr, *dB = nullptr, *dC = nullptr, *dD = nullptr;
  std::vector<float> D(C.size());
  auto bytes = [](const std::vector<float>& v) { return v.size() * sizeof(float); };
  try {
    check(cudaMalloc(&dA, bytes(A)), "cudaMalloc");
    check(cudaMalloc(&dB, bytes(B)), "cudaMalloc");
    check(cudaMalloc(&dC, bytes(C)), "cudaMalloc");
    check(cudaMalloc(&dD, bytes(C)), "cudaMalloc");
    check(cudaMemcpy(dA, A.data(), bytes(A), cudaMemcpyHostToDevice), "copy A");
    check(cudaMemcpy(dB, B.data(), bytes(B), cudaMemcpyHostToDevice), "copy B");
    check(cudaMemcpy(dC, C.data(), bytes(C), cudaMemcpyHostToDevice), "copy C");
    if (split) tile_gemm_kernel<tile::Precision::tf32x3><<<1, 32>>>(dA, dB, dC, dD, K);
    else tile_gemm_kernel<tile::Precision::tf32><<<1, 32>>>(dA, dB, dC, dD, K);
    check(cudaGetLastError(), "launch");
    check(cudaMemcpy(D.data(), dD, bytes(D), cudaMemcpyDeviceToHost), "copy D");
  } catch (...) {
    cudaFree(dA), cudaFree(dB), cudaFree(dC), cudaFree(dD);
    throw;
  }
  cudaFree(dA), cudaFree(dB), cudaFree(dC), cudaFree(dD);
  return D;
}

}  // namespace ml2o::lab
