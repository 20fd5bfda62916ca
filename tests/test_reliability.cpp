// What a careless or hostile user does to the CLI (issue 11): paths with shell syntax, outputs on
// devices, existing files and other runs' directories, two runs into one directory, sizes that
// cannot fit, signals in every long command, total divergence, corrupted partial results.
// Every test starts the built binary with an argument vector (tests/child.hpp).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "child.hpp"
#include "ml2o/backend.hpp"
#include "ml2o/io.hpp"
#include "ml2o/lopt.hpp"
#include "ml2o/output_claim.hpp"
#include "ml2o/spawn.hpp"

namespace fs = std::filesystem;

namespace ml2o {
namespace {

using testing::ChildOptions;
using testing::run_ml2o;
using testing::start_ml2o;
using testing::wait_ml2o;

// A run of about a second with every arm; {EXTRA_TRAIN} and {EVAL_TASK} let a test change it.
std::string tiny_config(const std::string& run_name = "tiny", const std::string& extra_train = "",
                        const std::string& extra_eval_task = "") {
  return "[run]\nname = \"" + run_name + "\"\nseed = 7\nbackend = \"cpu\"\n"
         "[train]\nmax_epochs = 4\ncurriculum = [20, 40]\neval_every = 2\neval_batches = 1\n" + extra_train +
         "\n[[train.task]]\nfamily = \"lasso\"\ndim = 3\ninstances = 4\nsigma = [0.5, 1.0]\n"
         "[adapt]\nK = [2]\ntrajectory = 40\n"
         "[eval]\nsteps = 60\nseeds = 2\n"
         "[eval.task]\nfamily = \"lasso\"\ndim = 3\ninstances = 4\nsigma = 10.0\n" + extra_eval_task +
         "\n[baselines]\noptimizers = [\"adam\", \"fista\"]\nlrs = [0.01, 0.1]\n";
}

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/ml2o_rel_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

std::string write(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  return path;
}

std::string slurp(const std::string& p) { return read_file(p); }

bool has(const std::string& text, const std::string& fragment) { return text.find(fragment) != std::string::npos; }

bool gnuplot_installed() { return run_program({"gnuplot", "--version"}, "").ok(); }

// ---- 1. no shell ---------------------------------------------------------------------------------

TEST(Reliability, OutputPathWithShellSyntaxIsJustAPathAndStillPlots) {
  TempDir tmp;
  const std::string cfg = write(tmp / "tiny.toml", tiny_config());
  const std::string out = "o'; touch PWNED; echo '";
  ChildOptions in_tmp;
  in_tmp.cwd = tmp.path.string();
  std::string err;
  ASSERT_EQ(run_ml2o({"run", cfg, "--out", out}, &err, in_tmp), 0) << err;
  EXPECT_FALSE(fs::exists(tmp.path / "PWNED"));
  EXPECT_TRUE(fs::exists(tmp.path / out / "curves.csv"));
  const auto summary = nlohmann::json::parse(slurp(tmp / (out + "/summary.json")));
  if (gnuplot_installed()) {
    EXPECT_EQ(summary["plot"], "plot.png") << err;
    EXPECT_GT(fs::file_size(tmp.path / out / "plot.png"), 1000u);
    EXPECT_FALSE(fs::exists(tmp.path / out / "gnuplot.err"));
  }
}

TEST(Reliability, MissingOrFailingGnuplotLeavesNoPictureAndSaysWhy) {
  TempDir tmp;
  const std::string cfg = write(tmp / "tiny.toml", tiny_config());
  const char* old_path = std::getenv("PATH");
  const std::string saved = old_path ? old_path : "";
  // No gnuplot on PATH.
  ::setenv("PATH", (tmp / "empty-bin").c_str(), 1);
  std::string err;
  const int rc = run_ml2o({"run", cfg, "--out", tmp / "a"}, &err);
  // A gnuplot that fails after writing half a picture.
  fs::create_directories(tmp.path / "bin");
  write(tmp / "bin/gnuplot", "#!/bin/sh\nfor f in $(sed -n \"s/^set output '\\\\(.*\\\\)'$/\\\\1/p\" \"$1\"); do\n"
                             "  printf PNGHALF > \"$f\"\ndone\necho 'fake gnuplot failed' >&2\nexit 1\n");
  fs::permissions(tmp.path / "bin/gnuplot", fs::perms::owner_all);
  ::setenv("PATH", ((tmp / "bin") + ":/usr/bin:/bin").c_str(), 1);
  std::string err2;
  const int rc2 = run_ml2o({"run", cfg, "--out", tmp / "b"}, &err2);
  ::setenv("PATH", saved.c_str(), 1);

  EXPECT_EQ(rc, 0) << err;
  EXPECT_TRUE(has(err, "gnuplot is not installed (not found on PATH)")) << err;
  EXPECT_TRUE(has(slurp(tmp / "a/gnuplot.err"), "gnuplot is not installed")) << err;
  EXPECT_EQ(rc2, 0) << err2;
  EXPECT_TRUE(has(err2, "gnuplot failed (exit 1)")) << err2;
  EXPECT_TRUE(has(slurp(tmp / "b/gnuplot.err"), "fake gnuplot failed"));
  for (const std::string d : {"a", "b"}) {
    EXPECT_TRUE(nlohmann::json::parse(slurp(tmp / (d + "/summary.json")))["plot"].is_null());
    for (const auto& e : fs::directory_iterator(tmp.path / d)) {
      const std::string name = e.path().filename().string();
      EXPECT_EQ(name.find(".png"), std::string::npos) << "left " << name;
      EXPECT_FALSE(is_temporary_name(name)) << "left " << name;
    }
  }
}

TEST(Reliability, RunProgramTakesAnArgumentVectorAndReportsAMissingProgram) {
  TempDir tmp;
  const std::string odd = tmp / "a dir with 'quotes' and $(x)";
  fs::create_directories(odd);
  const ProgramResult r = run_program({"sh", "-c", "pwd >&2; echo \"$0\" >&2", "; touch PWNED"}, odd);
  ASSERT_TRUE(r.ok()) << r.start_error;
  EXPECT_EQ(r.stderr_text, odd + "\n; touch PWNED\n");
  EXPECT_FALSE(fs::exists(fs::path(odd) / "PWNED"));
  const ProgramResult missing = run_program({"ml2o-no-such-program"}, "");
  EXPECT_FALSE(missing.started);
  EXPECT_EQ(missing.start_error, "ml2o-no-such-program is not installed (not found on PATH)");
}

// ---- 2. one way to claim an output location ------------------------------------------------------

struct Fixture {
  TempDir tmp;
  std::string cfg, params;
  Fixture() {
    cfg = write(tmp / "tiny.toml", tiny_config());
    params = tmp / "rnnprop.params";
    save_params(params, init_optimizer(OptimizerHyper{}, 1));
  }
};

TEST(Reliability, AdaptNeverReplacesAFileNotEvenItsOwnInput) {
  Fixture f;
  const std::string existing = write(f.tmp / "existing.params", "user data");
  const std::string before = slurp(f.params);
  for (const std::string& out : {existing, f.params, std::string("/dev/null")}) {
    std::string err;
    EXPECT_EQ(run_ml2o({"adapt", "--config", f.cfg, "--params", f.params, "--K", "1", "--out", out}, &err), 2) << out;
    EXPECT_TRUE(has(err, "exists; ml2o never replaces a file")) << err;
  }
  EXPECT_EQ(slurp(existing), "user data");
  EXPECT_EQ(slurp(f.params), before);
  EXPECT_TRUE(fs::is_character_file("/dev/null"));
  std::string err;
  EXPECT_EQ(run_ml2o({"adapt", "--config", f.cfg, "--params", f.params, "--out", f.tmp / "no/such/dir.params"}, &err), 2);
  EXPECT_TRUE(has(err, "does not exist")) << err;
  EXPECT_EQ(run_ml2o({"adapt", "--config", f.cfg, "--params", f.params, "--out", ""}, &err), 2);
  EXPECT_TRUE(has(err, "empty path")) << err;
  // A killed earlier adapt's temporary file (its process is gone) is cleaned; the new file is written.
  const pid_t gone = start_ml2o({"info"});
  wait_ml2o(gone);
  const std::string out = f.tmp / "adapted.params";
  write(out + ".tmp." + std::to_string(gone), "half");
  ASSERT_EQ(run_ml2o({"adapt", "--config", f.cfg, "--params", f.params, "--K", "1", "--out", out}, &err), 0) << err;
  EXPECT_NO_THROW(load_params(out));
  EXPECT_FALSE(fs::exists(out + ".tmp." + std::to_string(gone)));
}

TEST(Reliability, DirectoryOutputsRefuseWhatIsNotTheirs) {
  Fixture f;
  const std::string run = f.tmp / "run";
  std::string err;
  ASSERT_EQ(run_ml2o({"run", f.cfg, "--out", run}, &err), 0) << err;
  const std::string curves = slurp(run + "/curves.csv");
  // eval, baseline and train into a run's directory: refused, the run untouched.
  EXPECT_EQ(run_ml2o({"eval", "--config", f.cfg, "--params", f.params, "--out", run}, &err), 2);
  EXPECT_TRUE(has(err, "holds the output of 'ml2o run'")) << err;
  EXPECT_EQ(run_ml2o({"baseline", "--config", f.cfg, "--out", run}, &err), 2);
  EXPECT_EQ(run_ml2o({"train", "--config", f.cfg, "--out", run, "--resume"}, &err), 2);
  EXPECT_EQ(slurp(run + "/curves.csv"), curves);
  // eval twice into one directory: the second is refused.
  const std::string ev = f.tmp / "ev";
  ASSERT_EQ(run_ml2o({"eval", "--config", f.cfg, "--params", f.params, "--out", ev, "--steps", "5"}, &err), 0) << err;
  EXPECT_EQ(run_ml2o({"eval", "--config", f.cfg, "--params", f.params, "--out", ev, "--steps", "7"}, &err), 2);
  EXPECT_TRUE(has(err, "already holds the results of an earlier 'ml2o eval'")) << err;
  // A command that fails after claiming a new directory (here: no CUDA device) leaves no trace.
  if (!cuda_available()) {
    const std::string gone = f.tmp / "no-cuda";
    EXPECT_NE(run_ml2o({"eval", "--config", f.cfg, "--params", f.params, "--backend", "cuda", "--out", gone}, &err), 0);
    EXPECT_FALSE(fs::exists(gone)) << err;
  }
  // Files and devices are not directories.
  const std::string file = write(f.tmp / "file.txt", "user data");
  for (const std::string& out : {file, std::string("/dev/null")}) {
    EXPECT_EQ(run_ml2o({"run", f.cfg, "--out", out}, &err), 2);
    EXPECT_TRUE(has(err, "exists and is not a directory")) << err;
  }
  EXPECT_EQ(slurp(file), "user data");
  // A non-empty directory of the user's, with or without --resume: refused, nothing added.
  const std::string mine = f.tmp / "mine";
  fs::create_directories(mine);
  write(mine + "/notes.txt", "mine");
  for (bool resume : {false, true}) {
    std::vector<std::string> args = {"run", f.cfg, "--out", mine};
    if (resume) args.push_back("--resume");
    EXPECT_EQ(run_ml2o(args, &err), 2);
    EXPECT_TRUE(has(err, "is not empty and holds no ml2o output")) << err;
  }
  EXPECT_EQ(std::distance(fs::directory_iterator(mine), fs::directory_iterator()), 1);
  // '' is refused; '.' follows the rules of any path: refused in a non-empty directory, fine in an empty one.
  EXPECT_EQ(run_ml2o({"run", f.cfg, "--out", ""}, &err), 2);
  EXPECT_TRUE(has(err, "empty path")) << err;
  ChildOptions in_mine;
  in_mine.cwd = mine;
  EXPECT_EQ(run_ml2o({"run", f.cfg, "--out", "."}, &err, in_mine), 2);
  EXPECT_TRUE(has(err, "is not empty")) << err;
  const std::string empty = f.tmp / "empty";
  fs::create_directories(empty);
  ChildOptions in_empty;
  in_empty.cwd = empty;
  ASSERT_EQ(run_ml2o({"baseline", "--config", f.cfg, "--steps", "5", "--out", "."}, &err, in_empty), 0) << err;
  EXPECT_TRUE(fs::exists(empty + "/baseline.csv"));
}

TEST(Reliability, TwoConcurrentRunsIntoOneDirectory) {
  Fixture f;
  const std::string ref = f.tmp / "ref";
  ASSERT_EQ(run_ml2o({"run", f.cfg, "--out", ref}), 0);
  // Deterministic: while another process holds the lock, a run is refused and changes nothing.
  const std::string held = f.tmp / "held";
  fs::create_directories(held);
  const int fd = ::open((held + "/" + OutputClaim::kLockName).c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);
  std::string err;
  EXPECT_EQ(run_ml2o({"run", f.cfg, "--out", held}, &err), 2);
  EXPECT_TRUE(has(err, "is in use by another ml2o process")) << err;
  EXPECT_EQ(run_ml2o({"run", f.cfg, "--out", held, "--resume"}, &err), 2);
  EXPECT_TRUE(has(err, "is in use by another ml2o process")) << err;
  ::close(fd);
  EXPECT_EQ(std::distance(fs::directory_iterator(held), fs::directory_iterator()), 1);
  // Two real runs started together: one does the work, the other is refused (in use, or the
  // finished run's directory); the result equals an undisturbed run.
  for (int trial = 0; trial < 2; ++trial) {
    const std::string out = f.tmp / ("both" + std::to_string(trial));
    ChildOptions oa, ob;
    oa.output_file = f.tmp / "a.txt";
    ob.output_file = f.tmp / "b.txt";
    const pid_t a = start_ml2o({"--threads", "1", "run", f.cfg, "--out", out, "--resume"}, oa);
    const pid_t b = start_ml2o({"--threads", "1", "run", f.cfg, "--out", out, "--resume"}, ob);
    const int ra = wait_ml2o(a), rb = wait_ml2o(b);
    const std::string ea = slurp(oa.output_file), eb = slurp(ob.output_file);
    EXPECT_EQ(std::min(ra, rb), 0) << ea << eb;
    if (ra != rb) {
      const std::string& loser = ra == 2 ? ea : eb;
      EXPECT_EQ(std::max(ra, rb), 2) << ea << eb;
      EXPECT_TRUE(has(loser, "is in use by another ml2o process")) << loser;
    }
    for (const char* file : {"curves.csv", "l2o.params", "ml2o.params"})
      EXPECT_EQ(slurp(out + "/" + file), slurp(ref + "/" + file)) << file;
  }
}

TEST(Reliability, StaleTemporaryFilesOfAKilledRunAreCleaned) {
  Fixture f;
  const std::string out = f.tmp / "run";
  ASSERT_EQ(run_ml2o({"run", f.cfg, "--out", out}), 0);
  const std::vector<std::string> stale = {out + "/curves.csv.tmp.4194300", out + "/checkpoints/l2o.ckpt.tmp.17"};
  for (const auto& p : stale) write(p, "half");
  std::string err;
  ASSERT_EQ(run_ml2o({"run", f.cfg, "--out", out, "--resume"}, &err), 0) << err;
  for (const auto& p : stale) EXPECT_FALSE(fs::exists(p)) << p;
  for (const auto& e : fs::recursive_directory_iterator(out))
    EXPECT_FALSE(is_temporary_name(e.path().filename().string())) << e.path();
}

// ---- 3. sizes checked up front -------------------------------------------------------------------

TEST(Reliability, SizesThatCannotFitAreRefusedUpFrontInEveryCommand) {
  Fixture f;
  const std::string out = f.tmp / "out";
  std::string huge_steps = tiny_config();
  huge_steps.replace(huge_steps.find("steps = 60"), 10, "steps = 2147483647");
  const std::string steps_cfg = write(f.tmp / "steps.toml", huge_steps);
  std::string huge_curriculum = tiny_config();
  huge_curriculum.replace(huge_curriculum.find("curriculum = [20, 40]"), 21, "curriculum = [20, 2147483640]");
  const std::string curriculum_cfg = write(f.tmp / "curriculum.toml", huge_curriculum);
  std::string many_seeds = tiny_config();
  many_seeds.replace(many_seeds.find("seeds = 2"), 9, "seeds = 1000");
  const std::string seeds_cfg = write(f.tmp / "seeds.toml", many_seeds);
  std::string huge_task = tiny_config();
  const std::string small_task = "dim = 3\ninstances = 4\nsigma = 10.0";
  huge_task.replace(huge_task.find(small_task), small_task.size(), "dim = 20\ninstances = 10000000");
  huge_task.replace(huge_task.find("family = \"lasso\"\ndim = 20\n"), 16, "family = \"rastrigin\"");
  huge_task.replace(huge_task.find("[\"adam\", \"fista\"]"), 17, "[\"adam\"]");
  const std::string task_cfg = write(f.tmp / "task.toml", huge_task);
  struct Case {
    std::vector<std::string> args;
    std::string fragment;
  };
  const std::vector<Case> cases = {
      {{"run", steps_cfg, "--out", out}, "eval.seeds x eval.steps"},
      {{"eval", "--config", steps_cfg, "--params", f.params, "--out", out}, "eval.seeds x eval.steps (2 x 2147483647)"},
      {{"eval", "--config", seeds_cfg, "--params", f.params, "--steps", "100000000", "--out", out}, "eval.seeds x --steps (1000 x 100000000)"},
      {{"run", curriculum_cfg, "--out", out}, "train.curriculum"},
      {{"train", "--config", curriculum_cfg, "--out", out}, "train.curriculum"},
      {{"adapt", "--config", task_cfg, "--params", f.params, "--out", out}, "instances x dim"},
      {{"baseline", "--config", task_cfg, "--out", out}, "--steps 1000 and the task's instances x dim"},
  };
  for (const Case& c : cases) {
    std::string err;
    EXPECT_EQ(run_ml2o(c.args, &err), 2) << c.args[0] << " " << c.args[2] << "\n" << err;
    EXPECT_TRUE(has(err, c.fragment)) << err;
    EXPECT_TRUE(has(err, "GiB of host memory at once")) << err;
    EXPECT_FALSE(fs::exists(out)) << c.args[0];
  }
}

// ---- 4. signals ----------------------------------------------------------------------------------

// Starts ml2o, waits until `ready` exists (or 20 s), sends `sig`, returns the exit status.
int signal_when(const std::vector<std::string>& args, const fs::path& ready, int sig, const std::string& output) {
  ChildOptions o;
  o.output_file = output;
  const pid_t pid = start_ml2o(args, o);
  for (int i = 0; i < 20000 && !fs::exists(ready); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ::kill(pid, sig);
  return wait_ml2o(pid);
}

TEST(Reliability, SigtermDuringTrainingCheckpointsExits143AndResumesExactly) {
  Fixture f;
  std::string slow = tiny_config("slow");
  // About 0.4 s of training after the first checkpoint, when the signal is sent.
  slow.replace(slow.find("max_epochs = 4"), 14, "max_epochs = 100");
  slow.replace(slow.find("eval_every = 2"), 14, "eval_every = 50");
  const std::string cfg = write(f.tmp / "slow.toml", slow);
  const std::string ref = f.tmp / "ref";
  ASSERT_EQ(run_ml2o({"--threads", "1", "train", "--config", cfg, "--method", "l2o", "--out", ref}), 0);
  for (int sig : {SIGTERM, SIGINT}) {
    const std::string out = f.tmp / ("train" + std::to_string(sig));
    const std::vector<std::string> args = {"--threads", "1", "train", "--config", cfg, "--method", "l2o",
                                           "--out", out, "--checkpoint-every", "0"};
    const int rc = signal_when(args, fs::path(out) / "checkpoints" / "l2o.ckpt", sig, f.tmp / "err.txt");
    const std::string err = slurp(f.tmp / "err.txt");
    ASSERT_EQ(rc, 128 + sig) << err;
    EXPECT_TRUE(has(err, "checkpoint written")) << err;
    EXPECT_TRUE(has(err, "resume with: ml2o --threads 1 train --config " + cfg + " --method l2o --out " + out +
                             " --checkpoint-every 0 --resume")) << err;
    EXPECT_TRUE(fs::exists(fs::path(out) / "checkpoints" / "l2o.ckpt"));
    EXPECT_FALSE(fs::exists(fs::path(out) / "l2o.params"));
    ASSERT_EQ(run_ml2o({"--threads", "1", "train", "--config", cfg, "--method", "l2o", "--out", out, "--resume"}), 0);
    EXPECT_EQ(slurp(out + "/l2o.params"), slurp(ref + "/l2o.params"));
  }
}

TEST(Reliability, CommandsWithoutACheckpointStopAtOnceAndWriteNothing) {
  Fixture f;
  struct Case {
    std::vector<std::string> args;
    std::string out;
    int sig;
  };
  const std::string e = f.tmp / "eval", b = f.tmp / "base", a = f.tmp / "adapted.params";
  const std::vector<Case> cases = {
      {{"eval", "--config", f.cfg, "--params", f.params, "--steps", "5000000", "--out", e}, e, SIGINT},
      {{"baseline", "--config", f.cfg, "--steps", "20000000", "--out", b}, b, SIGTERM},
      {{"adapt", "--config", f.cfg, "--params", f.params, "--K", "1000000", "--out", a}, a, SIGTERM},
  };
  for (const Case& c : cases) {
    // Directory outputs: signal once the claim holds the lock; adapt (a file): after a moment.
    const bool to_file = c.args[0] == "adapt";
    const fs::path ready = to_file ? fs::path(c.args[2]) : fs::path(c.out) / OutputClaim::kLockName;
    ChildOptions o;
    o.output_file = f.tmp / "err.txt";
    const pid_t pid = start_ml2o(c.args, o);
    for (int i = 0; i < 20000 && !fs::exists(ready); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(std::chrono::milliseconds(to_file ? 300 : 20));
    ::kill(pid, c.sig);
    const int rc = wait_ml2o(pid);
    const std::string err = slurp(f.tmp / "err.txt");
    EXPECT_EQ(rc, 128 + c.sig) << c.args[0] << "\n" << err;
    if (to_file) {
      EXPECT_FALSE(fs::exists(c.out));
    } else {
      EXPECT_TRUE(has(err, "interrupted; nothing was written. Rerun with: ml2o " + c.args[0])) << err;
      for (const auto& entry : fs::directory_iterator(c.out))
        EXPECT_EQ(entry.path().filename(), OutputClaim::kLockName) << "wrote " << entry.path();
      // The directory can be used again: the interrupted command left nothing of its own.
      std::vector<std::string> quick = c.args;
      for (size_t i = 0; i + 1 < quick.size(); ++i)
        if (quick[i] == "--steps") quick[i + 1] = "3";
      EXPECT_EQ(run_ml2o(quick), 0) << c.args[0];
    }
  }
}

// ---- 5. divergence -------------------------------------------------------------------------------

TEST(Reliability, TotalDivergenceExitsFourNeverZero) {
  Fixture f;
  std::string err;
  // Every meta-step non-finite, but too few to reach train.max_skipped before max_epochs.
  std::string skip_text = tiny_config("skip", "max_skipped = 1000\n");
  skip_text.replace(skip_text.find("sigma = [0.5, 1.0]"), 18, "sigma = [0.5, 1.0]\nx0_scale = 1e300");
  const std::string skip_all = write(f.tmp / "skip.toml", skip_text);
  EXPECT_EQ(run_ml2o({"train", "--config", skip_all, "--method", "l2o", "--out", f.tmp / "t"}, &err), 4) << err;
  EXPECT_TRUE(has(err, "meta-steps had a non-finite meta-loss or gradient and were skipped")) << err;
  EXPECT_FALSE(fs::exists(f.tmp / "t/l2o.params"));
  // Every evaluation objective non-finite from step 0.
  const std::string nan_eval = write(f.tmp / "nan.toml", tiny_config("nan", "", "x0_scale = 1e300"));
  EXPECT_EQ(run_ml2o({"run", nan_eval, "--out", f.tmp / "r"}, &err), 4) << err;
  EXPECT_TRUE(has(err, "evaluation diverged")) << err;
  EXPECT_TRUE(fs::exists(f.tmp / "r/curves.csv"));  // kept as evidence
  EXPECT_EQ(run_ml2o({"eval", "--config", nan_eval, "--params", f.params, "--out", f.tmp / "e"}, &err), 4) << err;
  EXPECT_TRUE(has(err, "evaluation diverged")) << err;
  EXPECT_EQ(run_ml2o({"baseline", "--config", nan_eval, "--out", f.tmp / "b"}, &err), 4) << err;
}

// ---- 6. smaller ones -----------------------------------------------------------------------------

TEST(Reliability, CorruptedPartialResultsAreRejectedNamingFileAndRow) {
  Fixture f;
  const std::string out = f.tmp / "run";
  ASSERT_EQ(run_ml2o({"run", f.cfg, "--out", out}), 0);
  const fs::path part = fs::path(out) / "parts" / "adam__K0__-.csv";
  const std::string good = slurp(part.string());
  auto lines_of = [](const std::string& s) {
    std::vector<std::string> v;
    std::istringstream in(s);
    for (std::string l; std::getline(in, l);) v.push_back(l);
    return v;
  };
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& l : v) s += l + "\n";
    return s;
  };
  struct Case {
    std::function<void(std::vector<std::string>&)> corrupt;
    std::string fragment;
  };
  // Each message names the file and the bad row (checked loosely: the checkpoint work words them
  // too); never a bare "stoll", never accepted.
  const std::vector<Case> cases = {
      {[](auto& l) { l[3] = "0,2,abc"; }, "0,2,abc"},
      {[](auto& l) { l[3] = "0,2,1.5xyz"; }, "0,2,1.5xyz"},
      {[](auto& l) { l[5] = l[4]; }, "0,3,"},
      {[](auto& l) { l[0] = "# note=x skipped=many"; }, "header"},
      {[](auto& l) { l[2] = "7,1,0.5"; }, "7,1,0.5"},
  };
  for (const Case& c : cases) {
    auto lines = lines_of(good);
    c.corrupt(lines);
    write(part.string(), join(lines));
    std::string err;
    EXPECT_EQ(run_ml2o({"run", f.cfg, "--out", out, "--resume"}, &err), 2) << err;
    EXPECT_TRUE(has(err, "parts/adam__K0__-.csv")) << err;
    EXPECT_TRUE(has(err, "corrupt partial result")) << err;
    EXPECT_TRUE(has(err, c.fragment)) << err;
    EXPECT_FALSE(has(err, "stoll")) << err;
  }
}

TEST(Reliability, ParamsOfTheOtherArchAreRefusedBeforeAnythingIsCreated) {
  Fixture f;
  OptimizerHyper dm;
  dm.arch = Arch::dmlstm;
  const std::string other = f.tmp / "dmlstm.params";
  save_params(other, init_optimizer(dm, 1));
  std::string err;
  EXPECT_EQ(run_ml2o({"eval", "--config", f.cfg, "--params", other, "--out", f.tmp / "e"}, &err), 2);
  EXPECT_TRUE(has(err, "params are dmlstm but")) << err;
  EXPECT_EQ(run_ml2o({"train", "--config", f.cfg, "--init", other, "--out", f.tmp / "t"}, &err), 2);
  EXPECT_TRUE(has(err, "params are dmlstm but")) << err;
  EXPECT_EQ(run_ml2o({"adapt", "--config", f.cfg, "--params", other, "--out", f.tmp / "a.params"}, &err), 2);
  for (const char* p : {"e", "t", "a.params"}) EXPECT_FALSE(fs::exists(f.tmp.path / p)) << p;
}

}  // namespace
}  // namespace ml2o
