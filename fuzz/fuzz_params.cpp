// libFuzzer target for the params-file reader: any input must either load or throw FormatError
// naming the source. Inputs whose first byte is odd get a valid checksum written over their last 8
// bytes first, so that the fuzzer reaches the field checks behind the checksum. See fuzz/README.md.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ml2o/io.hpp"
#include "ml2o/lopt.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool reseal = data[0] & 1;
  std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (reseal && bytes.size() >= 8) {
    const uint64_t sum = ml2o::fnv1a64(bytes.data(), bytes.size() - 8);
    std::memcpy(bytes.data() + bytes.size() - 8, &sum, 8);
  }
  try {
    ml2o::LearnedOptimizer opt = ml2o::params_from_bytes(bytes, "fuzz.params");
    // What loads must round-trip.
    if (ml2o::params_to_bytes(opt) != bytes) std::abort();
  } catch (const ml2o::FormatError& e) {
    if (std::string(e.what()).rfind("fuzz.params: ", 0) != 0) std::abort();
  }
  return 0;
}
