// LAB: a device check of the tile primitives (include/ml2o/tile_mma.hpp) on the real mma.sync:
// one warp computes D[16 x 80] = C + A[16 x K] . B[K x 80] with tile::warp_gemm (the shape of an
// LSTM gate product per m-tile). Used by tests/test_cuda.cpp (TileMmaOnDevice, skipped without a
// device) to compare the hardware with the software model. Host declarations only.
#pragma once
#include <vector>

namespace ml2o::lab {

// A row-major [16 x K] (K a multiple of 8), B [K x 80], C [16 x 80]; split = 3xTF32, else one
// TF32 product. Returns D [16 x 80], row-major. Throws on a CUDA error.
std::vector<float> cuda_tile_gemm(const std::vector<float>& A, const std::vector<float>& B,
                                  const std::vector<float>& C, int K, bool split);

}  // namespace ml2o::lab
