// libFuzzer target for the config parser: any input must either parse or throw ConfigError whose
// message starts with the source name, has FILE:LINE:COL and stays on one line. Anything else
// (another exception type, a crash, a sanitizer report) is a finding. See fuzz/README.md.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ml2o/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    ml2o::Config c = ml2o::parse_config(text, "fuzz.toml");
    // A parsed config must serialise (the run records it).
    (void)c.json.dump();
  } catch (const ml2o::ConfigError& e) {
    const std::string msg = e.what();
    if (msg.rfind("fuzz.toml:", 0) != 0) std::abort();
    if (msg.find('\n') != std::string::npos) std::abort();
    if (msg.size() > 4096) std::abort();  // messages stay readable whatever the input
  }
  // Any other exception escapes and libFuzzer reports it as a crash.
  return 0;
}
