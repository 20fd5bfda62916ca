// Experiment configuration: one TOML file declares the whole protocol (SPEC sections 4-6).
// Every key is declared once, in the tables of host/config/config.cpp; configs/README.md's key
// reference is generated from them (config_reference_markdown).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ml2o/io.hpp"
#include "ml2o/settings.hpp"

namespace ml2o {

// A config or flag error: "FILE:LINE: key 'a.b': problem; allowed: ...". Exit code 2.
struct ConfigError : FormatError {
  using FormatError::FormatError;
};

struct Config {
  std::string path;  // the file it came from (or the name of the text it was parsed from)
  std::string text;  // that TOML text, kept as a run's config.toml
  RunConfig run;
  OptimizerHyper optimizer;
  TrainConfig train;
  Ml2oConfig ml2o;
  AdaptConfig adapt;
  EvalConfig eval;
  BaselinesConfig baselines;
  ArmsConfig arms;
  nlohmann::json json;  // the full resolved config (defaults filled in), written to summary.json
};

// Parses and validates; throws ConfigError naming file, line, key and what is allowed.
Config load_config(const std::string& path);
Config parse_config(const std::string& text, const std::string& source_name);

// The key reference (markdown: one table per section, then the task tables' keys), generated from
// the schema; configs/README.md holds it between <!-- keys:begin --> and <!-- keys:end -->.
std::string config_reference_markdown();

}  // namespace ml2o
