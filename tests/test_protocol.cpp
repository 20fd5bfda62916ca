// The protocol end to end on a tiny config: outputs, bit-identical reruns, output protection,
// kill-and-resume (SIGKILL at random moments), Ctrl-C, and a full disk.
#include <gtest/gtest.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "child.hpp"
#include "ml2o/config.hpp"
#include "ml2o/io.hpp"
#include "ml2o/protocol.hpp"
#include "ml2o/spawn.hpp"

namespace fs = std::filesystem;

namespace ml2o {
namespace {

// Small enough to run in about a second, with every arm and both training methods.
constexpr const char* kTinyConfig = R"(
[run]
name = "tiny"
seed = 7
backend = "cpu"

[train]
max_epochs = 4
curriculum = [20, 40]
eval_every = 2
eval_batches = 1

[[train.task]]
family = "lasso"
dim = 3
instances = 4
sigma = [0.5, 1.0]

[adapt]
K = [2]
trajectory = 40

[eval]
steps = 60
seeds = 2

[eval.task]
family = "lasso"
dim = 3
instances = 4
sigma = 10.0

[baselines]
optimizers = ["adam", "fista"]
lrs = [0.01, 0.1]
)";

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/ml2o_test_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::string slurp(const fs::path& p) { return read_file(p.string()); }

fs::path write_config(const fs::path& dir, const std::string& text, const char* name = "tiny.toml") {
  const fs::path p = dir / name;
  std::ofstream(p) << text;
  return p;
}

// Runs the ml2o binary; returns its exit status (128 + signal when killed).
int run_cli(const std::string& args, std::string* err = nullptr) {
  return testing::run_ml2o(testing::words(args), err);
}

// Starts ml2o in a child process and kills it with `sig` after `delay`; returns the wait status.
int run_and_signal(const std::vector<std::string>& args, std::chrono::milliseconds delay, int sig) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(ML2O_BINARY));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 2);
    ::execv(ML2O_BINARY, argv.data());
    ::_exit(127);
  }
  std::this_thread::sleep_for(delay);
  ::kill(pid, sig);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

const std::vector<std::string> kOutputs = {"curves.csv", "l2o.params", "ml2o.params"};

TEST(Protocol, WritesCurvesSummaryPlotAndParams) {
  TempDir tmp;
  const Config cfg = parse_config(kTinyConfig, "tiny.toml");
  write_config(tmp.path, kTinyConfig);
  Config c2 = load_config((tmp.path / "tiny.toml").string());
  RunOptions opts;
  opts.out_dir = (tmp.path / "out").string();
  run_protocol(c2, opts);
  for (const char* f : {"curves.csv", "summary.json", "l2o.params", "ml2o.params", "config.toml"})
    EXPECT_TRUE(fs::exists(tmp.path / "out" / f)) << f;
  const auto summary = nlohmann::json::parse(slurp(tmp.path / "out" / "summary.json"));
  std::set<std::string> arms;
  for (const auto& a : summary["arms"]) {
    arms.insert(a["arm"].get<std::string>());
    EXPECT_EQ(a["seeds"].get<int>(), 2);
    EXPECT_TRUE(a["final_mean"].is_number()) << a.dump();
  }
  for (const char* a : {"vanilla", "direct_transfer", "transfer_learning", "ml2o", "adam", "fista"})
    EXPECT_TRUE(arms.count(a)) << a;
  EXPECT_EQ(summary["engine"]["version"], engine_version());
  EXPECT_EQ(summary["config"]["eval"]["steps"], 60);
  // Long format: header + arms x seeds x (steps + 1) rows.
  std::istringstream csv(slurp(tmp.path / "out" / "curves.csv"));
  std::string line;
  size_t rows = 0;
  std::getline(csv, line);
  EXPECT_EQ(line, "arm,K,source,seed,step,objective");
  while (std::getline(csv, line)) ++rows;
  EXPECT_EQ(rows, summary["arms"].size() * 2 * 61);
  // FISTA converges on LASSO: its final objective is below its start.
  for (const auto& a : summary["arms"])
    if (a["arm"] == "fista") EXPECT_LT(a["final_mean"].get<double>(), a["start_mean"].get<double>());
  if (run_program({"gnuplot", "--version"}, "").ok()) {
    EXPECT_TRUE(fs::exists(tmp.path / "out" / "plot.png"));
    EXPECT_GT(fs::file_size(tmp.path / "out" / "plot.png"), 1000u);
  }
  (void)cfg;
}

TEST(Protocol, RerunIsBitIdenticalAndThreadCountIndependent) {
  TempDir tmp;
  const fs::path cfg = write_config(tmp.path, kTinyConfig);
  ASSERT_EQ(run_cli("--threads 1 run " + cfg.string() + " --out " + (tmp.path / "a").string()), 0);
  ASSERT_EQ(run_cli("--threads 2 run " + cfg.string() + " --out " + (tmp.path / "b").string()), 0);
  for (const auto& f : kOutputs) EXPECT_EQ(slurp(tmp.path / "a" / f), slurp(tmp.path / "b" / f)) << f;
}

TEST(Protocol, RefusesToOverwriteAnEarlierRun) {
  TempDir tmp;
  const fs::path cfg = write_config(tmp.path, kTinyConfig);
  const std::string out = (tmp.path / "out").string();
  ASSERT_EQ(run_cli("run " + cfg.string() + " --out " + out), 0);
  const std::string before = slurp(tmp.path / "out" / "curves.csv");
  std::string err;
  EXPECT_EQ(run_cli("run " + cfg.string() + " --out " + out, &err), 2);
  EXPECT_NE(err.find("already holds a run of 'ml2o run'; resume it with --resume"), std::string::npos) << err;
  EXPECT_EQ(slurp(tmp.path / "out" / "curves.csv"), before);
  // A different config cannot resume it either.
  std::string other = kTinyConfig;
  other.replace(other.find("seed = 7"), 8, "seed = 8");
  const fs::path cfg2 = write_config(tmp.path, other, "other.toml");
  EXPECT_EQ(run_cli("run " + cfg2.string() + " --out " + out + " --resume", &err), 2);
  EXPECT_NE(err.find("differs from the config"), std::string::npos) << err;
  EXPECT_EQ(slurp(tmp.path / "out" / "curves.csv"), before);
}

TEST(Protocol, KilledAtRandomMomentsThenResumedIsBitIdentical) {
  TempDir tmp;
  const fs::path cfg = write_config(tmp.path, kTinyConfig);
  const std::string ref = (tmp.path / "ref").string();
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(run_cli("run " + cfg.string() + " --out " + ref + " --checkpoint-every 0"), 0);
  const auto full_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now() - t0).count();
  std::mt19937 rng(12345);
  const int trials = 8;
  int killed_midway = 0;
  for (int trial = 0; trial < trials; ++trial) {
    const std::string out = (tmp.path / ("k" + std::to_string(trial))).string();
    // One or two kills at random moments, each followed by a resume (the last one unkilled).
    std::vector<std::string> args = {"run", cfg.string(), "--out", out, "--checkpoint-every", "0"};
    for (int kill = 0; kill < 1 + trial % 2; ++kill) {
      const auto delay = std::chrono::milliseconds(std::uniform_int_distribution<long>(5, std::max<long>(10, full_ms))(rng));
      const int status = run_and_signal(args, delay, SIGKILL);
      if (WIFSIGNALED(status)) ++killed_midway;
      args = {"run", cfg.string(), "--out", out, "--checkpoint-every", "0", "--resume"};
    }
    std::string err;
    ASSERT_EQ(run_cli("run " + cfg.string() + " --out " + out + " --resume --checkpoint-every 0", &err), 0) << err;
    for (const auto& f : kOutputs)
      EXPECT_EQ(slurp(fs::path(out) / f), slurp(fs::path(ref) / f)) << "trial " << trial << " " << f;
  }
  std::cout << killed_midway << " of the kills landed mid-run (full run " << full_ms << " ms)\n";
  EXPECT_GT(killed_midway, 0);
}

TEST(Protocol, CtrlCCheckpointsAndSaysHowToResume) {
  TempDir tmp;
  const fs::path cfg = write_config(tmp.path, kTinyConfig);
  const std::string out = (tmp.path / "out").string();
  // Interrupt as soon as training is under way: poll for the checkpoint directory.
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string errfile = (tmp.path / "stderr.txt").string();
    ::freopen(errfile.c_str(), "w", stderr);
    ::execl(ML2O_BINARY, ML2O_BINARY, "run", cfg.c_str(), "--out", out.c_str(), nullptr);
    ::_exit(127);
  }
  for (int i = 0; i < 2000 && !fs::exists(fs::path(out) / "checkpoints"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ::kill(pid, SIGINT);
  int status = 0;
  ::waitpid(pid, &status, 0);
  const std::string err = slurp(tmp.path / "stderr.txt");
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) GTEST_SKIP() << "run finished before the signal";
  ASSERT_TRUE(WIFEXITED(status)) << err;
  EXPECT_EQ(WEXITSTATUS(status), 130) << err;
  EXPECT_NE(err.find("resume with: ml2o run"), std::string::npos) << err;
  EXPECT_EQ(run_cli("run " + cfg.string() + " --out " + out + " --resume"), 0);
  const std::string ref = (tmp.path / "ref").string();
  ASSERT_EQ(run_cli("run " + cfg.string() + " --out " + ref), 0);
  for (const auto& f : kOutputs) EXPECT_EQ(slurp(fs::path(out) / f), slurp(fs::path(ref) / f)) << f;
}

TEST(Protocol, FullDiskGivesAClearErrorAndKeepsThePreviousCheckpoint) {
  TempDir tmp;
  const fs::path cfg = write_config(tmp.path, kTinyConfig);
  const std::string out = (tmp.path / "out").string();
  ASSERT_EQ(run_cli("run " + cfg.string() + " --out " + out), 0);
  const fs::path ckpt = fs::path(out) / "checkpoints" / "l2o.ckpt";
  const std::string before = slurp(ckpt);
  // Resume a fresh copy with a file-size limit below the checkpoint's size: the write fails.
  const std::string out2 = (tmp.path / "out2").string();
  fs::copy(out, out2, fs::copy_options::recursive);
  const std::string before_curves = slurp(fs::path(out2) / "curves.csv");
  fs::remove(fs::path(out2) / "curves.csv");
  fs::remove_all(fs::path(out2) / "parts");
  const size_t limit_blocks = 1;  // 512-byte blocks in bash's ulimit -f
  std::string err;
  testing::ChildOptions limited;
  limited.output_file = (tmp.path / "err.txt").string();
  limited.file_size_limit = long(limit_blocks) * 512;
  const int status = testing::run_ml2o({"run", cfg.string(), "--out", out2, "--resume"}, &err, limited);
  EXPECT_EQ(status, 3) << err;
  EXPECT_NE(err.find("I/O error"), std::string::npos) << err;
  EXPECT_NE(err.find("previous file is unchanged"), std::string::npos) << err;
  EXPECT_EQ(slurp(fs::path(out2) / "checkpoints" / "l2o.ckpt"), before);
  EXPECT_FALSE(fs::exists(fs::path(out2) / "curves.csv"));
  // Without the limit, the resumed run completes with the same curves.
  ASSERT_EQ(run_cli("run " + cfg.string() + " --out " + out2 + " --resume"), 0);
  EXPECT_EQ(slurp(fs::path(out2) / "curves.csv"), before_curves);
}

TEST(Protocol, StagesAloneTrainAdaptEvalAndBaseline) {
  TempDir tmp;
  const fs::path cfg = write_config(tmp.path, kTinyConfig);
  const std::string dir = (tmp.path / "stages").string();
  std::string err;
  ASSERT_EQ(run_cli("train --config " + cfg.string() + " --method ml2o --out " + dir, &err), 0) << err;
  const std::string params = dir + "/ml2o.params";
  ASSERT_TRUE(fs::exists(params));
  // The same training inside `run` gives the same weights (same config, same seeds).
  ASSERT_EQ(run_cli("run " + cfg.string() + " --out " + (tmp.path / "full").string()), 0);
  EXPECT_EQ(slurp(params), slurp(tmp.path / "full" / "ml2o.params"));
  const std::string adapted = (tmp.path / "adapted.params").string();
  ASSERT_EQ(run_cli("adapt --config " + cfg.string() + " --params " + params + " --K 3 --out " + adapted, &err), 0) << err;
  EXPECT_NE(slurp(adapted), slurp(params));
  ASSERT_EQ(run_cli("eval --config " + cfg.string() + " --params " + adapted + " --steps 25 --out " + dir + "/eval", &err), 0) << err;
  std::istringstream csv(slurp(fs::path(dir) / "eval" / "curves.csv"));
  std::string line;
  size_t rows = 0;
  while (std::getline(csv, line)) ++rows;
  EXPECT_EQ(rows, 1 + 2 * 26u);  // header + seeds x (steps + 1)
  ASSERT_EQ(run_cli("baseline --config " + cfg.string() + " --optimizer fista --steps 30 --out " + dir + "/bl", &err), 0) << err;
  std::istringstream bl(slurp(fs::path(dir) / "bl" / "baseline.csv"));
  rows = 0;
  while (std::getline(bl, line)) ++rows;
  EXPECT_EQ(rows, 1 + 31u);
  // Training again into the same directory without --resume is refused, nothing changed.
  const std::string before = slurp(params);
  EXPECT_EQ(run_cli("train --config " + cfg.string() + " --method ml2o --out " + dir, &err), 2);
  EXPECT_NE(err.find("already holds a run of 'ml2o train ml2o'; resume it with --resume"), std::string::npos) << err;
  EXPECT_EQ(slurp(params), before);
}

TEST(Protocol, RefusesUpFrontWhatCannotFitInMemory) {
  TempDir tmp;
  // 10M instances x d = 20: the trajectories alone are about 130 GiB with their working copy.
  const std::string huge = R"(
[run]
backend = "cpu"
[[train.task]]
family = "rastrigin"
dim = 20
instances = 10000000
[eval.task]
family = "rastrigin"
dim = 20
instances = 10000000
)";
  const fs::path cfg = write_config(tmp.path, huge, "huge.toml");
  EXPECT_GT(estimate_host_bytes(load_config(cfg.string())), size_t(100) << 30);
  std::string err;
  const std::string out = (tmp.path / "out").string();
  EXPECT_EQ(run_cli("run " + cfg.string() + " --out " + out, &err), 2);
  EXPECT_NE(err.find("GiB of host memory"), std::string::npos) << err;
  EXPECT_NE(err.find("huge.toml"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(out));
  // The tiny config fits.
  EXPECT_NO_THROW(check_fits_in_memory(parse_config(kTinyConfig, "tiny.toml")));
}

}  // namespace
}  // namespace ml2o
