// libFuzzer target for the checkpoint reader: an input (edits of a base checkpoint, or raw bytes;
// see checkpoint_input.hpp) must either load and re-serialise to the same bytes, or be refused with
// a one-line FormatError naming the file. Seed corpus: fuzz/corpus/checkpoint/ (replayed by
// ml2o_tests, Checkpoint.FuzzCorpusReplays). See fuzz/README.md.
#include <cstdio>
#include <cstdlib>

#include "checkpoint_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string problem = ml2o::fuzz::check_input(data, size);
  if (!problem.empty()) {
    std::fprintf(stderr, "%s\n", problem.c_str());
    std::abort();
  }
  return 0;
}
