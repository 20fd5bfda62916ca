// `ml2o sweep` (the protocol over several meta-training seeds and its aggregate), the
// in-distribution evaluation of `ml2o run`, and the plot's colour table.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "../host/protocol/plot.hpp"
#include "ml2o/config.hpp"
#include "ml2o/io.hpp"
#include "ml2o/protocol.hpp"

namespace fs = std::filesystem;

namespace ml2o {
namespace {

// Two training sigmas, two evaluation seeds, one K: about a second per run.
constexpr const char* kTiny = R"(
[run]
name = "tiny-sweep"
seed = 3
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
    char tmpl[] = "/tmp/ml2o_sweep_test_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

Config write_and_load(const fs::path& dir, const std::string& text) {
  fs::create_directories(dir);
  const fs::path p = dir / "tiny.toml";
  std::ofstream(p) << text;
  return load_config(p.string());
}

nlohmann::json read_json(const fs::path& p) { return nlohmann::json::parse(read_file(p.string())); }

const nlohmann::json& arm_of(const nlohmann::json& arms, const nlohmann::json& like) {
  for (const auto& a : arms)
    if (a["arm"] == like["arm"] && a["K"] == like["K"] && a["source"] == like["source"]) return a;
  ADD_FAILURE() << "no arm like " << like.dump();
  return arms.front();
}

// Mean, sample std, min and max computed here from the per-seed summaries, compared with the sweep.
void expect_spread(const nlohmann::json& agg, const std::vector<nlohmann::json>& per_seed,
                   const std::string& what) {
  SCOPED_TRACE(what);
  std::vector<double> v;
  for (const auto& x : per_seed)
    if (!x.is_null()) v.push_back(x.get<double>());
  ASSERT_EQ(agg["n"].get<size_t>(), v.size());
  EXPECT_EQ(agg["per_seed"], nlohmann::json(per_seed));
  if (v.empty()) {
    EXPECT_TRUE(agg["mean"].is_null());
    return;
  }
  double mean = 0;
  for (double x : v) mean += x;
  mean /= double(v.size());
  double sq = 0;
  for (double x : v) sq += (x - mean) * (x - mean);
  const double sd = v.size() > 1 ? std::sqrt(sq / double(v.size() - 1)) : 0.0;
  EXPECT_NEAR(agg["mean"].get<double>(), mean, 1e-12 * std::abs(mean));
  EXPECT_NEAR(agg["std"].get<double>(), sd, 1e-12 * std::abs(mean) + 1e-300);
  EXPECT_EQ(agg["min"].get<double>(), *std::min_element(v.begin(), v.end()));
  EXPECT_EQ(agg["max"].get<double>(), *std::max_element(v.begin(), v.end()));
}

void expect_section_aggregated(const nlohmann::json& agg_arms, const std::vector<nlohmann::json>& runs_arms) {
  ASSERT_EQ(agg_arms.size(), runs_arms[0].size());
  for (const auto& agg : agg_arms) {
    std::vector<const nlohmann::json*> per;
    for (const auto& arms : runs_arms) per.push_back(&arm_of(arms, agg));
    const std::string name = agg["arm"].get<std::string>() + " K" + std::to_string(agg["K"].get<int>()) +
                             " " + agg["source"].get<std::string>();
    for (const char* key : {"final_mean", "start_mean", "steps_to_10x_below_start"}) {
      std::vector<nlohmann::json> vals;
      for (const auto* a : per) vals.push_back((*a)[key]);
      expect_spread(agg[key], vals, name + " " + key);
    }
    for (const char* step : {"10", "100", "1000"}) {
      std::vector<nlohmann::json> vals;
      for (const auto* a : per) vals.push_back((*a)["objective_at_step"][step]);
      expect_spread(agg["objective_at_step"][step], vals, name + " @" + step);
    }
  }
}

TEST(Sweep, AggregatesEachSeedsSummaryIntoMeanAndSpread) {
  TempDir tmp;
  const Config cfg = write_and_load(tmp.path, kTiny);
  RunOptions opts;
  opts.out_dir = (tmp.path / "sweep").string();
  run_sweep(cfg, {0, 5}, opts);
  const fs::path out = tmp.path / "sweep";
  const nlohmann::json agg = read_json(out / "summary.json");
  EXPECT_EQ(agg["train_seeds"], nlohmann::json({0, 5}));
  EXPECT_EQ(agg["runs"], nlohmann::json({"train-seed-0", "train-seed-5"}));
  std::vector<nlohmann::json> runs;
  for (const char* d : {"train-seed-0", "train-seed-5"}) runs.push_back(read_json(out / d / "summary.json"));
  EXPECT_EQ(runs[0]["config"]["train"]["seed"], 0);
  EXPECT_EQ(runs[1]["config"]["train"]["seed"], 5);
  // The meta-training seed matters (else the spread says nothing) and the test instances do not
  // depend on it (the baselines see the same instances).
  EXPECT_NE(arm_of(runs[0]["arms"], {{"arm", "ml2o"}, {"K", 2}, {"source", "test"}})["final_mean"],
            arm_of(runs[1]["arms"], {{"arm", "ml2o"}, {"K", 2}, {"source", "test"}})["final_mean"]);
  EXPECT_EQ(arm_of(runs[0]["arms"], {{"arm", "fista"}, {"K", 0}, {"source", "-"}})["final_mean"],
            arm_of(runs[1]["arms"], {{"arm", "fista"}, {"K", 0}, {"source", "-"}})["final_mean"]);

  expect_section_aggregated(agg["arms"], {runs[0]["arms"], runs[1]["arms"]});
  ASSERT_TRUE(agg.contains("in_distribution"));
  expect_section_aggregated(agg["in_distribution"]["arms"],
                            {runs[0]["in_distribution"]["arms"], runs[1]["in_distribution"]["arms"]});

  // curves.csv: per arm and meta-training seed, the mean over that run's evaluation seeds.
  std::map<std::string, double> run_sum;  // (seed dir, arm, K, source, step) -> sum over eval seeds
  for (const char* d : {"train-seed-0", "train-seed-5"}) {
    std::istringstream in(read_file((out / d / "curves.csv").string()));
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      std::vector<std::string> f;
      std::stringstream ss(line);
      for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
      const std::string seed = std::string(d).substr(11);
      run_sum[f[0] + "," + f[1] + "," + f[2] + "," + seed + "," + f[4]] += std::stod(f[5]) / 2.0;
    }
  }
  std::istringstream in(read_file((out / "curves.csv").string()));
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "arm,K,source,train_seed,step,objective");
  size_t rows = 0;
  while (std::getline(in, line)) {
    const size_t last = line.rfind(',');
    const std::string key = line.substr(0, last);
    ASSERT_TRUE(run_sum.count(key)) << key;
    EXPECT_NEAR(std::stod(line.substr(last + 1)), run_sum[key], 1e-6 * std::abs(run_sum[key]) + 1e-30) << key;
    ++rows;
  }
  EXPECT_EQ(rows, run_sum.size());
  if (std::system("command -v gnuplot >/dev/null 2>&1") == 0) {
    EXPECT_TRUE(fs::exists(out / "plot.png"));
    EXPECT_TRUE(fs::exists(out / "plot_in_distribution.png"));
  }

  // A second sweep into the same directory is refused; --resume finishes with the same numbers.
  EXPECT_THROW(run_sweep(cfg, {0, 5}, opts), ConfigError);
  opts.resume = true;
  run_sweep(cfg, {0, 5}, opts);
  // (A resumed run reads its curves back from parts/*.csv, written to 9 significant digits.)
  const nlohmann::json again = read_json(out / "summary.json");
  EXPECT_EQ(again["train_seeds"], agg["train_seeds"]);
  ASSERT_EQ(again["arms"].size(), agg["arms"].size());
  for (size_t i = 0; i < agg["arms"].size(); ++i) {
    const double a = agg["arms"][i]["final_mean"]["mean"].get<double>();
    EXPECT_NEAR(again["arms"][i]["final_mean"]["mean"].get<double>(), a, 1e-7 * std::abs(a));
  }
}

TEST(Sweep, AggregateSkipsUndefinedValues) {
  auto run_with = [](double final_mean, nlohmann::json steps_to_10x) {
    ProtocolResult r;
    r.summary["arms"] = {{{"arm", "adam"}, {"K", 0}, {"source", "-"}, {"note", "lr=0.1"}, {"seeds", 3},
                          {"final_mean", final_mean}, {"start_mean", 4.0},
                          {"steps_to_10x_below_start", steps_to_10x},
                          {"steps_to_100x_below_start", nullptr}, {"skipped_adaptation_steps", 0},
                          {"objective_at_step", {{"10", 2.0}, {"100", nullptr}, {"1000", nullptr}}}}};
    return r;
  };
  const nlohmann::json agg =
      aggregate_train_seeds({1, 2, 3}, {run_with(1.0, 7), run_with(2.0, nullptr), run_with(6.0, 9)});
  const auto& a = agg["arms"][0];
  EXPECT_EQ(a["final_mean"]["mean"], 3.0);
  EXPECT_DOUBLE_EQ(a["final_mean"]["std"].get<double>(), std::sqrt(7.0));  // (4 + 1 + 9) / 2
  EXPECT_EQ(a["final_mean"]["min"], 1.0);
  EXPECT_EQ(a["final_mean"]["max"], 6.0);
  EXPECT_EQ(a["steps_to_10x_below_start"]["n"], 2);
  EXPECT_EQ(a["steps_to_10x_below_start"]["mean"], 8.0);
  EXPECT_TRUE(a["steps_to_100x_below_start"]["mean"].is_null());
  EXPECT_EQ(a["objective_at_step"]["10"]["std"], 0.0);
  EXPECT_FALSE(agg.contains("in_distribution"));
}

TEST(InDistribution, RunEvaluatesTrainedOptimizersAndAdamOnTheTrainingTasks) {
  TempDir tmp;
  const Config cfg = write_and_load(tmp.path, kTiny);
  ASSERT_TRUE(cfg.eval.in_distribution);  // the default
  RunOptions opts;
  opts.out_dir = (tmp.path / "run").string();
  const ProtocolResult res = run_protocol(cfg, opts);
  const nlohmann::json s = read_json(tmp.path / "run" / "summary.json");
  EXPECT_EQ(s, res.summary);
  ASSERT_TRUE(s.contains("in_distribution"));
  std::set<std::string> arms;
  for (const auto& a : s["in_distribution"]["arms"]) {
    arms.insert(a["arm"].get<std::string>());
    EXPECT_EQ(a["source"], "train");
    EXPECT_EQ(a["seeds"], 4);  // 2 evaluation seeds x 2 training sigmas
    EXPECT_TRUE(a["final_mean"].is_number()) << a.dump();
  }
  EXPECT_EQ(arms, (std::set<std::string>{"l2o", "ml2o", "adam"}));
  ASSERT_EQ(s["in_distribution"]["train_tasks"].size(), 2u);
  EXPECT_EQ(s["in_distribution"]["train_tasks"][1]["sigma"], 1.0);
  // Other instances than the test task's: Adam's curves differ.
  for (const auto& a : s["arms"])
    if (a["arm"] == "adam") EXPECT_NE(a["final_mean"], s["in_distribution"]["arms"][2]["final_mean"]);
  EXPECT_TRUE(fs::exists(tmp.path / "run" / "curves_in_distribution.csv"));
  ASSERT_EQ(res.in_distribution.size(), 3u);
  EXPECT_EQ(res.in_distribution[0].curves.size(), 4u);

  // Fresh instances: none is a training batch, the test task or another seed's.
  const auto specs = in_distribution_specs(cfg);
  ASSERT_EQ(specs.size(), 4u);
  std::set<uint64_t> seeds;
  for (const auto& sp : specs) seeds.insert(sp.seed);
  seeds.insert(cfg.eval.task.seed);
  for (const auto& t : cfg.train.tasks) seeds.insert(t.seed);
  EXPECT_EQ(seeds.size(), 4u + 1u + cfg.train.tasks.size());

}

// A command-line override (--backend, a sweep's train.seed) is applied to the saved config too, so
// the run resumes; the saved config.toml names it.
TEST(InDistribution, OffTurnsItOffAndOverriddenRunsResume) {
  TempDir tmp;
  std::string text = kTiny;
  text.replace(text.find("backend = \"cpu\""), 15, "backend = \"auto\"");
  text.replace(text.find("seeds = 2"), 9, "seeds = 2\nin_distribution = false");
  Config cfg = write_and_load(tmp.path, text);
  RunOptions opts;
  opts.out_dir = (tmp.path / "run").string();
  opts.overrides.backend = "cpu";
  opts.overrides.train_seed = 0;
  opts.overrides.apply(cfg);
  const ProtocolResult first = run_protocol(cfg, opts);
  EXPECT_FALSE(first.summary.contains("in_distribution"));
  EXPECT_TRUE(first.in_distribution.empty());
  EXPECT_FALSE(fs::exists(tmp.path / "run" / "curves_in_distribution.csv"));
  // The saved config is the resolved one: the overrides are in it.
  const fs::path saved = tmp.path / "run" / "config.toml";
  const Config resolved = parse_config(read_file(saved.string()), saved.string());
  EXPECT_EQ(resolved.train.seed, 0u);
  EXPECT_EQ(resolved.run.backend, "cpu");
  const std::string curves = read_file((tmp.path / "run" / "curves.csv").string());
  opts.resume = true;
  const ProtocolResult again = run_protocol(cfg, opts);
  EXPECT_EQ(read_file((tmp.path / "run" / "curves.csv").string()), curves);

  // The out-of-distribution results do not depend on whether the in-distribution part runs.
  const Config on = write_and_load(tmp.path / "cfg_on", kTiny);
  RunOptions o2;
  o2.out_dir = (tmp.path / "on").string();
  const ProtocolResult with = run_protocol(on, o2);
  EXPECT_FALSE(with.in_distribution.empty());
  EXPECT_EQ(read_file((tmp.path / "on" / "curves.csv").string()),
            read_file((tmp.path / "run" / "curves.csv").string()));
  EXPECT_EQ(with.summary["arms"], first.summary["arms"]);
}

TEST(InDistribution, WithoutATrainedOptimizerTheSummarySaysWhy) {
  TempDir tmp;
  const Config cfg = write_and_load(
      tmp.path, std::string(kTiny) + "\n[arms]\ndirect_transfer = false\ntransfer_learning = false\nml2o = false\n");
  RunOptions opts;
  opts.out_dir = (tmp.path / "run").string();
  const ProtocolResult r = run_protocol(cfg, opts);
  EXPECT_TRUE(r.in_distribution.empty());
  ASSERT_TRUE(r.summary.contains("in_distribution"));
  EXPECT_NE(r.summary["in_distribution"]["skipped"].get<std::string>().find("no trained optimizer"),
            std::string::npos);
}

TEST(Plot, EveryArmAndBaselineHasAColourOfItsOwn) {
  std::vector<std::string> arms = {"vanilla", "direct_transfer", "transfer_learning", "ml2o", "l2o"};
  for (BaselineKind k : {BaselineKind::sgd, BaselineKind::momentum, BaselineKind::adam,
                         BaselineKind::rmsprop, BaselineKind::ista, BaselineKind::fista})
    arms.push_back(baseline_name(k));
  const std::string unknown = arm_colour("no such arm");
  std::map<std::string, std::string> owner;
  for (const auto& a : arms) {
    const std::string c = arm_colour(a);
    EXPECT_NE(c, unknown) << a << " has no colour of its own";
    EXPECT_TRUE(owner.emplace(c, a).second) << a << " and " << owner[c] << " share " << c;
  }
  EXPECT_EQ(coloured_arms().size(), arms.size());
}

}  // namespace
}  // namespace ml2o
