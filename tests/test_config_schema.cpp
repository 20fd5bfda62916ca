// The schema machinery on a table of its own: adding a key is one line (and a struct field), and
// the key then has its checks, located messages, unknown-key suggestions, resolved json and
// reference row. The keys here are stand-ins for ones planned (an RNNprop output scale, nested MLP
// task keys), not keys of ml2o's config.
#include <gtest/gtest.h>

#include <string>

#include "../host/config/schema.hpp"

namespace {

using namespace ml2o::schema;

struct FakeOptimizer {
  double output_scale = 0.01;  // the default lives in the struct, as in settings.hpp
};
struct FakeEval {
  bool in_distribution = false;
};
struct FakeMlp {
  int layers = 2;
  std::string activation = "relu";
};
struct Fake {
  FakeOptimizer optimizer;
  FakeEval eval;
  FakeMlp mlp;
};

const std::vector<Key<Fake>>& fake_keys() {
  static const std::vector<Key<Fake>> keys = {
      real("optimizer.output_scale", field(&Fake::optimizer, &FakeOptimizer::output_scale),
           kPositive, "RNNprop's output scale"),
      boolean("eval.in_distribution", field(&Fake::eval, &FakeEval::in_distribution),
              "also evaluate on D_train's distribution"),
      integer("task.mlp.layers", field(&Fake::mlp, &FakeMlp::layers), {1, 16}, "hidden layers"),
      choice("task.mlp.activation", field(&Fake::mlp, &FakeMlp::activation),
             Choices<std::string>{{"relu", "relu"}, {"tanh", "tanh"}}, "the hidden activation"),
  };
  return keys;
}

Fake read(const std::string& text, const std::vector<Key<Fake>>& keys = fake_keys()) {
  const toml::table doc = toml::parse(std::string_view(text), std::string_view("fake.toml"));
  Parser p("fake.toml");
  Fake f;
  read_table(p, Tab{&doc, "", Where{1, 1}}, keys, f);
  return f;
}

std::string error_of(const std::string& text, const std::vector<Key<Fake>>& keys = fake_keys()) {
  try {
    read(text, keys);
  } catch (const ml2o::ConfigError& e) {
    return e.what();
  }
  return "accepted";
}

TEST(ConfigSchema, DefaultsComeFromTheStructs) {
  const Fake f = read("");
  EXPECT_EQ(f.optimizer.output_scale, 0.01);
  EXPECT_EQ(to_json(fake_keys(), f).dump(),
            R"({"eval":{"in_distribution":false},"optimizer":{"output_scale":0.01},)"
            R"("task":{"mlp":{"activation":"relu","layers":2}}})");
}

TEST(ConfigSchema, ReadsValuesIntoTheirFields) {
  const Fake f = read("[optimizer]\noutput_scale = 1\n[eval]\nin_distribution = true\n"
                      "[task.mlp]\nlayers = 3\nactivation = \"tanh\"\n");
  EXPECT_EQ(f.optimizer.output_scale, 1.0);
  EXPECT_TRUE(f.eval.in_distribution);
  EXPECT_EQ(f.mlp.layers, 3);
  EXPECT_EQ(f.mlp.activation, "tanh");
  EXPECT_EQ(to_json(fake_keys(), f)["task"]["mlp"]["layers"], 3);
}

TEST(ConfigSchema, ChecksAndLocatesEveryKey) {
  EXPECT_EQ(error_of("[optimizer]\noutput_scale = 0\n"),
            "fake.toml:2:16: key 'optimizer.output_scale': 0 is out of range; allowed: a float > 0");
  EXPECT_EQ(error_of("[task.mlp]\nlayers = 17\n"),
            "fake.toml:2:10: key 'task.mlp.layers': 17 is out of range; allowed: an integer in [1, 16]");
  EXPECT_EQ(error_of("[task.mlp]\nactivation = \"tahn\"\n"),
            "fake.toml:2:14: key 'task.mlp.activation': 'tahn' is not a valid value (did you mean "
            "'tanh'?); allowed: \"relu\", \"tanh\"");
  EXPECT_EQ(error_of("eval.in_distribution = 1\n"),
            "fake.toml:1:24: key 'eval.in_distribution': expected a boolean, found an integer; "
            "allowed: true, false");
  EXPECT_EQ(error_of("[task]\nmlp = 5\n"),
            "fake.toml:2:7: key 'task.mlp': expected a table, found an integer; allowed: a table "
            "[task.mlp]");
}

TEST(ConfigSchema, UnknownKeysComeFromTheTable) {
  EXPECT_EQ(error_of("[optimizer]\noutput_scal = 0.1\n"),
            "fake.toml:2:1: unknown key 'optimizer.output_scal'; did you mean 'output_scale'? "
            "allowed keys in [optimizer]: output_scale");
  EXPECT_EQ(error_of("[task.mlp]\nlayer = 3\n"),
            "fake.toml:2:1: unknown key 'task.mlp.layer'; did you mean 'layers'? allowed keys in "
            "[task.mlp]: layers, activation");
  EXPECT_EQ(error_of("[optimiser]\n"),
            "fake.toml:1:2: unknown key 'optimiser'; did you mean 'optimizer'? allowed top-level "
            "tables: optimizer, eval, task");
}

TEST(ConfigSchema, RequiredKeys) {
  std::vector<Key<Fake>> keys = fake_keys();
  keys.push_back(choice("task.mlp.dataset", field(&Fake::mlp, &FakeMlp::activation),
                        Choices<std::string>{{"digits", "digits"}}, "the data")
                     .needed("an MLP task names its data"));
  EXPECT_EQ(error_of("", keys),
            "fake.toml:1:1: key 'task.mlp.dataset': missing: an MLP task names its data; allowed: "
            "\"digits\"");
  EXPECT_EQ(error_of("[task.mlp]\nlayers = 1\n", keys),
            "fake.toml:1:1: key 'task.mlp.dataset': missing: an MLP task names its data; allowed: "
            "\"digits\"");
}

TEST(ConfigSchema, ReferenceRows) {
  const Fake defaults;
  const std::string table = markdown_table(
      rows<Fake>(fake_keys(), "task.", [&](const Key<Fake>& k) { return toml_literal(k.show(defaults)); }),
      false);
  EXPECT_EQ(table,
            "| key | type | default | allowed | meaning |\n"
            "|---|---|---|---|---|\n"
            "| `mlp.layers` | integer | 2 | an integer in [1, 16] | hidden layers |\n"
            "| `mlp.activation` | string | \"relu\" | \"relu\", \"tanh\" | the hidden activation |\n");
}

}  // namespace
