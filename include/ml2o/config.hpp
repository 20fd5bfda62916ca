// Experiment configuration: one TOML file declares the whole protocol (docs/method.md sections 4-6).
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

// Whether any task of the run (D_train, D_adapt, D_test) is of the mlp family.
bool uses_mlp(const Config& cfg);
// The steps at which an mlp test task's iterates are scored (test accuracy, full training loss):
// 0, eval.report_every, 2 eval.report_every, ..., and eval.steps.
std::vector<int> mlp_report_steps(const EvalConfig& eval);

// Parses and validates; throws ConfigError naming file, line, key and what is allowed.
Config load_config(const std::string& path);
Config parse_config(const std::string& text, const std::string& source_name);

// The resolved config (every key, defaults and derived seeds filled in) as TOML text:
// parse_config of it gives the same settings (json). A run saves it as OUT/config.toml.
std::string config_to_toml(const Config& cfg);

// The key reference (markdown: one table per section, then the task tables' keys), generated from
// the schema; configs/README.md holds it between <!-- keys:begin --> and <!-- keys:end -->.
std::string config_reference_markdown();

}  // namespace ml2o
