// The mlp family as an optimizee of the engine (docs/mlp.md): the CPU backend's unroll and the
// baselines against direct loops over the MLP reference, evaluation with report steps, the config's
// keys and refusals, and the quick config end to end in a shrunk form.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "ml2o/backend.hpp"
#include "ml2o/config.hpp"
#include "ml2o/io.hpp"
#include "ml2o/meta.hpp"
#include "ml2o/protocol.hpp"
#include "ml2o/unroll.hpp"

namespace fs = std::filesystem;

namespace ml2o {
namespace {

#define ML2O_NEED_DIGITS() \
  if (!fs::exists(kDigitsPath)) GTEST_SKIP() << "no " << kDigitsPath << " (scripts/setup.sh installs python3-sklearn)"

TaskSpec small_mlp(int instances = 3, uint64_t seed = 5) {
  TaskSpec s;
  s.family = Family::mlp;
  s.layers = {64, 6, 10};
  s.activation = Activation::tanh;
  s.minibatch = 8;
  s.instances = instances;
  s.seed = seed;
  return s;
}

TEST(MlpTask, SamplingDerivesDimAndDrawsTheInitialWeights) {
  ML2O_NEED_DIGITS();
  TaskSpec s = small_mlp();
  s.dim = 1;  // whatever the spec says, d is the parameter count
  const Task<float> t = sample_task<float>(s);
  ASSERT_TRUE(t.mlp);
  EXPECT_EQ(t.spec.dim, 64 * 6 + 6 + 6 * 10 + 10);
  EXPECT_EQ(t.x0, mlp_init<float>(mlp_spec_of(s)));
  EXPECT_EQ(t.mlp->f.train_rows + t.mlp->f.test_rows, kDigitsRows);
  EXPECT_EQ(t.mlp->f.test_rows, std::llround(0.2 * kDigitsRows));
}

// The unroll's forward pass against a direct loop: at step t every instance's gradient is drawn on
// the minibatch of global step k + t, every coordinate moves by the learned optimizer's update,
// and the step loss is the mean minibatch loss.
TEST(MlpTask, CpuUnrollMatchesADirectLoop) {
  ML2O_NEED_DIGITS();
  const Task<float> task = sample_task<float>(small_mlp());
  const OptimizerHyper hyper;
  const LearnedOptimizer opt = init_optimizer(hyper, 3);
  const int T = 4;
  const int64_t N = task.spec.instances, d = task.spec.dim;

  Trajectory<float> got = start_trajectory(task.x0);
  got.k = 7;  // mid-trajectory: the minibatches follow the global step
  Trajectory<float> want = got;
  const UnrollResult<float> r = unroll_cpu(hyper, opt.weights, view_of(task), got, T, GradMode::none);

  MlpWorkspace<float> ws(task.mlp->f.layout, task.spec.minibatch);
  std::vector<float> g(d);
  StepTape<float> tape;
  for (int t = 0; t <= T; ++t) {
    float mean = 0.0f;
    for (int64_t n = 0; n < N; ++n) {
      float* x = want.x.data() + n * d;
      mean += mlp_instance_loss_grad(task.mlp->f, n, want.k + t, x, g.data(), ws);
      if (t == T) continue;
      for (int64_t j = 0; j < d; ++j)
        x[j] += optimizer_step_forward(hyper, opt.weights.data(), g[j], want.k + t,
                                       want.coord[n * d + j], tape);
    }
    mean *= 1.0f / float(N);
    EXPECT_EQ(float(r.step_loss[t]), mean) << "t = " << t;
  }
  EXPECT_EQ(got.x, want.x);
  EXPECT_EQ(got.k, 7 + T);
  EXPECT_LT(r.step_loss[T], r.step_loss[0] * 2);  // sanity: finite, not exploding
}

// Gradient-constant meta-gradient in float against double (the oracle), and the second-order
// modes refused with a message naming the settings.
TEST(MlpTask, MetaGradientMatchesDoubleAndSecondOrderIsRefused) {
  ML2O_NEED_DIGITS();
  const TaskSpec spec = small_mlp(2);
  const Task<float> tf = sample_task<float>(spec);
  const Task<double> td = sample_task<double>(spec);
  const OptimizerHyper hyper;
  const LearnedOptimizer opt = init_optimizer(hyper, 4);
  Trajectory<float> a = start_trajectory(tf.x0);
  Trajectory<double> b = start_trajectory(td.x0);
  const auto rf = unroll_cpu(hyper, opt.weights, view_of(tf), a, 3, GradMode::gradient_constant);
  const std::vector<double> wd(opt.weights.begin(), opt.weights.end());
  const auto rd = unroll_cpu(hyper, wd, view_of(td), b, 3, GradMode::gradient_constant);
  double gmax = 0, err = 0;
  for (size_t p = 0; p < wd.size(); ++p) {
    gmax = std::max(gmax, std::abs(rd.grad[p]));
    err = std::max(err, std::abs(rd.grad[p] - double(rf.grad[p])));
  }
  ASSERT_GT(gmax, 0.0);
  EXPECT_LT(err / gmax, 1e-3);
  EXPECT_NEAR(double(rf.meta_loss), double(rd.meta_loss), 1e-4 * std::abs(double(rd.meta_loss)));

  Trajectory<float> c = start_trajectory(tf.x0);
  try {
    unroll_cpu(hyper, opt.weights, view_of(tf), c, 2, GradMode::second_derivatives);
    ADD_FAILURE() << "second derivatives on mlp should be refused";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("gradient_constant"), std::string::npos) << e.what();
  }
  auto be = make_cpu_backend();
  const auto task = be->upload(tf);
  const auto start = be->trajectory(*task);
  const auto w = upload_vector(*be, opt.weights), v = upload_vector(*be, opt.weights);
  const auto out = be->vector(opt.weights.size());
  const HvpItem item{start.get(), w.get(), v.get(), out.get()};
  EXPECT_THROW(be->hvp(hyper, std::span<const HvpItem>(&item, 1), 2, GradMode::gradient_constant),
               std::invalid_argument);
}

// SGD's baseline against a direct loop; its objective at step t is x_t's loss on the minibatch of
// step t + 1 (the one its gradient comes from), and the snapshots are the iterates.
TEST(MlpTask, SgdBaselineMatchesADirectLoop) {
  ML2O_NEED_DIGITS();
  const Task<float> task = sample_task<float>(small_mlp(2));
  BaselineSpec spec;
  spec.kind = BaselineKind::sgd;
  spec.lr = 0.05;
  const int steps = 6;
  IterateSnapshots snaps{{0, 3, 6}, {}};
  const std::vector<double> curve = run_baseline_cpu(spec, task, steps, nullptr, &snaps);
  ASSERT_EQ(curve.size(), size_t(steps + 1));

  const int64_t N = task.spec.instances, d = task.spec.dim;
  std::vector<float> x = task.x0, g(d);
  MlpWorkspace<float> ws(task.mlp->f.layout, task.spec.minibatch);
  std::vector<double> want(steps + 1, 0.0);
  for (int64_t n = 0; n < N; ++n) {
    float* xn = x.data() + n * d;
    for (int k = 1; k <= steps + 1; ++k) {
      want[k - 1] += double(mlp_instance_loss_grad(task.mlp->f, n, k, xn, g.data(), ws)) / double(N);
      if (k == 3 + 1) {
        EXPECT_TRUE(std::equal(xn, xn + d, snaps.x[1].begin() + n * d)) << "snapshot at step 3";
      }
      if (k > steps) break;
      for (int64_t j = 0; j < d; ++j) xn[j] -= 0.05f * g[j];
    }
  }
  for (int t = 0; t <= steps; ++t) EXPECT_NEAR(curve[t], want[t], 1e-12) << "t = " << t;
  EXPECT_EQ(snaps.x[0], task.x0);
  EXPECT_EQ(snaps.x[2], x);
}

// Evaluation with report steps runs the unroll in segments: the same curves, and the iterates
// handed over at those steps.
TEST(MlpTask, EvaluateWithReportsGivesTheSameCurves) {
  ML2O_NEED_DIGITS();
  auto be = make_cpu_backend();
  const Task<float> t0 = sample_task<float>(small_mlp(2, 1)), t1 = sample_task<float>(small_mlp(2, 2));
  const auto a = be->upload(t0), b = be->upload(t1);
  const LearnedOptimizer opt = init_optimizer(OptimizerHyper{}, 9);
  const auto plain = evaluate(*be, {opt}, {a.get(), b.get()}, 7);
  std::vector<std::vector<int>> seen(2);
  std::vector<std::vector<float>> last(2);
  const auto reported = evaluate(*be, {opt}, {a.get(), b.get()}, 7, {0, 3, 7},
                                 [&](int step, size_t i, const std::vector<float>& x) {
                                   seen[i].push_back(step);
                                   last[i] = x;
                                 });
  EXPECT_EQ(plain, reported);
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(seen[i], (std::vector<int>{0, 3, 7}));
  Trajectory<float> tr = start_trajectory(t1.x0);
  unroll_cpu(opt.hyper, opt.weights, view_of(t1), tr, 7, GradMode::none);
  EXPECT_EQ(last[1], tr.x);
}

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/ml2o_mlp_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

// ---- config ------------------------------------------------------------------------------------

const char* kMlpConfig = R"(
[run]
name = "mlp-tiny"
backend = "cpu"

[train]
unroll = 5
max_epochs = 1
curriculum = [10]
eval_every = 1
eval_batches = 1

[[train.task]]
family = "mlp"
layers = [64, 4, 10]
minibatch = 8
instances = 1

[adapt]
K = [1]
unroll = 5
trajectory = 10

[eval]
steps = 10
seeds = 1
report_every = 5

[eval.task]
family = "mlp"
layers = [64, 5, 10]
activation = "relu"
minibatch = 8
instances = 1

[baselines]
optimizers = ["sgd", "momentum", "adam", "rmsprop"]
lrs = [0.01, 0.1]
)";

std::string with(const std::string& base, const std::string& find, const std::string& replace) {
  std::string s = base;
  const size_t at = s.find(find);
  EXPECT_NE(at, std::string::npos) << find;
  if (at != std::string::npos) s.replace(at, find.size(), replace);
  return s;
}

std::string config_error(const std::string& text) {
  try {
    parse_config(text, "mlp.toml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(MlpConfig, KeysAreReadAndDimIsDerived) {
  const Config c = parse_config(kMlpConfig, "mlp.toml");
  ASSERT_EQ(c.train.tasks.size(), 1u);
  EXPECT_EQ(c.train.tasks[0].family, Family::mlp);
  EXPECT_EQ(c.train.tasks[0].dim, 64 * 4 + 4 + 4 * 10 + 10);
  EXPECT_EQ(c.eval.task.dim, 64 * 5 + 5 + 5 * 10 + 10);
  EXPECT_EQ(c.eval.task.activation, Activation::relu);
  EXPECT_EQ(c.eval.report_every, 5);
  EXPECT_EQ(mlp_report_steps(c.eval), (std::vector<int>{0, 5, 10}));
  EXPECT_TRUE(uses_mlp(c));
  EXPECT_EQ(c.json["eval"]["task"]["layers"], nlohmann::json::array({64, 5, 10}));
  // The resolved config parses back to itself (what --resume compares).
  EXPECT_EQ(c.json["train"]["task"][0]["data_path"], kDigitsPath);
}

TEST(MlpConfig, RefusalsNameTheKeyAndTheAllowedValues) {
  struct Case {
    std::string find, replace, key, allowed;
  };
  const std::vector<Case> cases = {
      {"[train]\n", "[train]\ngrad_mode = \"second_derivatives\"\n", "train.grad_mode",
       "\"gradient_constant\" when any task is mlp"},
      {"[adapt]\n", "[ml2o]\nmeta_gradient = \"second_order\"\n\n[adapt]\n", "ml2o.meta_gradient",
       "\"first_order\""},
      {"backend = \"cpu\"", "backend = \"cuda\"", "run.backend", "\"cpu\""},
      {"layers = [64, 5, 10]", "layers = [63, 5, 10]", "eval.task.layers", "[64, hidden..., 10]"},
      {"layers = [64, 5, 10]", "layers = [64]", "eval.task.layers", "[inputs, hidden..., classes]"},
      {"activation = \"relu\"", "activation = \"gelu\"", "eval.task.activation", "\"sigmoid\", \"relu\", \"tanh\""},
      {"minibatch = 8\ninstances = 1\n\n[adapt]", "minibatch = 8\ninstances = 1\ndim = 10\n\n[adapt]",
       "train.task[0].dim", "keys for mlp"},
      {"activation = \"relu\"", "activation = \"relu\"\ndataset = \"idx\"", "eval.task.data_path",
       "idx3-ubyte"},
      {"activation = \"relu\"", "activation = \"relu\"\nlabels_path = \"l.idx\"", "eval.task.labels_path",
       "dataset = \"digits\""},
      {"activation = \"relu\"", "activation = \"relu\"\ntest_fraction = 1.0", "eval.task.test_fraction",
       ""},
  };
  for (const Case& c : cases) {
    const std::string msg = config_error(with(kMlpConfig, c.find, c.replace));
    EXPECT_NE(msg.find("'" + c.key), std::string::npos) << c.replace << "\n" << msg;
    EXPECT_NE(msg.find(c.allowed), std::string::npos) << c.replace << "\n" << msg;
  }
  // report_every belongs to an mlp test task.
  const std::string lasso = R"(
[run]
backend = "cpu"
[arms]
direct_transfer = false
transfer_learning = false
ml2o = false
[eval]
report_every = 5
[eval.task]
family = "lasso"
)";
  EXPECT_NE(config_error(lasso).find("'eval.report_every'"), std::string::npos) << config_error(lasso);
}

TEST(MlpConfig, BackendChoiceForMlp) {
  EXPECT_EQ(make_backend("auto", /*mlp=*/true)->name(), "cpu");
  EXPECT_EQ(make_backend("cpu", /*mlp=*/true)->name(), "cpu");
  EXPECT_THROW(make_backend("cuda", /*mlp=*/true), std::invalid_argument);
  EXPECT_TRUE(make_cpu_backend()->caps().mlp_family);
}

TEST(MlpConfig, BadDatasetFileIsAFormatErrorNamingThePath) {
  TaskSpec s = small_mlp();
  s.data_path = "/nonexistent/digits.csv.gz";
  try {
    sample_task<float>(s);
    ADD_FAILURE() << "a missing dataset should be refused";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/digits.csv.gz"), std::string::npos) << e.what();
  }
}

// `ml2o run` with a dataset file that is not there: exit 2, the path in the message, no output.
TEST(MlpProtocol, MissingDatasetExitsTwoAndWritesNothing) {
  TempDir tmp;
  const fs::path cfg = tmp.path / "bad.toml";
  std::ofstream(cfg) << with(kMlpConfig, "activation = \"relu\"",
                             "activation = \"relu\"\ndata_path = \"" + (tmp.path / "none.csv.gz").string() + "\"");
  const fs::path err = tmp.path / "stderr.txt";
  const std::string cmd = std::string(ML2O_BINARY) + " run " + cfg.string() + " --out " +
                          (tmp.path / "out").string() + " 2>" + err.string();
  const int rc = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(rc));
  EXPECT_EQ(WEXITSTATUS(rc), 2);
  EXPECT_NE(read_file(err.string()).find((tmp.path / "none.csv.gz").string()), std::string::npos)
      << read_file(err.string());
  EXPECT_FALSE(fs::exists(tmp.path / "out"));
}

// The same results for any thread count, run to run (the tiny config through the CLI).
TEST(MlpProtocol, RerunIsBitIdenticalAndThreadCountIndependent) {
  ML2O_NEED_DIGITS();
  TempDir tmp;
  const fs::path cfg = tmp.path / "tiny.toml";
  std::ofstream(cfg) << kMlpConfig;
  for (const char* threads : {"1", "2"}) {
    const std::string cmd = std::string(ML2O_BINARY) + " --threads " + threads + " run " +
                            cfg.string() + " --out " + (tmp.path / threads).string() + " 2>/dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  for (const char* f : {"curves.csv", "mlp_scores.csv", "l2o.params", "ml2o.params"})
    EXPECT_EQ(read_file((tmp.path / "1" / f).string()), read_file((tmp.path / "2" / f).string())) << f;
}

// ---- end to end --------------------------------------------------------------------------------

// configs/mlp-digits-quick.toml with its sizes shrunk to seconds: every arm and baseline reports
// the full training loss and the test accuracy at the report steps.
TEST(MlpProtocol, QuickConfigShrunkRunsEndToEnd) {
  ML2O_NEED_DIGITS();
  std::string text = read_file(std::string(ML2O_SOURCE_DIR) + "/configs/mlp-digits-quick.toml");
  for (const auto& [find, replace] : std::vector<std::pair<std::string, std::string>>{
           {"max_epochs = 4", "max_epochs = 1"},
           {"curriculum = [40]", "curriculum = [20]"},
           {"trajectory = 40", "trajectory = 20"},
           {"steps = 60", "steps = 20"},
           {"seeds = 2", "seeds = 1"},
           {"report_every = 20", "report_every = 10"},
           {"layers = [64, 12, 10]", "layers = [64, 4, 10]"},
           {"layers = [64, 8, 10]", "layers = [64, 3, 10]"}})
    text = with(text, find, replace);
  TempDir tmp;
  const fs::path cfg_path = tmp.path / "quick.toml";
  std::ofstream(cfg_path) << text;
  const Config cfg = load_config(cfg_path.string());
  RunOptions opts;
  opts.out_dir = (tmp.path / "out").string();
  run_protocol(cfg, opts);

  const auto summary = nlohmann::json::parse(read_file((tmp.path / "out" / "summary.json").string()));
  std::set<std::string> arms;
  for (const auto& a : summary["arms"]) {
    const std::string arm = a["arm"];
    arms.insert(arm);
    ASSERT_TRUE(a.contains("mlp")) << arm;
    EXPECT_EQ(a["mlp"]["steps"], nlohmann::json::array({0, 10, 20})) << arm;
    for (const auto& acc : a["mlp"]["test_accuracy"]) {
      EXPECT_GE(acc.get<double>(), 0.0);
      EXPECT_LE(acc.get<double>(), 1.0);
    }
    // Every arm starts from the same networks, so the step-0 scores agree.
    EXPECT_EQ(a["mlp"]["train_loss"][0], summary["arms"][0]["mlp"]["train_loss"][0]) << arm;
    EXPECT_TRUE(a["mlp"]["final_train_loss"].is_number()) << arm;
  }
  EXPECT_EQ(arms, (std::set<std::string>{"vanilla", "direct_transfer", "transfer_learning", "ml2o",
                                         "sgd", "momentum", "adam", "rmsprop"}));
  // The best learning rate of a tuned baseline trains: its full training loss falls.
  for (const auto& a : summary["arms"])
    if (a["arm"] == "adam")
      EXPECT_LT(a["mlp"]["final_train_loss"].get<double>(), a["mlp"]["train_loss"][0].get<double>());
  std::istringstream csv(read_file((tmp.path / "out" / "mlp_scores.csv").string()));
  std::string line;
  std::getline(csv, line);
  EXPECT_EQ(line, "arm,K,source,seed,step,train_loss,test_accuracy");
  int rows = 0;
  while (std::getline(csv, line)) ++rows;
  EXPECT_EQ(rows, 8 * 3);
  EXPECT_TRUE(fs::exists(tmp.path / "out" / "plot_mlp_data.tsv"));

  // A resumed run reads the finished parts back, mlp scores included.
  opts.resume = true;
  const std::string before = read_file((tmp.path / "out" / "mlp_scores.csv").string());
  run_protocol(cfg, opts);
  EXPECT_EQ(read_file((tmp.path / "out" / "mlp_scores.csv").string()), before);
}

}  // namespace
}  // namespace ml2o
