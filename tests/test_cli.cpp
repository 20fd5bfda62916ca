// Command-line flags: every malformed invocation exits with code 2, a message naming the flag and
// what is allowed, and writes nothing.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "child.hpp"
#include "ml2o/config.hpp"
#include "ml2o/io.hpp"
#include "ml2o/lopt.hpp"

namespace fs = std::filesystem;

namespace ml2o {
namespace {

struct CliCase {
  std::string args;      // $C: a valid config, $P: a valid params file, $G: a garbage file, $O: out path
  int exit_code;
  std::string fragment;  // expected in stderr
};

class CliFlags : public ::testing::TestWithParam<CliCase> {};

std::string expand(std::string s, const std::map<std::string, std::string>& vars) {
  for (const auto& [k, v] : vars)
    for (size_t p; (p = s.find(k)) != std::string::npos;) s.replace(p, k.size(), v);
  return s;
}

TEST_P(CliFlags, RejectedWithAClearMessageAndNothingWritten) {
  const fs::path dir = fs::temp_directory_path() / ("ml2o_cli_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string cfg = std::string(ML2O_SOURCE_DIR) + "/configs/lasso-quick.toml";
  const std::string params = (dir / "ok.params").string();
  save_params(params, init_optimizer(OptimizerHyper{}, 1));
  std::ofstream(dir / "garbage.params") << "definitely not params";
  const fs::path out = dir / "out";
  const std::map<std::string, std::string> vars = {
      {"$C", cfg}, {"$P", params}, {"$G", (dir / "garbage.params").string()}, {"$O", out.string()}};
  const std::string args = expand(GetParam().args, vars);
  std::string err;
  const int rc = testing::run_ml2o(testing::words(args), &err);
  EXPECT_EQ(rc, GetParam().exit_code) << args << "\n" << err;
  EXPECT_NE(err.find(expand(GetParam().fragment, vars)), std::string::npos) << args << "\n" << err;
  if (GetParam().exit_code != 0) EXPECT_FALSE(fs::exists(out)) << "wrote " << out << " for: " << args;
  fs::remove_all(dir);
}

const CliCase kCases[] = {
    {"", 2, "A subcommand is required"},
    {"frobnicate", 2, "unknown subcommand 'frobnicate'; the subcommands are: run, sweep, train, adapt, eval, baseline, info, config-reference"},
    {"--threads 2 frobnicate --out $O", 2, "unknown subcommand 'frobnicate'"},
    {"info --threads 1", 0, "OpenMP threads: 1"},
    {"info --threads 0", 2, "--threads: Value 0 not in range"},
    {"run $C --out $O --checkpoint-every nan", 2, "--checkpoint-every: must be a number >= 0 (seconds), got 'nan'"},
    {"run $C --out $O --checkpoint-every inf", 2, "got 'inf'"},
    {"train --config $C --out $O --checkpoint-every -0.5", 2, "got '-0.5'"},
    {"--threads 0 info", 2, "--threads: Value 0 not in range"},
    {"--threads many info", 2, "--threads"},
    {"info --verbose", 2, "--verbose"},
    {"run", 2, "config is required"},
    {"run /nonexistent.toml --out $O", 2, "File does not exist: /nonexistent.toml"},
    {"run $C", 2, "--out is required"},
    {"run $C --out $O --backend gpu", 2, "--backend: gpu not in {cpu,cuda,auto}"},
    {"run $C --out $O --backend", 2, "--backend"},
    {"run $C --out $O --checkpoint-every -1", 2, "--checkpoint-every: must be a number >= 0"},
    {"run $C --out $O --checkpoint-every soon", 2, "--checkpoint-every"},
    {"run $C --out $O --foo", 2, "The following argument was not expected: --foo"},
    {"run $C $C --out $O", 2, "not expected"},
    {"run /tmp --out $O", 2, "File is actually a directory"},
    {"run $G --out $O", 2, "$G"},
    {"train --method ml2o --out $O", 2, "--config is required"},
    {"train --config $C --method maml --out $O", 2, "--method: maml not in {l2o,ml2o}"},
    {"train --config $C --out $O --init /nonexistent.params", 2, "--init: File does not exist"},
    {"train --config $C --out $O --init $G", 2, "not an ml2o params file"},
    {"train --config $C", 2, "--out is required"},
    {"adapt --config $C --params /nonexistent --out $O", 2, "--params: File does not exist"},
    {"adapt --config $C --params $P --K -1 --out $O", 2, "--K: Value -1 not in range"},
    {"adapt --config $C --params $P --K five --out $O", 2, "--K"},
    {"adapt --config $C --params $P --source train --out $O", 2, "--source: train not in {test,adapt}"},
    {"adapt --config $C --params $P --seed-index -3 --out $O", 2, "--seed-index: Value -3 not in range"},
    {"adapt --config $C --params $G --out $O", 2, "$G: not an ml2o params file"},
    {"adapt --config $C --params $P", 2, "--out is required"},
    {"eval --config $C --params $P --out $O --steps 0", 2, "--steps: Value 0 not in range"},
    {"eval --config $C --params $G --out $O", 2, "not an ml2o params file"},
    {"eval --config $C --out $O", 2, "--params is required"},
    {"baseline --config $C --optimizer newton --out $O", 2, "--optimizer: newton not in"},
    {"baseline --config $C --lr -1 --out $O", 2, "must be a positive number, got '-1'"},
    {"baseline --config $C --lr abc --out $O", 2, "must be a positive number, got 'abc'"},
    {"baseline --config $C --lr nan --out $O", 2, "must be a positive number"},
    {"baseline --config $C --lr inf --out $O", 2, "must be a positive number"},
    {"baseline --config $C --steps 0 --out $O", 2, "--steps: Value 0 not in range"},
    {"baseline --config $C --task test --out $O", 2, "--task: test not in {eval,adapt,train}"},
    {"baseline --config $C --out $O --backend tpu", 2, "--backend: tpu not in"},
    {"baseline --optimizer adam --out $O", 2, "--config is required"},
    {"--help", 0, "Subcommands"},
    {"run --help", 0, "--resume"},
    {"sweep $C --out $O", 2, "--train-seeds is required"},
    {"sweep $C --train-seeds 0,0 --out $O", 2, "--train-seeds: seed 0 is given twice"},
    {"sweep $C --train-seeds 0,x --out $O", 2, "--train-seeds: 'x' is not a meta-training seed"},
    {"sweep $C --train-seeds 0,-1 --out $O", 2, "--train-seeds: '-1' is not a meta-training seed"},
    {"sweep $C --train-seeds , --out $O", 2, "--train-seeds"},
    {"sweep $C --train-seeds 1 --out $O --backend gpu", 2, "--backend: gpu not in"},
    {"sweep --help", 0, "--train-seeds"},
    {"config-reference --help", 0, "config key"},
    {"config-reference extra", 2, "not expected"},
};

INSTANTIATE_TEST_SUITE_P(Malformed, CliFlags, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return "case" + std::to_string(info.index); });

TEST(Cli, ConfigReferencePrintsTheGeneratedKeyReference) {
  const fs::path out = fs::temp_directory_path() / ("ml2o_cli_ref_" + std::to_string(::getpid()) + ".md");
  const int rc = std::system((std::string(ML2O_BINARY) + " config-reference >" + out.string()).c_str());
  ASSERT_TRUE(WIFEXITED(rc));
  EXPECT_EQ(WEXITSTATUS(rc), 0);
  EXPECT_EQ(read_file(out.string()), config_reference_markdown());
  fs::remove(out);
}

}  // namespace
}  // namespace ml2o
