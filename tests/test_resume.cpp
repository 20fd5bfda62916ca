// Exact resume: what a run keeps to resume from is exact (parts/*.csv with 17 significant digits,
// checkpoints in binary), and OUT/config.toml is the resolved config whatever its source (a file, a
// pipe, a --backend override), so a run killed at any moment and resumed any number of times ends
// with every output file byte-identical to an uninterrupted run's (summary.json's wall_seconds
// aside: it is the time the last invocation took). The binary is started with posix_spawn and an
// argument vector.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "../host/protocol/outputs.hpp"
#include "ml2o/config.hpp"
#include "ml2o/io.hpp"
#include "ml2o/meta.hpp"
#include "ml2o/protocol.hpp"

extern char** environ;

namespace fs = std::filesystem;

namespace ml2o {
namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/ml2o_resume_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::string slurp(const fs::path& p) { return read_file(p.string()); }

// configs/lasso-quick.toml shrunk to about a second of CPU time, every stage kept: both trainings
// over two curriculum stages, adaptation from both sources, evaluation, all six baselines.
std::string quick_config_shrunk() {
  std::string text = slurp(fs::path(ML2O_SOURCE_DIR) / "configs" / "lasso-quick.toml");
  const std::vector<std::pair<std::string, std::string>> edits = {
      {"max_epochs = 12", "max_epochs = 4"},
      {"curriculum = [100, 200]", "curriculum = [40, 60]"},
      {"eval_every = 4", "eval_every = 2"},
      {"instances = 32\nsigma = [0.1, 0.5, 1.0]", "instances = 4\nsigma = [0.1, 1.0]"},
      {"\nK = [5, 50]", "\nK = [2]"},
      {"steps = 300", "steps = 40"},
      {"seeds = 3", "seeds = 2"},
      {"lrs = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]", "lrs = [1e-2]"},
  };
  for (const auto& [from, to] : edits) {
    const size_t at = text.find(from);
    if (at == std::string::npos) throw std::runtime_error("lasso-quick.toml no longer has '" + from + "'");
    text.replace(at, from.size(), to);
  }
  // Every remaining instance count (adapt and eval tasks) down to 4.
  for (size_t at; (at = text.find("instances = 32")) != std::string::npos;) text.replace(at, 14, "instances = 4");
  return text;
}

fs::path write_text(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
  return p;
}

// A started ml2o (one thread: the results do not depend on it, and ctest runs tests in parallel);
// stderr goes to `log`; open file descriptors are inherited.
pid_t spawn_ml2o(const std::vector<std::string>& args, const fs::path& log) {
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(ML2O_BINARY));
  argv.push_back(const_cast<char*>("--threads"));
  argv.push_back(const_cast<char*>("1"));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, ML2O_BINARY, &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error(std::string("posix_spawn: ") + std::strerror(rc));
  return pid;
}

int wait_status(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

// Exit code, or 128 + signal.
int code_of(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

int run_ml2o(const std::vector<std::string>& args, const fs::path& log) {
  return code_of(wait_status(spawn_ml2o(args, log)));
}

// Every regular file under dir, by relative path.
std::map<std::string, std::string> files_under(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out[fs::relative(e.path(), dir).string()] = slurp(e.path());
  return out;
}

// summary.json without its one measured value.
std::string without_wall_time(const std::string& summary) {
  auto j = nlohmann::json::parse(summary);
  j.erase("wall_seconds");
  return j.dump(2);
}

// Every file of the uninterrupted run `ref` exists in `out` with the same bytes, and `out` holds
// nothing else but temporary files a kill left behind (*.tmp.<pid>).
void expect_same_outputs(const fs::path& ref, const fs::path& out, const std::string& what) {
  const auto want = files_under(ref), got = files_under(out);
  ASSERT_GT(want.size(), 10u);
  for (const auto& [name, bytes] : want) {
    const auto it = got.find(name);
    if (it == got.end()) {
      ADD_FAILURE() << what << ": " << name << " missing";
      continue;
    }
    if (name == "summary.json")
      EXPECT_EQ(without_wall_time(it->second), without_wall_time(bytes)) << what << ": " << name;
    else
      EXPECT_TRUE(it->second == bytes) << what << ": " << name << " differs";
  }
  for (const auto& [name, bytes] : got)
    if (!want.count(name) && name.find(".tmp.") == std::string::npos)
      ADD_FAILURE() << what << ": unexpected file " << name;
}

// Which stage a killed run was in, from what it had written.
std::string stage_reached(const fs::path& out) {
  if (!fs::exists(out / "checkpoints" / "l2o.ckpt")) return "setup";
  if (!fs::exists(out / "l2o.params")) return "l2o training";
  if (!fs::exists(out / "ml2o.params")) return "ml2o training";
  if (fs::exists(out / "summary.json")) return "outputs";
  // The arms run in order: adapted arms, direct transfer, then the baselines.
  if (fs::exists(out / "parts" / part_name("direct_transfer", 0, "-"))) return "baselines";
  return "adaptation and evaluation";
}

TEST(Resume, PartsRoundTripExactly) {
  TempDir tmp;
  ArmResult r{"adam", "-", "lr=0.01 (swept 0.01:1.5)", 0, {}, 3};
  std::mt19937_64 rng(5);
  for (int s = 0; s < 3; ++s) {
    std::vector<double> c;
    for (int t = 0; t < 50; ++t) {
      uint64_t bits = rng();
      double v;
      std::memcpy(&v, &bits, 8);
      c.push_back(std::isnan(v) ? 0.1 * t : v);  // every finite double, subnormals included
    }
    c.push_back(490.05809020996094);
    c.push_back(-0.0);
    c.push_back(HUGE_VAL);
    c.push_back(std::numeric_limits<double>::denorm_min());
    c.push_back(std::nextafter(1.0, 2.0));
    r.curves.push_back(c);
  }
  const fs::path p = tmp.path / "part.csv";
  write_part(p, r);
  ArmResult back;
  ASSERT_TRUE(read_part(p, back, 3, int(r.curves[0].size()) - 1));
  EXPECT_EQ(back.note, r.note);
  EXPECT_EQ(back.skipped, r.skipped);
  for (int s = 0; s < 3; ++s)
    for (size_t t = 0; t < r.curves[s].size(); ++t)
      EXPECT_EQ(std::memcmp(&back.curves[s][t], &r.curves[s][t], 8), 0) << s << "," << t;
  // A duplicated row, a cut row or a bad header is refused with the file's name.
  const std::string good = slurp(p);
  const std::string row = good.substr(good.find('\n') + 1, good.find('\n', good.find('\n') + 1) - good.find('\n'));
  for (const std::string& bad : {good + row, good.substr(0, good.size() - 5), "# note=x skipped=oops\n" + good,
                                 std::string("garbage\n")}) {
    write_file_atomic(p.string(), bad);
    try {
      read_part(p, back, 3, int(r.curves[0].size()) - 1);
      ADD_FAILURE() << "accepted: " << bad.substr(0, 40);
    } catch (const FormatError& e) {
      EXPECT_EQ(std::string(e.what()).rfind(p.string() + ": ", 0), 0u) << e.what();
    }
  }
}

// The saved config is the resolved one: it parses to the same settings as every shipped config.
TEST(Resume, ResolvedConfigRoundTrips) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(fs::path(ML2O_SOURCE_DIR) / "configs")) {
    if (e.path().extension() != ".toml") continue;
    const Config cfg = load_config(e.path().string());
    const std::string text = config_to_toml(cfg);
    const Config back = parse_config(text, "config.toml");
    EXPECT_EQ(back.json, cfg.json) << e.path() << "\n" << text;
    EXPECT_EQ(config_to_toml(back), text) << e.path();
    ++n;
  }
  EXPECT_GE(n, 3);
}

// A run started with --backend cpu on a config that says "auto" resumes from OUT/config.toml (the
// command it prints) and with the original command plus --backend; without the override it is
// refused with the command that works.
TEST(Resume, AfterABackendOverride) {
  TempDir tmp;
  const fs::path cfg = write_text(tmp.path / "quick.toml", quick_config_shrunk());
  const fs::path out = tmp.path / "out", log = tmp.path / "log";
  ASSERT_EQ(run_ml2o({"run", cfg.string(), "--out", out.string(), "--backend", "cpu"}, log), 0) << slurp(log);
  const Config saved = load_config((out / "config.toml").string());
  EXPECT_EQ(saved.run.backend, "cpu");
  Config want = load_config(cfg.string());
  want.json["run"]["backend"] = "cpu";
  EXPECT_EQ(saved.json, want.json);
  const auto before = files_under(out);
  ASSERT_EQ(run_ml2o({"run", (out / "config.toml").string(), "--out", out.string(), "--resume"}, log), 0) << slurp(log);
  ASSERT_EQ(run_ml2o({"run", cfg.string(), "--out", out.string(), "--backend", "cpu", "--resume"}, log), 0) << slurp(log);
  const auto after = files_under(out);
  for (const auto& [name, bytes] : before)
    if (name != "summary.json") EXPECT_TRUE(after.at(name) == bytes) << name;
  EXPECT_EQ(run_ml2o({"run", cfg.string(), "--out", out.string(), "--resume"}, log), 2);
  EXPECT_NE(slurp(log).find("resume with ml2o run " + (out / "config.toml").string()), std::string::npos) << slurp(log);
}

// `ml2o run <(cat x.toml)`: the config comes from a pipe, read once; the saved config still holds it.
TEST(Resume, AfterAConfigFromAPipe) {
  TempDir tmp;
  const std::string text = quick_config_shrunk();
  const fs::path ref = tmp.path / "ref", out = tmp.path / "out", log = tmp.path / "log";
  const fs::path cfg = write_text(tmp.path / "quick.toml", text);
  ASSERT_EQ(run_ml2o({"run", cfg.string(), "--out", ref.string()}, log), 0) << slurp(log);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ASSERT_EQ(::write(fds[1], text.data(), text.size()), ssize_t(text.size()));  // fits the pipe
  ::close(fds[1]);
  const pid_t pid = spawn_ml2o({"run", "/dev/fd/" + std::to_string(fds[0]), "--out", out.string(),
                                "--checkpoint-every", "0"}, log);
  ::close(fds[0]);
  // Kill it once training has checkpointed (or let it finish).
  for (int i = 0; i < 5000 && !fs::exists(out / "checkpoints" / "l2o.ckpt"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ::kill(pid, SIGKILL);
  wait_status(pid);
  EXPECT_EQ(load_config((out / "config.toml").string()).json, load_config(cfg.string()).json);
  ASSERT_EQ(run_ml2o({"run", (out / "config.toml").string(), "--out", out.string(), "--resume"}, log), 0)
      << slurp(log);
  expect_same_outputs(ref, out, "piped config");
}

// Checkpoints that are consistent in their checksum but not in their contents stop `ml2o run
// --resume` with exit 2 and the reason; the run directory is left as it was.
TEST(Resume, InconsistentCheckpointExitsTwo) {
  TempDir tmp;
  const fs::path cfg = write_text(tmp.path / "quick.toml", quick_config_shrunk());
  const fs::path out = tmp.path / "out", log = tmp.path / "log";
  // Stop during training with a checkpoint after every meta-step: SIGKILL once l2o.ckpt exists.
  const pid_t pid = spawn_ml2o({"run", cfg.string(), "--out", out.string(), "--backend", "cpu",
                                "--checkpoint-every", "0"}, log);
  for (int i = 0; i < 5000 && !fs::exists(out / "checkpoints" / "l2o.ckpt"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ::kill(pid, SIGKILL);
  wait_status(pid);
  const fs::path ckpt = out / "checkpoints" / "l2o.ckpt";
  ASSERT_TRUE(fs::exists(ckpt));
  const Config c = load_config((out / "config.toml").string());
  const CheckpointExpect expect{config_hash(c) ^ uint64_t(Method::l2o), Method::l2o, c.optimizer, &c.train};
  const TrainerState good = load_checkpoint(ckpt.string(), expect);
  struct Bad {
    const char* expect;
    std::function<void(TrainerState&)> change;
  };
  const std::vector<Bad> bads = {
      {"stage 99 outside", [](TrainerState& s) { s.stage = 99; }},
      {"Adam m has 5 elements", [](TrainerState& s) { s.adam.m.resize(5); }},
      {"trajectories at unroll", [](TrainerState& s) {
         s.unroll_in_epoch = 1;
         s.trajs.clear();
       }},
  };
  for (const Bad& b : bads) {
    TrainerState s = good;
    b.change(s);
    write_file_atomic(ckpt.string(), trainer_to_bytes(s, expect.config_hash));
    const auto before = files_under(out);
    EXPECT_EQ(run_ml2o({"run", (out / "config.toml").string(), "--out", out.string(), "--resume"}, log), 2);
    const std::string err = slurp(log);
    EXPECT_NE(err.find(ckpt.string() + ": "), std::string::npos) << err;
    EXPECT_NE(err.find(b.expect), std::string::npos) << err;
    EXPECT_TRUE(files_under(out) == before) << b.expect;
  }
}

// The kill loop: runs started and resumed until done, each killed at a random (seeded) moment with
// SIGKILL or SIGTERM, land in every stage; every output file ends byte-identical to the
// uninterrupted run's.
TEST(Resume, KillLoopEndsByteIdentical) {
  TempDir tmp;
  const fs::path cfg = write_text(tmp.path / "quick.toml", quick_config_shrunk());
  const fs::path ref = tmp.path / "ref", log = tmp.path / "log";
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(run_ml2o({"run", cfg.string(), "--out", ref.string(), "--backend", "cpu", "--checkpoint-every", "0"}, log), 0)
      << slurp(log);
  const long full_ms = long(std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::steady_clock::now() - t0).count());
  std::mt19937 rng(20261202);
  std::map<std::string, int> stages;  // where the kills landed
  int kills = 0, starts = 0, chains = 0;
  // Chains of starts until at least 16 kills have landed (and 3 chains have finished).
  while ((kills < 16 || chains < 3) && chains < 10) {
    const fs::path out = tmp.path / ("run" + std::to_string(chains++));
    const int max_starts = 8;  // the last start of a chain runs to the end
    bool done = false;
    for (int start = 0; start < max_starts && !done; ++start) {
      std::vector<std::string> args = {"run", cfg.string(), "--out", out.string(), "--backend", "cpu",
                                       "--checkpoint-every", "0"};
      // Resumed with the command the run prints (its saved config), once that config exists.
      if (start > 0 && fs::exists(out / "config.toml"))
        args = {"run", (out / "config.toml").string(), "--out", out.string(), "--resume", "--checkpoint-every", "0"};
      const pid_t pid = spawn_ml2o(args, log);
      ++starts;
      if (start + 1 < max_starts) {
        const long delay = std::uniform_int_distribution<long>(5, std::max(20L, full_ms))(rng);
        const int sig = std::uniform_int_distribution<int>(0, 2)(rng) == 0 ? SIGTERM : SIGKILL;
        std::this_thread::sleep_for(std::chrono::milliseconds(delay));
        ::kill(pid, sig);
      }
      const int code = code_of(wait_status(pid));
      if (code == 0) {
        done = true;
        continue;
      }
      // Killed (128 + signal), or stopped by its own SIGTERM handling (143).
      ASSERT_TRUE(code == 128 + SIGKILL || code == 128 + SIGTERM) << code << "\n" << slurp(log);
      ++kills;
      ++stages[stage_reached(out)];
    }
    ASSERT_TRUE(done) << "chain " << chains;
    expect_same_outputs(ref, out, "chain " + std::to_string(chains));
  }
  std::string where;
  for (const auto& [s, n] : stages) where += " " + s + ": " + std::to_string(n) + ";";
  std::printf("[ resume ] %d chains, %d starts, %d kills (full run %ld ms); kills landed in:%s\n", chains,
              starts, kills, full_ms, where.c_str());
  EXPECT_GE(kills, 16);
  EXPECT_GT(stages["l2o training"] + stages["ml2o training"], 0);
  EXPECT_GT(stages["adaptation and evaluation"] + stages["baselines"], 0);
}

}  // namespace
}  // namespace ml2o
