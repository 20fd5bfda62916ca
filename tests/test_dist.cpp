// Distributed runs under mpirun (docs/distributed.md): byte-identical outputs for N = 1, 2, 3 and
// the plain single-process binary; a dead or hung rank stops every rank; ranks started with other
// settings exit 2; a checkpoint resumes with another N. Skipped without MPI or mpirun.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "ml2o/backend.hpp"
#include "ml2o/dist.hpp"
#include "ml2o/io.hpp"
#include "ml2o/unroll.hpp"

namespace fs = std::filesystem;

namespace ml2o {
namespace {

// dim 100: two instances per chunk, so 5 instances make 3 chunks of 2, 2 and 1 instances, and
// N = 2 or 3 splits every task between ranks (unevenly for N = 2).
constexpr const char* kConfig = R"(
[run]
name = "dist"
seed = 3
backend = "cpu"

[train]
max_epochs = 3
unroll = 10
curriculum = [20, 30]
eval_every = 1
eval_batches = 1

[[train.task]]
family = "lasso"
dim = 100
instances = 5
sigma = [0.5, 1.0]

[adapt]
K = [2]
unroll = 10
trajectory = 20

[eval]
steps = 20
seeds = 3

[eval.task]
family = "lasso"
dim = 100
instances = 5
sigma = 10.0

[baselines]
optimizers = ["adam", "fista"]
lrs = [0.01, 0.1]

[arms]
transfer_learning = false
)";

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/ml2o_dist_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::string mpirun() { return ML2O_MPIEXEC; }

// Runs a shell command with a hard time limit; returns its exit status (124: the limit hit).
int sh(const std::string& cmd, std::string* log = nullptr) {
  const std::string file = "/tmp/ml2o_dist_log_" + std::to_string(::getpid());
  const int rc = std::system(("timeout 300 " + cmd + " >" + file + " 2>&1").c_str());
  if (log) *log = read_file(file);
  fs::remove(file);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

// mpirun -np n, as root too (CI), more ranks than cores allowed; env: extra VAR=value words.
std::string launch(int n, const std::string& env = "") {
  return "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader "
         "ASAN_OPTIONS=detect_leaks=0 " + env + " " + mpirun() + " --oversubscribe --bind-to none -np " +
         std::to_string(n) + " ";
}

const std::string kMl2o = ML2O_BINARY;

class Dist : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!dist::built_with_mpi() || mpirun().empty()) GTEST_SKIP() << "built without MPI";
    if (::access(mpirun().c_str(), X_OK) != 0) GTEST_SKIP() << mpirun() << " is missing";
    std::ofstream(tmp.path / "a.toml") << kConfig;
  }
  std::string cfg() const { return (tmp.path / "a.toml").string(); }
  std::string out(const std::string& name) const { return (tmp.path / name).string(); }
  std::string train_args(const std::string& o) const {
    return " --threads 1 train --config " + cfg() + " --method ml2o --checkpoint-every 0 --out " + o;
  }
  TempDir tmp;
};

std::string bytes(const fs::path& p) { return read_file(p.string()); }

// Every file of a run directory except summary.json's wall-clock time.
std::map<std::string, std::string> outputs(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string rel = fs::relative(e.path(), dir).string();
    if (rel == "plot.png" || rel == "gnuplot.err") continue;  // gnuplot's own bytes
    std::string b = bytes(e.path());
    if (rel == "summary.json") {
      auto j = nlohmann::json::parse(b);
      j.erase("wall_seconds");
      b = j.dump();
    }
    files[rel] = b;
  }
  return files;
}

TEST_F(Dist, TrainIsByteIdenticalForAnyNumberOfRanks) {
  std::string log;
  ASSERT_EQ(sh(kMl2o + train_args(out("plain")), &log), 0) << log;
  for (int n : {1, 2, 3}) {
    const std::string o = out("np" + std::to_string(n));
    ASSERT_EQ(sh(launch(n) + kMl2o + train_args(o), &log), 0) << log;
    EXPECT_EQ(bytes(fs::path(o) / "ml2o.params"), bytes(out("plain") + "/ml2o.params")) << "N = " << n;
    EXPECT_EQ(bytes(fs::path(o) / "checkpoints/ml2o.ckpt"), bytes(out("plain") + "/checkpoints/ml2o.ckpt"))
        << "N = " << n;
  }
}

// M-L2O's exact second order: the Hessian-vector products are split between ranks too.
TEST_F(Dist, SecondOrderTrainIsByteIdentical) {
  std::string text = kConfig;
  text.replace(text.find("max_epochs = 3"), 14, "max_epochs = 1");
  text += "\n[ml2o]\nmeta_gradient = \"second_order\"\n";
  std::ofstream(tmp.path / "a.toml") << text;
  std::string log;
  ASSERT_EQ(sh(kMl2o + train_args(out("plain")), &log), 0) << log;
  ASSERT_EQ(sh(launch(2) + kMl2o + train_args(out("np2")), &log), 0) << log;
  EXPECT_EQ(bytes(out("np2") + "/ml2o.params"), bytes(out("plain") + "/ml2o.params"));
}

TEST_F(Dist, RunOutputsAreByteIdenticalForOneAndTwoRanks) {
  std::string log;
  ASSERT_EQ(sh(kMl2o + " --threads 1 run " + cfg() + " --out " + out("plain"), &log), 0) << log;
  ASSERT_EQ(sh(launch(2) + kMl2o + " --threads 1 run " + cfg() + " --out " + out("np2"), &log), 0) << log;
  const auto a = outputs(out("plain")), b = outputs(out("np2"));
  ASSERT_TRUE(a.count("curves.csv") && a.count("ml2o.params") && a.count("l2o.params"));
  EXPECT_EQ(a.size(), b.size());
  for (const auto& [name, content] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_EQ(content, b.at(name)) << name;
  }
}

TEST_F(Dist, ADeadRankStopsEveryRank) {
  std::string log;
  const int rc = sh(launch(2, "ML2O_DIST_FAULT=1:8:abort") + kMl2o + train_args(out("o")), &log);
  EXPECT_NE(rc, 0) << log;
  EXPECT_NE(rc, 124) << "timed out:\n" << log;
  EXPECT_NE(log.find("ML2O_DIST_FAULT: abort"), std::string::npos) << log;
}

TEST_F(Dist, AHungRankStopsEveryRankAfterTheTimeout) {
  std::string log;
  const int rc = sh(launch(3, "ML2O_DIST_FAULT=2:8:hang ML2O_DIST_TIMEOUT=2") + kMl2o + train_args(out("o")), &log);
  EXPECT_NE(rc, 0) << log;
  EXPECT_NE(rc, 124) << "timed out:\n" << log;
  EXPECT_NE(log.find("no answer from every rank within 2 s"), std::string::npos) << log;
}

TEST_F(Dist, RanksWithDifferentConfigsExit2) {
  std::string text = kConfig;
  text.replace(text.find("seed = 3"), 8, "seed = 4");
  std::ofstream(tmp.path / "b.toml") << text;
  const std::string b = (tmp.path / "b.toml").string();
  const std::string tail = " --method ml2o --out " + out("o");
  std::string log;
  const int rc = sh(launch(1) + kMl2o + " train --config " + cfg() + tail + " : -np 1 " + kMl2o +
                    " train --config " + b + tail, &log);
  EXPECT_EQ(rc, 2) << log;
  EXPECT_NE(log.find("was started with other settings than rank 0"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(out("o") + "/ml2o.params"));
}

TEST_F(Dist, RanksOfDifferentBuildsExit2) {
  // Another "build": the same executable with one byte appended (it still runs).
  const fs::path other = tmp.path / "ml2o_other";
  fs::copy_file(kMl2o, other);
  std::ofstream(other, std::ios::app) << 'x';
  const std::string tail = " train --config " + cfg() + " --method ml2o --out " + out("o");
  std::string log;
  EXPECT_EQ(sh(launch(1) + kMl2o + tail + " : -np 1 " + other.string() + tail, &log), 2) << log;
  EXPECT_NE(log.find("runs another ml2o build than rank 0"), std::string::npos) << log;
}

TEST_F(Dist, OnlyRunAndTrainAreDistributed) {
  std::string log;
  EXPECT_EQ(sh(launch(2) + kMl2o + " baseline --config " + cfg() + " --out " + out("o"), &log), 2) << log;
  EXPECT_NE(log.find("only run and train are distributed"), std::string::npos) << log;
}

TEST_F(Dist, ResumesWithAnotherNumberOfRanks) {
  std::string log;
  ASSERT_EQ(sh(kMl2o + train_args(out("plain")), &log), 0) << log;
  // Two ranks, one of which dies mid-training after checkpoints were written; three ranks resume.
  EXPECT_NE(sh(launch(2, "ML2O_DIST_FAULT=1:20:abort") + kMl2o + train_args(out("o")), &log), 0) << log;
  ASSERT_TRUE(fs::exists(out("o") + "/checkpoints/ml2o.ckpt")) << log;
  ASSERT_FALSE(fs::exists(out("o") + "/ml2o.params")) << log;
  ASSERT_EQ(sh(launch(3) + kMl2o + train_args(out("o")) + " --resume", &log), 0) << log;
  EXPECT_NE(log.find("resuming ml2o training"), std::string::npos) << log;
  EXPECT_EQ(bytes(out("o") + "/ml2o.params"), bytes(out("plain") + "/ml2o.params"));
}

// The split that distributed runs rely on, in one process: any cut of the chunks between
// "ranks", reduced in chunk order, gives unroll_cpu's result bit for bit.
TEST(DistChunks, SplitUnrollsSumToTheWholeOne) {
  TaskSpec spec;
  spec.family = Family::lasso;
  spec.dim = 100;
  spec.instances = 5;
  spec.seed = 11;
  const Task<float> task = sample_task<float>(spec);
  OptimizerHyper hyper;
  const auto w = init_optimizer(hyper, 5).weights;
  Trajectory<float> whole = start_trajectory(task.x0);
  const auto ref = unroll_cpu(hyper, w, view_of(task), whole, 10, GradMode::gradient_constant);
  const int64_t chunks = chunk_count(spec.instances, spec.dim);
  ASSERT_EQ(chunks, 3);
  for (int ranks : {1, 2, 3, 4}) {
    Trajectory<float> traj = start_trajectory(task.x0);
    std::vector<ChunkPartials<float>> parts;
    for (int r = 0; r < ranks; ++r) {
      const dist::Range range = dist::share(chunks, r, ranks);
      parts.push_back(unroll_chunks(hyper, w, view_of(task), traj, 10, GradMode::gradient_constant,
                                    range.begin, range.end));
    }
    std::vector<const ChunkPartials<float>*> ptrs;
    for (const auto& p : parts) ptrs.push_back(&p);
    const auto got = reduce_chunks<float>(ptrs, spec.instances, 10, w.size(), GradMode::gradient_constant);
    EXPECT_EQ(got.grad, ref.grad) << ranks;
    EXPECT_EQ(got.step_loss, ref.step_loss) << ranks;
    EXPECT_EQ(got.meta_loss, ref.meta_loss) << ranks;
    EXPECT_EQ(traj.x, whole.x) << ranks;
  }
}

}  // namespace
}  // namespace ml2o
