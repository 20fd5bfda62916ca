// The config layer: shipped configs parse, defaults are the paper's (docs/method.md), sigma lists expand, derived
// seeds follow configs/README.md, and Config::json holds every key and parses back to itself.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>

#include "ml2o/config.hpp"

namespace {

using ml2o::Config;
using nlohmann::json;

const char* kMinimal = R"(
[[train.task]]
family = "lasso"
sigma = [0.1, 0.5, 1.0]

[eval.task]
family = "lasso"
sigma = 100
)";

std::vector<std::filesystem::path> shipped_configs() {
  std::vector<std::filesystem::path> out;
  for (const auto& e : std::filesystem::directory_iterator(std::string(ML2O_SOURCE_DIR) + "/configs"))
    if (e.path().extension() == ".toml") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// Writes a resolved config back as TOML (the inverse of Config::json's layout).
std::string toml_value(const json& v) {
  if (v.is_string()) {
    std::string s = "\"";
    for (char c : v.get<std::string>()) {
      if (c == '"' || c == '\\') s += '\\';
      s += c;
    }
    return s + "\"";
  }
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number_unsigned()) return std::to_string(v.get<uint64_t>());
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number_float()) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.17g", v.get<double>());
    std::string s = buf;
    if (s.find_first_of(".e") == std::string::npos) s += ".0";
    return s;
  }
  if (v.is_array()) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + toml_value(v[i]);
    return s + "]";
  }
  ADD_FAILURE() << "unexpected json value " << v.dump();
  return "";
}

std::string json_to_toml(const json& j) {
  std::string out;
  auto keys = [&](const json& obj) {
    for (auto it = obj.begin(); it != obj.end(); ++it)
      if (!it.value().is_object() && !(it.value().is_array() && !it.value().empty() &&
                                       it.value()[0].is_object()))
        out += it.key() + " = " + toml_value(it.value()) + "\n";
  };
  for (auto it = j.begin(); it != j.end(); ++it) {
    out += "\n[" + it.key() + "]\n";
    keys(it.value());
    for (auto sub = it.value().begin(); sub != it.value().end(); ++sub) {
      if (sub.value().is_object()) {
        out += "\n[" + it.key() + "." + sub.key() + "]\n";
        keys(sub.value());
      } else if (sub.value().is_array() && !sub.value().empty() && sub.value()[0].is_object()) {
        for (const json& t : sub.value()) {
          out += "\n[[" + it.key() + "." + sub.key() + "]]\n";
          keys(t);
        }
      }
    }
  }
  return out;
}

TEST(Config, EveryShippedConfigParses) {
  const auto files = shipped_configs();
  ASSERT_GE(files.size(), 8u) << "configs/ should hold lasso, rosenbrock, quadratic, rastrigin and *-quick";
  std::set<std::string> names;
  for (const auto& f : files) {
    SCOPED_TRACE(f.string());
    Config c;
    ASSERT_NO_THROW(c = ml2o::load_config(f.string()));
    EXPECT_EQ(c.path, f.string());
    EXPECT_FALSE(c.json.contains("source"));  // settings only: the same settings hash alike
    EXPECT_FALSE(c.train.tasks.empty());
    EXPECT_EQ(c.run.name, f.stem().string());
    names.insert(f.stem().string());
    const bool quick = f.stem().string().find("-quick") != std::string::npos;
    if (quick) {
      // Sized for 2 CPU cores: small batches, short curriculum, few epochs and seeds.
      EXPECT_LE(c.eval.task.instances, 64);
      EXPECT_LE(c.train.curriculum.back(), 500);
      EXPECT_LE(c.train.max_epochs, 50);
      EXPECT_LE(c.eval.seeds, 3);
      EXPECT_LE(c.eval.steps, 500);
    } else if (c.eval.task.family == ml2o::Family::mlp) {
      // Neural-network training has no paper-size setting: sized in docs/mlp.md (CPU for now).
      EXPECT_LE(c.eval.steps, 1000);
      EXPECT_LE(c.eval.seeds, 10);
    } else {
      EXPECT_EQ(c.eval.steps, 1000);
      EXPECT_EQ(c.eval.seeds, 10);
      // "-medium": the paper's problem size with a shortened meta-training (for a GPU).
      if (f.stem().string().find("-medium") == std::string::npos)
        EXPECT_EQ(c.train.curriculum.back(), 3000);
      EXPECT_EQ(c.eval.task.instances, 128);
    }
    // D_adapt and D_test share a distribution but never the instances.
    EXPECT_EQ(c.adapt.task.family, c.eval.task.family);
    EXPECT_NE(c.adapt.task.seed, c.eval.task.seed);
  }
  for (const char* base : {"lasso", "rosenbrock", "quadratic", "rastrigin"}) {
    EXPECT_TRUE(names.count(base)) << base;
    EXPECT_TRUE(names.count(std::string(base) + "-quick")) << base << "-quick";
  }
}

TEST(Config, QuickConfigsMirrorTheirFullConfig) {
  for (const char* base : {"lasso", "rosenbrock", "quadratic", "rastrigin"}) {
    SCOPED_TRACE(base);
    const std::string dir = std::string(ML2O_SOURCE_DIR) + "/configs/";
    const Config full = ml2o::load_config(dir + base + ".toml");
    const Config quick = ml2o::load_config(dir + base + "-quick.toml");
    EXPECT_EQ(quick.train.tasks.size(), full.train.tasks.size());
    for (size_t i = 0; i < full.train.tasks.size() && i < quick.train.tasks.size(); ++i) {
      EXPECT_EQ(quick.train.tasks[i].family, full.train.tasks[i].family);
      EXPECT_EQ(quick.train.tasks[i].sigma, full.train.tasks[i].sigma);
      EXPECT_EQ(quick.train.tasks[i].alpha, full.train.tasks[i].alpha);
    }
    EXPECT_EQ(quick.eval.task.family, full.eval.task.family);
    EXPECT_EQ(quick.eval.task.sigma, full.eval.task.sigma);
    EXPECT_EQ(quick.eval.task.alpha, full.eval.task.alpha);
    EXPECT_EQ(quick.baselines.optimizers, full.baselines.optimizers);
    EXPECT_EQ(quick.adapt.sources, full.adapt.sources);
  }
}

TEST(Config, PaperLassoConfig) {
  const Config c = ml2o::load_config(std::string(ML2O_SOURCE_DIR) + "/configs/lasso.toml");
  ASSERT_EQ(c.train.tasks.size(), 3u);
  const double sigmas[] = {0.1, 0.5, 1.0};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(c.train.tasks[i].family, ml2o::Family::lasso);
    EXPECT_EQ(c.train.tasks[i].sigma, sigmas[i]);
    EXPECT_EQ(c.train.tasks[i].dim, 10);
    EXPECT_EQ(c.train.tasks[i].instances, 128);
  }
  EXPECT_EQ(c.eval.task.sigma, 100.0);
  EXPECT_EQ(c.adapt.task.sigma, 100.0);
  EXPECT_EQ(c.adapt.K, (std::vector<int>{5, 50}));
  EXPECT_EQ(c.adapt.sources, (std::vector<ml2o::AdaptSource>{ml2o::AdaptSource::test,
                                                              ml2o::AdaptSource::adapt}));
  const auto& o = c.baselines.optimizers;
  EXPECT_NE(std::find(o.begin(), o.end(), ml2o::BaselineKind::ista), o.end());
  EXPECT_NE(std::find(o.begin(), o.end(), ml2o::BaselineKind::fista), o.end());

  const Config r = ml2o::load_config(std::string(ML2O_SOURCE_DIR) + "/configs/rosenbrock.toml");
  ASSERT_EQ(r.train.tasks.size(), 3u);  // the same LASSO D_train
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(r.train.tasks[i].family, c.train.tasks[i].family);
    EXPECT_EQ(r.train.tasks[i].sigma, c.train.tasks[i].sigma);
    EXPECT_EQ(r.train.tasks[i].seed, c.train.tasks[i].seed);
  }
  EXPECT_EQ(r.eval.task.family, ml2o::Family::rosenbrock);
  EXPECT_EQ(r.eval.task.dim, 2);
}

TEST(Config, DefaultsAreTheSpecs) {
  const Config c = ml2o::parse_config(kMinimal, "minimal.toml");
  EXPECT_EQ(c.path, "minimal.toml");
  EXPECT_EQ(c.run.name, "run");
  EXPECT_EQ(c.run.seed, 0u);
  EXPECT_EQ(c.run.backend, "auto");
  EXPECT_EQ(c.optimizer.arch, ml2o::Arch::rnnprop);
  EXPECT_EQ(c.optimizer.dm_p, 10.0);      // docs/method.md section 2: the paper's p
  EXPECT_EQ(c.optimizer.dm_scale, 0.1);   // and scale
  // docs/method.md section 4.
  EXPECT_EQ(c.train.unroll, 20);
  EXPECT_EQ(c.train.lr, 1e-3);
  EXPECT_EQ(c.train.beta1, 0.9);
  EXPECT_EQ(c.train.beta2, 0.999);
  EXPECT_EQ(c.train.eps, 1e-8);
  EXPECT_EQ(c.train.max_epochs, 500);
  EXPECT_EQ(c.train.curriculum, (std::vector<int>{100, 200, 500, 1000, 1500, 2000, 2500, 3000}));
  EXPECT_EQ(c.train.eval_every, 10);
  EXPECT_EQ(c.train.eval_batches, 20);
  EXPECT_EQ(c.train.patience, 3);
  EXPECT_EQ(c.train.grad_mode, ml2o::GradMode::gradient_constant);
  EXPECT_EQ(c.train.max_skipped, 10);
  // docs/method.md section 5.
  EXPECT_EQ(c.ml2o.inner_steps, 1);
  EXPECT_EQ(c.ml2o.inner_lr, 1e-3);
  EXPECT_EQ(c.ml2o.meta_gradient, ml2o::MetaGradient::first_order);
  // docs/method.md section 6.
  EXPECT_EQ(c.adapt.K, (std::vector<int>{5, 50}));
  EXPECT_EQ(c.adapt.lr, 1e-3);
  EXPECT_EQ(c.adapt.unroll, 20);
  EXPECT_EQ(c.adapt.trajectory, 100);
  EXPECT_EQ(c.adapt.sources, std::vector<ml2o::AdaptSource>{ml2o::AdaptSource::test});
  EXPECT_EQ(c.eval.steps, 1000);
  EXPECT_EQ(c.eval.seeds, 10);
  EXPECT_EQ(c.baselines.optimizers,
            (std::vector<ml2o::BaselineKind>{ml2o::BaselineKind::sgd, ml2o::BaselineKind::momentum,
                                             ml2o::BaselineKind::adam, ml2o::BaselineKind::rmsprop}));
  EXPECT_EQ(c.baselines.lrs, (std::vector<double>{1e-3, 1e-2, 1e-1}));
  EXPECT_EQ(c.baselines.momentum, 0.9);
  EXPECT_TRUE(c.arms.vanilla && c.arms.direct_transfer && c.arms.transfer_learning &&
              c.arms.ml2o && c.arms.baselines);
  // docs/method.md section 1: LASSO d = 10, 128 instances, lambda 0.005, b ~ U(0, 1), x0 ~ N(0, 0.01^2).
  const ml2o::TaskSpec& t = c.eval.task;
  EXPECT_EQ(t.family, ml2o::Family::lasso);
  EXPECT_EQ(t.dim, 10);
  EXPECT_EQ(t.instances, 128);
  EXPECT_EQ(t.sigma, 100.0);
  EXPECT_EQ(t.lam, 0.005);
  EXPECT_EQ(t.b_lo, 0.0);
  EXPECT_EQ(t.b_hi, 1.0);
  EXPECT_EQ(t.x0_scale, 0.01);
  // D_adapt defaults to D_test with the seed + 1000.
  EXPECT_EQ(c.adapt.task.family, t.family);
  EXPECT_EQ(c.adapt.task.sigma, t.sigma);
  EXPECT_EQ(c.adapt.task.seed, t.seed + 1000);
}

TEST(Config, FamilyDefaults) {
  const Config c = ml2o::parse_config(R"(
[[train.task]]
family = "quadratic"
[[train.task]]
family = "rosenbrock"
[[train.task]]
family = "rastrigin"
[adapt.task]
family = "rastrigin"
dim = 3
[eval.task]
family = "rosenbrock"
)",
                                      "families.toml");
  ASSERT_EQ(c.train.tasks.size(), 3u);
  const auto& q = c.train.tasks[0];
  EXPECT_EQ(q.family, ml2o::Family::quadratic);
  EXPECT_EQ(q.dim, 10);
  EXPECT_EQ(q.sigma, 1.0);
  EXPECT_EQ(q.b_lo, -1.0);
  EXPECT_EQ(q.b_hi, 1.0);
  EXPECT_EQ(q.x0_scale, 0.01);
  const auto& r = c.train.tasks[1];
  EXPECT_EQ(r.family, ml2o::Family::rosenbrock);
  EXPECT_EQ(r.dim, 2);
  EXPECT_EQ(r.x0_scale, 1.0);
  const auto& a = c.train.tasks[2];
  EXPECT_EQ(a.family, ml2o::Family::rastrigin);
  EXPECT_EQ(a.dim, 10);
  EXPECT_EQ(a.x0_scale, 3.0);
  EXPECT_EQ(a.alpha, 10.0);
  EXPECT_EQ(c.adapt.task.dim, 3);
  EXPECT_EQ(c.eval.task.dim, 2);
}

TEST(Config, SigmaListsExpandIntoTasksWithDistinctSeeds) {
  const Config c = ml2o::parse_config(R"(
[run]
seed = 7
[[train.task]]
family = "lasso"
sigma = [0.1, 0.5, 1.0]
lam = 0.01
[[train.task]]
family = "quadratic"
sigma = [2, 3]
seed = 40
[[train.task]]
family = "lasso"
sigma = 0.25
[eval.task]
family = "lasso"
)",
                                      "expand.toml");
  ASSERT_EQ(c.train.tasks.size(), 6u);
  const double sigmas[] = {0.1, 0.5, 1.0, 2.0, 3.0, 0.25};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(c.train.tasks[i].sigma, sigmas[i]) << i;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(c.train.tasks[i].lam, 0.01);
    EXPECT_EQ(c.train.tasks[i].seed, 7ull * 1000003 + 300000 + 10000ull * i);
  }
  EXPECT_EQ(c.train.tasks[3].seed, 40u);  // explicit seed s, s + 1 for a list
  EXPECT_EQ(c.train.tasks[4].seed, 41u);
  EXPECT_EQ(c.train.tasks[5].seed, 7ull * 1000003 + 300000 + 10000ull * 5);
  EXPECT_EQ(c.eval.task.seed, 7ull * 1000003 + 100000);
  EXPECT_EQ(c.adapt.task.seed, c.eval.task.seed + 1000);
  EXPECT_EQ(c.json["train"]["task"].size(), 6u);
  EXPECT_EQ(c.json["train"]["task"][1]["sigma"], 0.5);
  std::set<uint64_t> seeds;
  for (const auto& t : c.train.tasks) seeds.insert(t.seed);
  EXPECT_EQ(seeds.size(), 6u);
}

TEST(Config, ExplicitAdaptTaskGetsItsOwnSeed) {
  const Config c = ml2o::parse_config(std::string(kMinimal) + R"(
[run]
seed = 3
[adapt.task]
family = "lasso"
sigma = 50
)",
                                      "adapt.toml");
  EXPECT_EQ(c.adapt.task.sigma, 50.0);
  EXPECT_EQ(c.adapt.task.seed, 3ull * 1000003 + 200000);
  EXPECT_EQ(c.eval.task.seed, 3ull * 1000003 + 100000);
}

TEST(Config, HugeRunSeedStaysBelow2To63) {
  const Config c = ml2o::parse_config(std::string(kMinimal) + "[run]\nseed = 9223372036854775807\n",
                                      "seed.toml");
  EXPECT_LT(c.eval.task.seed, uint64_t{1} << 63);
  EXPECT_LT(c.adapt.task.seed, uint64_t{1} << 63);
  for (const auto& t : c.train.tasks) EXPECT_LT(t.seed, uint64_t{1} << 63);
}

TEST(Config, AcceptedVariants) {
  // Integers for floats, inline tables, dotted keys, DM-LSTM with the second-order meta-gradient,
  // training arms off without D_train, ISTA on a LASSO test task.
  const Config c = ml2o::parse_config(R"(
optimizer.arch = "dmlstm"
optimizer.dm_p = 5
optimizer.dm_scale = 0.01
[train]
lr = 1
grad_mode = "second_derivatives"
[ml2o]
meta_gradient = "first_order"
inner_lr = 0
[eval]
task = { family = "lasso", sigma = 100, b_range = [-2, 2] }
[baselines]
optimizers = ["ista", "fista"]
momentum = 0
[arms]
direct_transfer = false
transfer_learning = false
ml2o = false
)",
                                      "variants.toml");
  EXPECT_EQ(c.optimizer.arch, ml2o::Arch::dmlstm);
  EXPECT_EQ(c.optimizer.dm_p, 5.0);
  EXPECT_EQ(c.train.lr, 1.0);
  EXPECT_EQ(c.train.grad_mode, ml2o::GradMode::second_derivatives);
  EXPECT_TRUE(c.train.tasks.empty());
  EXPECT_EQ(c.eval.task.b_lo, -2.0);
  EXPECT_EQ(c.eval.task.b_hi, 2.0);
  EXPECT_EQ(c.ml2o.inner_lr, 0.0);

  const Config d = ml2o::parse_config(std::string(kMinimal) + R"(
[optimizer]
arch = "dmlstm"
[ml2o]
meta_gradient = "second_order"
)",
                                      "dm2.toml");
  EXPECT_EQ(d.ml2o.meta_gradient, ml2o::MetaGradient::second_order);
  EXPECT_EQ(d.optimizer.arch, ml2o::Arch::dmlstm);
}

TEST(Config, NonAsciiIsFineInComments) {
  // Greek, CJK punctuation and Arabic presentation forms: code points toml++ 3.3 mishandles as
  // whitespace candidates (see guard_non_ascii in host/config.cpp) are harmless in comments.
  const Config c = ml2o::parse_config(std::string("\xEF\xBB\xBF# D_test: \u03C3 = 100 (\u00D7100) \u3001\uFC10\n") +
                                          kMinimal + "# \u03B1, \u03BB \u2264 1\n[run]\nname = \"x\" # \u00E9\n",
                                      "unicode.toml");
  EXPECT_EQ(c.run.name, "x");
  EXPECT_EQ(c.eval.task.sigma, 100.0);
}

TEST(Config, Names) {
  EXPECT_STREQ(ml2o::grad_mode_name(ml2o::GradMode::gradient_constant), "gradient_constant");
  EXPECT_STREQ(ml2o::grad_mode_name(ml2o::GradMode::second_derivatives), "second_derivatives");
  EXPECT_STREQ(ml2o::grad_mode_name(ml2o::GradMode::none), "none");
  EXPECT_STREQ(ml2o::meta_gradient_name(ml2o::MetaGradient::first_order), "first_order");
  EXPECT_STREQ(ml2o::meta_gradient_name(ml2o::MetaGradient::second_order), "second_order");
  EXPECT_STREQ(ml2o::adapt_source_name(ml2o::AdaptSource::test), "test");
  EXPECT_STREQ(ml2o::adapt_source_name(ml2o::AdaptSource::adapt), "adapt");
}

TEST(Config, JsonHoldsEveryKey) {
  const Config c = ml2o::parse_config(kMinimal, "minimal.toml");
  const json& j = c.json;
  const std::map<std::string, std::vector<std::string>> schema = {
      {"run", {"name", "seed", "backend"}},
      {"optimizer", {"arch", "dm_p", "dm_scale", "output_scale"}},
      {"train", {"unroll", "lr", "beta1", "beta2", "eps", "max_epochs", "curriculum", "eval_every",
                 "eval_batches", "patience", "grad_mode", "max_skipped", "seed", "task"}},
      {"ml2o", {"inner_steps", "inner_lr", "meta_gradient"}},
      {"adapt", {"K", "lr", "unroll", "trajectory", "sources", "task"}},
      {"eval", {"steps", "seeds", "task", "in_distribution"}},
      {"baselines", {"optimizers", "lrs", "momentum"}},
      {"arms", {"vanilla", "direct_transfer", "transfer_learning", "ml2o", "baselines"}},
  };
  for (const auto& [section, keys] : schema) {
    ASSERT_TRUE(j.contains(section)) << section;
    EXPECT_EQ(j[section].size(), keys.size()) << section << ": " << j[section].dump();
    for (const auto& k : keys) EXPECT_TRUE(j[section].contains(k)) << section << "." << k;
  }
  EXPECT_EQ(j.size(), schema.size());
  for (const char* k : {"family", "dim", "instances", "sigma", "lam", "b_range", "x0_scale", "seed"})
    EXPECT_TRUE(j["eval"]["task"].contains(k)) << k;
  EXPECT_EQ(j["train"]["task"].size(), 3u);
  EXPECT_EQ(j["train"]["lr"], 1e-3);
  EXPECT_EQ(j["train"]["grad_mode"], "gradient_constant");
  EXPECT_EQ(j["eval"]["task"]["seed"], c.eval.task.seed);

  const Config r = ml2o::parse_config(R"(
[[train.task]]
family = "rastrigin"
alpha = 2
[eval.task]
family = "rosenbrock"
)",
                                      "r.toml");
  for (const char* k : {"family", "dim", "instances", "x0_scale", "alpha", "seed"})
    EXPECT_TRUE(r.json["train"]["task"][0].contains(k)) << k;
  EXPECT_EQ(r.json["train"]["task"][0].size(), 6u);
  EXPECT_EQ(r.json["eval"]["task"].size(), 5u);  // family, dim, instances, x0_scale, seed
}

TEST(Config, JsonRoundTripsThroughToml) {
  std::vector<std::pair<std::string, std::string>> inputs;
  for (const auto& f : shipped_configs()) inputs.emplace_back(f.string(), ml2o::read_file(f.string()));
  inputs.emplace_back("minimal.toml", kMinimal);
  for (const auto& [name, text] : inputs) {
    SCOPED_TRACE(name);
    const Config a = ml2o::parse_config(text, name);
    const std::string back = json_to_toml(a.json);
    Config b;
    ASSERT_NO_THROW(b = ml2o::parse_config(back, "roundtrip.toml")) << back;
    EXPECT_EQ(a.json, b.json) << back;
    EXPECT_EQ(b.train.tasks.size(), a.train.tasks.size());
    EXPECT_EQ(b.adapt.task.seed, a.adapt.task.seed);
    EXPECT_EQ(b.eval.task.seed, a.eval.task.seed);
  }
}

TEST(Config, JsonDependsOnSettingsNotOnThePath) {
  // A resumed run compares the json of the saved copy with the json of the config it is given.
  const Config a = ml2o::parse_config(kMinimal, "a.toml");
  const Config b = ml2o::parse_config(std::string("# a comment\n") + kMinimal, "/elsewhere/b.toml");
  EXPECT_EQ(a.json.dump(), b.json.dump());
  const Config c = ml2o::parse_config(std::string(kMinimal) + "[train]\nlr = 0.002\n", "a.toml");
  EXPECT_NE(a.json.dump(), c.json.dump());
}

TEST(Config, LoadConfigReadsAFile) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("ml2o_cfg_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
                     ".toml");
  ml2o::write_file_atomic(path.string(), kMinimal);
  const Config c = ml2o::load_config(path.string());
  EXPECT_EQ(c.path, path.string());
  EXPECT_EQ(c.train.tasks.size(), 3u);
  std::filesystem::remove(path);
}

// configs/README.md's key reference is generated from the schema: between its markers (after a
// blank line, before one) it must be config_reference_markdown() exactly. With
// ML2O_UPDATE_REFERENCE=1 the test writes the generated text there instead.
TEST(Config, ReferenceMatchesReadme) {
  const std::string path = std::string(ML2O_SOURCE_DIR) + "/configs/README.md";
  const std::string readme = ml2o::read_file(path);
  const std::string begin = "<!-- keys:begin -->\n", end = "<!-- keys:end -->";
  const size_t b = readme.find(begin), e = readme.find(end);
  ASSERT_NE(b, std::string::npos) << path << " lacks " << begin;
  ASSERT_NE(e, std::string::npos) << path << " lacks " << end;
  ASSERT_LT(b, e);
  const size_t from = b + begin.size();
  const std::string have = readme.substr(from, e - from);
  const std::string want = "\n" + ml2o::config_reference_markdown() + "\n";
  if (have == want) return;
  if (std::getenv("ML2O_UPDATE_REFERENCE")) {
    ml2o::write_file_atomic(path, readme.substr(0, from) + want + readme.substr(e));
    std::printf("rewrote the key reference in %s\n", path.c_str());
    return;
  }
  auto lines = [](const std::string& t) {
    std::vector<std::string> out;
    size_t at = 0;
    while (at < t.size()) {
      const size_t nl = t.find('\n', at);
      out.push_back(t.substr(at, nl == std::string::npos ? std::string::npos : nl - at));
      at = nl == std::string::npos ? t.size() : nl + 1;
    }
    return out;
  };
  const auto h = lines(have), w = lines(want);
  size_t i = 0;
  while (i < h.size() && i < w.size() && h[i] == w[i]) ++i;
  const size_t line = static_cast<size_t>(std::count(readme.begin(), readme.begin() + from, '\n')) + 1 + i;
  ADD_FAILURE() << "configs/README.md's key reference is not the schema's, from line " << line << ":\n"
                << "- README:    " << (i < h.size() ? h[i] : "(end)") << "\n"
                << "+ generated: " << (i < w.size() ? w[i] : "(end)") << "\n"
                << "Regenerate it with: ML2O_UPDATE_REFERENCE=1 ml2o_tests "
                   "--gtest_filter=Config.ReferenceMatchesReadme";
}

}  // namespace
