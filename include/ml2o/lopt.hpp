// Learned optimizers as plain data: architecture settings plus a flat float32 weight vector, and
// the params file format.
//
// Params file (little-endian):
//   magic "ML2OPRM1" (8 bytes) | u32 version (=1) | u32 arch (0 rnnprop, 1 dmlstm)
//   | f64 dm_p | f64 dm_scale | u32 tensor count
//   | per tensor: u32 name length, name bytes, u32 rank, u32 dims[rank]
//   | u64 weight count | float32 weights[count] | u64 FNV-1a checksum of every byte before it
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ml2o/cell.hpp"

namespace ml2o {

struct TensorInfo {
  std::string name;
  std::vector<int> shape;
  int offset;
  int size() const {
    int n = 1;
    for (int s : shape) n *= s;
    return n;
  }
};

const char* arch_name(Arch a);
bool parse_arch(const std::string& name, Arch* out);
constexpr const char* kArchNames = "rnnprop, dmlstm";
int param_count(Arch a);
std::vector<TensorInfo> tensor_table(Arch a);

struct LearnedOptimizer {
  OptimizerHyper hyper;
  std::vector<float> weights;
};

// Initialisation (docs/method.md section 2): linear weights truncated normal std 1/sqrt(fan_in), linear biases 0,
// LSTM weights and biases truncated normal std 1/sqrt(40). Deterministic in the seed.
LearnedOptimizer init_optimizer(const OptimizerHyper& hyper, uint64_t seed);

uint64_t fnv1a64(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ull);

// Serialise to bytes / parse from bytes; parse throws FormatError naming what is wrong.
std::string params_to_bytes(const LearnedOptimizer& opt);
LearnedOptimizer params_from_bytes(const std::string& bytes, const std::string& source);

void save_params(const std::string& path, const LearnedOptimizer& opt);  // atomic
// Reads at most max_params_bytes() (the size of the largest valid file), checking the magic first.
LearnedOptimizer load_params(const std::string& path);
size_t max_params_bytes();

}  // namespace ml2o
