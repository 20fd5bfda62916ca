// Malformed inputs: every one must be refused with ConfigError (configs) or FormatError (params
// files) whose message names the file and says what is wrong; never a crash, never another
// exception type.
//
// Three sources of cases:
//  - systematic config cases generated here: unknown keys at every level, wrong types and
//    out-of-range values for every key, every contradiction, syntax errors, garbage;
//  - systematic params-file cases: magic, version, arch, truncation at every header offset and a
//    sample of data offsets, every single-byte flip of the header and a sample of the data;
//  - the replayed corpus tests/data/malformed/: NAME.toml or NAME.params beside NAME.expect (the
//    expected message fragment). Drop fuzzer finds there.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "ml2o/config.hpp"
#include "ml2o/io.hpp"
#include "ml2o/lopt.hpp"

namespace {

namespace fs = std::filesystem;

// ---- a config document built from sections, so that a case can change one key ---------------------

struct Doc {
  struct Section {
    std::string header;  // "" for the root, "[train]", "[[train.task]]", ...
    std::vector<std::pair<std::string, std::string>> kv;
  };
  std::vector<Section> sections;

  Section& section(const std::string& header) {
    for (auto& s : sections)
      if (s.header == header) return s;
    sections.push_back({header, {}});
    return sections.back();
  }
  Doc& set(const std::string& header, const std::string& key, const std::string& value) {
    Section& s = section(header);
    for (auto& kv : s.kv)
      if (kv.first == key) {
        kv.second = value;
        return *this;
      }
    s.kv.emplace_back(key, value);
    return *this;
  }
  Doc& erase(const std::string& header, const std::string& key) {
    Section& s = section(header);
    s.kv.erase(std::remove_if(s.kv.begin(), s.kv.end(), [&](auto& kv) { return kv.first == key; }),
               s.kv.end());
    return *this;
  }
  Doc& drop(const std::string& header) {
    sections.erase(std::remove_if(sections.begin(), sections.end(),
                                  [&](auto& s) { return s.header == header; }),
                   sections.end());
    return *this;
  }
  std::string text() const {
    std::string out = "# generated malformed case\n";
    // The root's keys must come before any header.
    for (const auto& s : sections)
      if (s.header.empty())
        for (const auto& [k, v] : s.kv) out += k + " = " + v + "\n";
    for (const auto& s : sections) {
      if (s.header.empty()) continue;
      out += "\n" + s.header + "\n";
      for (const auto& [k, v] : s.kv) out += k + " = " + v + "\n";
    }
    return out;
  }
  // 1-based line of `key = ` in the section, 0 if absent.
  int line_of(const std::string& header, const std::string& key) const {
    const std::string t = text();
    size_t pos = 0;
    if (!header.empty()) {
      pos = t.find("\n" + header + "\n");
      if (pos == std::string::npos) return 0;
      pos += 1;
    }
    const size_t at = t.find("\n" + key + " = ", pos);
    if (at == std::string::npos) return 0;
    return 2 + static_cast<int>(std::count(t.begin(), t.begin() + static_cast<long>(at), '\n'));
  }
};

Doc base_doc() {
  Doc d;
  d.set("[[train.task]]", "family", "\"lasso\"").set("[[train.task]]", "sigma", "[0.1, 0.5, 1.0]");
  d.set("[eval.task]", "family", "\"lasso\"").set("[eval.task]", "sigma", "100.0");
  return d;
}

struct ConfigCase {
  std::string name;
  std::string text;
  std::string expect;  // fragment of the message
  int line = 0;        // when > 0, the message must start with "name.toml:LINE:"
};

std::vector<ConfigCase>& cases() {
  static std::vector<ConfigCase> v;
  return v;
}

// Case names double as file names in messages; values that slug alike get a counter.
std::string unique_name(const std::string& name) {
  static std::map<std::string, int> seen;
  const int n = seen[name]++;
  return n == 0 ? name : name + "_" + std::to_string(n + 1);
}

void add(const std::string& name, const Doc& d, const std::string& expect, const std::string& header = "",
         const std::string& key = "") {
  int line = key.empty() ? 0 : d.line_of(header, key);
  cases().push_back({unique_name(name), d.text(), expect, line});
}
void add_text(const std::string& name, const std::string& text, const std::string& expect, int line = 0) {
  cases().push_back({unique_name(name), text, expect, line});
}

// ---- the schema the generator walks ------------------------------------------------------------

enum class Kind { integer, real, boolean, enumeration, int_list, real_list, enum_list, range, sigma };

struct Key {
  std::string header;  // where it lives
  std::string key;
  std::string path;    // dotted, as messages name it
  Kind kind;
  std::vector<std::string> below;  // out-of-range values (each must fail with "out of range")
  std::string family;  // task keys: the family that accepts the key ("" = the base lasso)
};

std::vector<Key> schema() {
  std::vector<Key> k = {
      {"[run]", "name", "run.name", Kind::enumeration, {}, ""},
      {"[run]", "seed", "run.seed", Kind::integer, {"-1"}, ""},
      {"[run]", "backend", "run.backend", Kind::enumeration, {}, ""},
      {"[optimizer]", "arch", "optimizer.arch", Kind::enumeration, {}, ""},
      {"[optimizer]", "dm_p", "optimizer.dm_p", Kind::real, {"0", "-1.5"}, ""},
      {"[optimizer]", "dm_scale", "optimizer.dm_scale", Kind::real, {"0.0", "-0.1"}, ""},
      {"[optimizer]", "output_scale", "optimizer.output_scale", Kind::real, {"0", "-0.01"}, ""},
      {"[train]", "unroll", "train.unroll", Kind::integer, {"0", "1001", "-20", "3000000000"}, ""},
      {"[train]", "lr", "train.lr", Kind::real, {"0", "-1e-3"}, ""},
      {"[train]", "beta1", "train.beta1", Kind::real, {"1.0", "-0.1", "1.5"}, ""},
      {"[train]", "beta2", "train.beta2", Kind::real, {"1", "-0.5"}, ""},
      {"[train]", "eps", "train.eps", Kind::real, {"0.0", "-1e-8"}, ""},
      {"[train]", "max_epochs", "train.max_epochs", Kind::integer, {"-1", "2147483648"}, ""},
      {"[train]", "curriculum", "train.curriculum", Kind::int_list, {"[0]", "[-100]", "[10]"}, ""},
      {"[train]", "eval_every", "train.eval_every", Kind::integer, {"0", "-3"}, ""},
      {"[train]", "eval_batches", "train.eval_batches", Kind::integer, {"0"}, ""},
      {"[train]", "patience", "train.patience", Kind::integer, {"0"}, ""},
      {"[train]", "grad_mode", "train.grad_mode", Kind::enumeration, {}, ""},
      {"[train]", "max_skipped", "train.max_skipped", Kind::integer, {"0"}, ""},
      {"[ml2o]", "inner_steps", "ml2o.inner_steps", Kind::integer, {"0", "-1"}, ""},
      {"[ml2o]", "inner_lr", "ml2o.inner_lr", Kind::real, {"-1e-3"}, ""},
      {"[ml2o]", "meta_gradient", "ml2o.meta_gradient", Kind::enumeration, {}, ""},
      {"[adapt]", "K", "adapt.K", Kind::int_list, {"[-1]", "[5, -5]", "[2000000]"}, ""},
      {"[adapt]", "lr", "adapt.lr", Kind::real, {"0", "-1"}, ""},
      {"[adapt]", "unroll", "adapt.unroll", Kind::integer, {"0", "1001"}, ""},
      {"[adapt]", "trajectory", "adapt.trajectory", Kind::integer, {"0", "-100"}, ""},
      {"[adapt]", "sources", "adapt.sources", Kind::enum_list, {}, ""},
      {"[eval]", "steps", "eval.steps", Kind::integer, {"0", "-1000"}, ""},
      {"[eval]", "seeds", "eval.seeds", Kind::integer, {"0", "1001"}, ""},
      {"[eval]", "in_distribution", "eval.in_distribution", Kind::boolean, {}, ""},
      {"[baselines]", "optimizers", "baselines.optimizers", Kind::enum_list, {}, ""},
      {"[baselines]", "lrs", "baselines.lrs", Kind::real_list, {"[0.0]", "[0.1, -0.1]"}, ""},
      {"[baselines]", "momentum", "baselines.momentum", Kind::real, {"1.0", "-0.1"}, ""},
      {"[arms]", "vanilla", "arms.vanilla", Kind::boolean, {}, ""},
      {"[arms]", "direct_transfer", "arms.direct_transfer", Kind::boolean, {}, ""},
      {"[arms]", "transfer_learning", "arms.transfer_learning", Kind::boolean, {}, ""},
      {"[arms]", "ml2o", "arms.ml2o", Kind::boolean, {}, ""},
      {"[arms]", "baselines", "arms.baselines", Kind::boolean, {}, ""},
  };
  // Task keys, in each of the three task tables.
  const std::vector<std::pair<std::string, std::string>> tables = {
      {"[eval.task]", "eval.task"}, {"[[train.task]]", "train.task[0]"}, {"[adapt.task]", "adapt.task"}};
  for (const auto& [h, p] : tables) {
    k.push_back({h, "family", p + ".family", Kind::enumeration, {}, ""});
    k.push_back({h, "dim", p + ".dim", Kind::integer, {"0", "-10"}, ""});
    k.push_back({h, "instances", p + ".instances", Kind::integer, {"0", "10000001", "-128"}, ""});
    k.push_back({h, "sigma", p + ".sigma", Kind::sigma, {"0.0", "-1"}, ""});
    k.push_back({h, "lam", p + ".lam", Kind::real, {"-0.005"}, ""});
    k.push_back({h, "b_range", p + ".b_range", Kind::range, {}, ""});
    k.push_back({h, "x0_scale", p + ".x0_scale", Kind::real, {"0", "-0.01"}, ""});
    k.push_back({h, "alpha", p + ".alpha", Kind::real, {"-1.0"}, "rastrigin"});
    k.push_back({h, "seed", p + ".seed", Kind::integer, {"-1"}, ""});
  }
  return k;
}

// The base document with the key's table present and of the family that accepts the key.
Doc doc_for(const Key& k) {
  Doc d = base_doc();
  if (k.header == "[adapt.task]") d.set("[adapt.task]", "family", "\"lasso\"");
  if (!k.family.empty() && k.key != "family") {
    d.set(k.header, "family", "\"" + k.family + "\"");
    if (k.family != "lasso" && k.family != "quadratic") d.erase(k.header, "sigma");
  }
  return d;
}

// Wrong-typed values for each kind: the value, the element the message names ("" for the key
// itself, "[0]" for a list's first element), and the expected "expected X, found Y".
struct Wrong {
  std::string value, elem, expect;
};
std::vector<Wrong> wrong_types(const Key& k) {
  switch (k.kind) {
    case Kind::integer:
      return {{"\"20\"", "", "expected an integer, found a string"},
              {"1.5", "", "expected an integer, found a float"},
              {"true", "", "expected an integer, found a boolean"},
              {"[1]", "", "expected an integer, found an array"}};
    case Kind::real:
      return {{"\"0.1\"", "", "expected a float, found a string"},
              {"false", "", "expected a float, found a boolean"},
              {"[0.1]", "", "expected a float, found an array"},
              {"1979-05-27", "", "expected a float, found a date"}};
    case Kind::boolean:
      return {{"1", "", "expected a boolean, found an integer"},
              {"\"true\"", "", "expected a boolean, found a string"},
              {"{ on = true }", "", "expected a boolean, found a table"}};
    case Kind::enumeration:
      return {{"1", "", "expected a string, found an integer"},
              {"[\"a\"]", "", "expected a string, found an array"},
              {"2.5", "", "expected a string, found a float"}};
    case Kind::int_list:
      return {{"5", "", "expected an array, found an integer"},
              {"\"100\"", "", "expected an array, found a string"},
              {"[\"a\"]", "[0]", "expected an integer, found a string"},
              {"[100.0]", "[0]", "expected an integer, found a float"}};
    case Kind::real_list:
      return {{"0.1", "", "expected an array, found a float"},
              {"[\"a\"]", "[0]", "expected a float, found a string"},
              {"[true]", "[0]", "expected a float, found a boolean"}};
    case Kind::enum_list:
      return {{"\"test\"", "", "expected an array, found a string"},
              {"[1]", "[0]", "expected a string, found an integer"},
              {"[[\"test\"]]", "[0]", "expected a string, found an array"}};
    case Kind::range:
      return {{"1.0", "", "expected an array, found a float"},
              {"[0, \"1\"]", "[1]", "expected a float, found a string"},
              {"\"0,1\"", "", "expected an array, found a string"}};
    case Kind::sigma:
      if (k.header == "[[train.task]]")
        return {{"\"x\"", "", "expected a float or a list of floats, found a string"},
                {"true", "", "expected a float or a list of floats, found a boolean"},
                {"[\"x\"]", "[0]", "expected a float, found a string"}};
      return {{"\"x\"", "", "expected a float, found a string"},
              {"true", "", "expected a float, found a boolean"}};
  }
  return {};
}

std::string slug(std::string s) {
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return s;
}

void generate_config_cases() {
  if (!cases().empty()) return;

  // -- wrong types, out of range, non-finite, for every key ----------------------------------------
  for (const Key& k : schema()) {
    for (const Wrong& w : wrong_types(k)) {
      Doc d = doc_for(k).set(k.header, k.key, w.value);
      add("type_" + slug(k.path) + "_" + slug(w.value), d,
          "key '" + k.path + w.elem + "': " + w.expect, k.header, k.key);
    }
    for (const std::string& value : k.below) {
      Doc d = doc_for(k).set(k.header, k.key, value);
      std::string expect = "is out of range";
      if (k.kind == Kind::sigma) expect = "is out of range; allowed: a float > 0";
      add("range_" + slug(k.path) + "_" + slug(value), d, expect, k.header, k.key);
    }
    if (k.kind == Kind::real || k.kind == Kind::sigma) {
      for (const char* v : {"nan", "inf", "-inf", "+nan"}) {
        Doc d = doc_for(k).set(k.header, k.key, v);
        add("nonfinite_" + slug(k.path) + "_" + slug(v), d, "is not a finite number", k.header, k.key);
      }
    }
    if (k.kind == Kind::real_list || k.kind == Kind::range) {
      Doc d = doc_for(k).set(k.header, k.key, "[0.1, nan]");
      add("nonfinite_" + slug(k.path) + "_elem", d, "[1]': nan is not a finite number", k.header, k.key);
    }
    if (k.kind == Kind::enumeration && k.key != "name") {
      Doc d = doc_for(k).set(k.header, k.key, "\"bogus\"");
      add("enum_" + slug(k.path), d, "key '" + k.path + "': 'bogus' is not a valid value", k.header,
          k.key);
    }
    if (k.kind == Kind::enum_list) {
      Doc d = doc_for(k).set(k.header, k.key, "[\"bogus\"]");
      add("enum_" + slug(k.path), d, "key '" + k.path + "[0]': 'bogus' is not a valid value",
          k.header, k.key);
    }
  }
  // Enum suggestions.
  add("enum_suggest_arch", base_doc().set("[optimizer]", "arch", "\"rnnprob\""),
      "'rnnprob' is not a valid value (did you mean 'rnnprop'?); allowed: \"rnnprop\", \"dmlstm\"",
      "[optimizer]", "arch");
  add("enum_suggest_family", base_doc().set("[eval.task]", "family", "\"laso\""),
      "(did you mean 'lasso'?)", "[eval.task]", "family");
  add("enum_suggest_backend", base_doc().set("[run]", "backend", "\"gpu\""),
      "allowed: \"cpu\", \"cuda\", \"auto\"", "[run]", "backend");
  add("enum_case_sensitive", base_doc().set("[train]", "grad_mode", "\"Gradient_Constant\""),
      "(did you mean 'gradient_constant'?)", "[train]", "grad_mode");
  add("enum_baseline_suggest", base_doc().set("[baselines]", "optimizers", "[\"adma\"]"),
      "(did you mean 'adam'?)", "[baselines]", "optimizers");
  add("enum_source_suggest", base_doc().set("[adapt]", "sources", "[\"tset\"]"),
      "(did you mean 'test'?)", "[adapt]", "sources");
  for (const char* bad : {"\"\"", "\"a/b\"", "\"..\"", "\"has space\"", "\"tab\\tname\""}) {
    add(std::string("run_name_") + slug(bad), base_doc().set("[run]", "name", bad),
        "is not a usable run name", "[run]", "name");
  }

  // -- unknown keys at every level, with suggestions -----------------------------------------------
  struct Typo {
    std::string header, key, path, suggestion, section;
  };
  const std::vector<Typo> typos = {
      {"[run]", "sed", "run.sed", "seed", "[run]"},
      {"[run]", "nme", "run.nme", "name", "[run]"},
      {"[run]", "backnd", "run.backnd", "backend", "[run]"},
      {"[optimizer]", "arhc", "optimizer.arhc", "arch", "[optimizer]"},
      {"[optimizer]", "dm_pp", "optimizer.dm_pp", "dm_p", "[optimizer]"},
      {"[optimizer]", "architecture", "optimizer.architecture", "arch", "[optimizer]"},
      {"[train]", "learning_rat", "train.learning_rat", "lr", "[train]"},
      {"[train]", "learning_rate", "train.learning_rate", "lr", "[train]"},
      {"[train]", "unrol", "train.unrol", "unroll", "[train]"},
      {"[train]", "epochs", "train.epochs", "max_epochs", "[train]"},
      {"[train]", "curiculum", "train.curiculum", "curriculum", "[train]"},
      {"[train]", "beta_1", "train.beta_1", "beta1", "[train]"},
      {"[train]", "eval_evry", "train.eval_evry", "eval_every", "[train]"},
      {"[train]", "patients", "train.patients", "patience", "[train]"},
      {"[train]", "gradmode", "train.gradmode", "grad_mode", "[train]"},
      {"[train]", "tasks", "train.tasks", "task", "[train]"},
      {"[[train.task]]", "sigmas", "train.task[0].sigmas", "sigma", "[train.task[0]]"},
      {"[[train.task]]", "lambda", "train.task[0].lambda", "lam", "[train.task[0]]"},
      {"[[train.task]]", "famliy", "train.task[0].famliy", "family", "[train.task[0]]"},
      {"[ml2o]", "inner_step", "ml2o.inner_step", "inner_steps", "[ml2o]"},
      {"[ml2o]", "inner_lrr", "ml2o.inner_lrr", "inner_lr", "[ml2o]"},
      {"[ml2o]", "metagradient", "ml2o.metagradient", "meta_gradient", "[ml2o]"},
      {"[adapt]", "k", "adapt.k", "K", "[adapt]"},
      {"[adapt]", "trajectroy", "adapt.trajectroy", "trajectory", "[adapt]"},
      {"[adapt]", "source", "adapt.source", "sources", "[adapt]"},
      {"[adapt.task]", "instance", "adapt.task.instance", "instances", "[adapt.task]"},
      {"[eval]", "step", "eval.step", "steps", "[eval]"},
      {"[eval]", "n_seeds", "eval.n_seeds", "seeds", "[eval]"},
      {"[eval.task]", "dims", "eval.task.dims", "dim", "[eval.task]"},
      {"[eval.task]", "x0scale", "eval.task.x0scale", "x0_scale", "[eval.task]"},
      {"[eval.task]", "batch_size", "eval.task.batch_size", "instances", "[eval.task]"},
      {"[baselines]", "optimizer", "baselines.optimizer", "optimizers", "[baselines]"},
      {"[baselines]", "lr", "baselines.lr", "lrs", "[baselines]"},
      {"[baselines]", "momentun", "baselines.momentun", "momentum", "[baselines]"},
      {"[arms]", "vanila", "arms.vanila", "vanilla", "[arms]"},
      {"[arms]", "ml2", "arms.ml2", "ml2o", "[arms]"},
      {"[arms]", "baseline", "arms.baseline", "baselines", "[arms]"},
  };
  for (const Typo& t : typos) {
    Doc d = base_doc();
    if (t.header == "[adapt.task]") d.set("[adapt.task]", "family", "\"lasso\"");
    d.set(t.header, t.key, "1");
    add("unknown_" + slug(t.path), d,
        "unknown key '" + t.path + "'; did you mean '" + t.suggestion + "'? allowed keys in " + t.section,
        t.header, t.key);
  }
  // Far from anything: no suggestion, the allowed list all the same.
  for (const auto& [header, section] : std::vector<std::pair<std::string, std::string>>{
           {"[run]", "run"}, {"[train]", "train"}, {"[eval.task]", "eval.task"}, {"[arms]", "arms"}}) {
    Doc d = base_doc().set(header, "zzzzzzzzzz", "1");
    add("unknown_far_" + slug(section), d,
        "unknown key '" + section + ".zzzzzzzzzz'; allowed keys in [" + section + "]:", header,
        "zzzzzzzzzz");
  }
  // Unknown tables at the top level.
  add_text("unknown_table_trian", base_doc().text() + "\n[trian]\nlr = 1\n",
           "unknown key 'trian'; did you mean 'train'? allowed top-level tables: run, optimizer");
  add_text("unknown_table_evaluation", base_doc().text() + "\n[evaluation]\nsteps = 1\n",
           "unknown key 'evaluation'");
  add_text("unknown_root_key", "seed = 1\n" + base_doc().text(),
           "unknown key 'seed'; allowed top-level tables:", 1);
  add_text("unknown_table_baseline", base_doc().text() + "\n[baseline]\nlrs = [0.1]\n",
           "did you mean 'baselines'?");
  add_text("unknown_table_arm", base_doc().text() + "\n[arm]\nvanilla = false\n",
           "did you mean 'arms'?");
  // Keys that do not apply to the family.
  struct Na {
    std::string family, key, value;
  };
  const std::vector<Na> na = {
      {"rosenbrock", "sigma", "1.0"},   {"rosenbrock", "lam", "0.1"},
      {"rosenbrock", "b_range", "[0, 1]"}, {"rosenbrock", "alpha", "1.0"},
      {"rastrigin", "sigma", "1.0"},    {"rastrigin", "lam", "0.1"},
      {"rastrigin", "b_range", "[0, 1]"}, {"quadratic", "lam", "0.1"},
      {"quadratic", "alpha", "1.0"},    {"lasso", "alpha", "1.0"},
  };
  for (const auto& [header, path] : std::vector<std::pair<std::string, std::string>>{
           {"[eval.task]", "eval.task"}, {"[[train.task]]", "train.task[0]"}, {"[adapt.task]", "adapt.task"}}) {
    for (const Na& n : na) {
      Doc d = base_doc();
      d.set(header, "family", "\"" + n.family + "\"").erase(header, "sigma");
      d.set(header, n.key, n.value);
      add("na_" + slug(path) + "_" + n.family + "_" + n.key, d,
          "key '" + path + "." + n.key + "': does not apply to family " + n.family, header, n.key);
    }
  }

  // -- contradictions ------------------------------------------------------------------------------
  for (const auto& [header, path] : std::vector<std::pair<std::string, std::string>>{
           {"[eval.task]", "eval.task"}, {"[[train.task]]", "train.task[0]"}, {"[adapt.task]", "adapt.task"}}) {
    for (const char* dim : {"1", "3", "10"}) {
      Doc d = base_doc();
      d.set(header, "family", "\"rosenbrock\"").erase(header, "sigma").set(header, "dim", dim);
      add("rosenbrock_dim_" + slug(path) + "_" + dim, d,
          "key '" + path + ".dim': rosenbrock is defined for dim = 2 only", header, "dim");
    }
    Doc big = base_doc();
    big.set(header, "family", "\"lasso\"").set(header, "instances", "10000000").set(header, "dim", "100");
    add("memory_" + slug(path), big, "GiB is more than this engine will allocate; allowed: instances * dim^2 * 4 bytes <= 16 GiB",
        header, "instances");
    Doc big2 = base_doc();
    big2.set(header, "family", "\"rastrigin\"").erase(header, "sigma").set(header, "dim", "70000");
    add("memory_dim_" + slug(path), big2, "more than this engine will allocate", header, "dim");
  }
  add("sigma_list_eval", base_doc().set("[eval.task]", "sigma", "[100.0, 200.0]"),
      "key 'eval.task.sigma': a list of sigmas is only allowed in [[train.task]]", "[eval.task]", "sigma");
  add("sigma_list_adapt",
      base_doc().set("[adapt.task]", "family", "\"lasso\"").set("[adapt.task]", "sigma", "[1.0]"),
      "key 'adapt.task.sigma': a list of sigmas is only allowed in [[train.task]]", "[adapt.task]", "sigma");
  add("sigma_list_empty", base_doc().set("[[train.task]]", "sigma", "[]"),
      "key 'train.task[0].sigma': the list is empty", "[[train.task]]", "sigma");
  add("sigma_list_negative", base_doc().set("[[train.task]]", "sigma", "[0.1, -0.5]"),
      "key 'train.task[0].sigma[1]': -0.5 is out of range", "[[train.task]]", "sigma");
  add("sigma_list_rosenbrock",
      base_doc().set("[[train.task]]", "family", "\"rosenbrock\""),
      "key 'train.task[0].sigma': does not apply to family rosenbrock", "[[train.task]]", "sigma");
  add("K_empty", base_doc().set("[adapt]", "K", "[]"), "key 'adapt.K': the list is empty", "[adapt]", "K");
  add("K_negative", base_doc().set("[adapt]", "K", "[5, -1]"), "key 'adapt.K[1]': -1 is out of range",
      "[adapt]", "K");
  add("K_duplicate", base_doc().set("[adapt]", "K", "[5, 5]"), "key 'adapt.K[1]': 5 is listed twice",
      "[adapt]", "K");
  for (const char* fam : {"quadratic", "rosenbrock", "rastrigin"}) {
    for (const char* opt : {"ista", "fista"}) {
      Doc d = base_doc();
      d.set("[eval.task]", "family", std::string("\"") + fam + "\"");
      if (std::string(fam) != "quadratic") d.erase("[eval.task]", "sigma");
      d.set("[baselines]", "optimizers", std::string("[\"adam\", \"") + opt + "\"]");
      add(std::string("lasso_only_") + opt + "_" + fam, d,
          std::string("key 'baselines.optimizers[1]': ") + opt +
              " solves LASSO only, but eval.task.family is " + fam,
          "[baselines]", "optimizers");
    }
  }
  add("second_order_with_second_derivatives",
      base_doc().set("[ml2o]", "meta_gradient", "\"second_order\"")
          .set("[train]", "grad_mode", "\"second_derivatives\""),
      "key 'ml2o.meta_gradient': \"second_order\" together with train.grad_mode = "
      "\"second_derivatives\" is not supported",
      "[ml2o]", "meta_gradient");
  add("second_order_with_second_derivatives_dmlstm",
      base_doc().set("[ml2o]", "meta_gradient", "\"second_order\"")
          .set("[train]", "grad_mode", "\"second_derivatives\"").set("[optimizer]", "arch", "\"dmlstm\""),
      "is not supported", "[ml2o]", "meta_gradient");
  add("curriculum_not_multiple", base_doc().set("[train]", "curriculum", "[100, 150]"),
      "key 'train.curriculum[1]': 150 is not a multiple of train.unroll = 20", "[train]", "curriculum");
  add("curriculum_not_multiple_unroll",
      base_doc().set("[train]", "unroll", "30").set("[train]", "curriculum", "[90, 100]"),
      "key 'train.curriculum[1]': 100 is not a multiple of train.unroll = 30", "[train]", "curriculum");
  add("curriculum_below_unroll", base_doc().set("[train]", "curriculum", "[10, 20]"),
      "key 'train.curriculum[0]': 10 is out of range; allowed: an integer >= 20", "[train]", "curriculum");
  add("curriculum_decreasing", base_doc().set("[train]", "curriculum", "[200, 100]"),
      "key 'train.curriculum[1]': 100 does not increase", "[train]", "curriculum");
  add("curriculum_repeated", base_doc().set("[train]", "curriculum", "[100, 100]"),
      "does not increase on the previous entry (100)", "[train]", "curriculum");
  add("curriculum_empty", base_doc().set("[train]", "curriculum", "[]"),
      "key 'train.curriculum': the list is empty", "[train]", "curriculum");
  add("curriculum_default_vs_unroll", base_doc().set("[train]", "unroll", "30"),
      "key 'train.curriculum': the default curriculum", "[train]", "unroll");
  add("trajectory_not_multiple", base_doc().set("[adapt]", "trajectory", "110"),
      "key 'adapt.trajectory': 110 is not a multiple of adapt.unroll = 20", "[adapt]", "trajectory");
  add("trajectory_below_unroll", base_doc().set("[adapt]", "trajectory", "10"),
      "key 'adapt.trajectory': 10 is shorter than adapt.unroll = 20", "[adapt]", "trajectory");
  add("trajectory_default_vs_unroll", base_doc().set("[adapt]", "unroll", "30"),
      "key 'adapt.trajectory': the default trajectory (100) is not a multiple of adapt.unroll = 30",
      "[adapt]", "unroll");
  add("trajectory_vs_unroll_both",
      base_doc().set("[adapt]", "unroll", "40").set("[adapt]", "trajectory", "100"),
      "100 is not a multiple of adapt.unroll = 40", "[adapt]", "trajectory");
  // Training arms without D_train.
  for (const char* arm : {"direct_transfer", "transfer_learning", "ml2o"}) {
    Doc d = base_doc().drop("[[train.task]]");
    for (const char* other : {"direct_transfer", "transfer_learning", "ml2o"})
      if (std::string(other) != arm) d.set("[arms]", other, "false");
    add(std::string("no_train_task_") + arm, d,
        std::string("key 'train.task': missing: the arms ") + arm + " train on D_train");
  }
  add("no_train_task_all", base_doc().drop("[[train.task]]"),
      "the arms direct_transfer, transfer_learning, ml2o train on D_train, which is empty");
  add("no_train_task_with_train_table", base_doc().drop("[[train.task]]").set("[train]", "lr", "0.01"),
      "key 'train.task': missing");
  {
    Doc d = base_doc();
    for (const char* a : {"vanilla", "direct_transfer", "transfer_learning", "ml2o", "baselines"})
      d.set("[arms]", a, "false");
    add("all_arms_off", d, "key 'arms': every arm is disabled");
  }
  add("sources_empty", base_doc().set("[adapt]", "sources", "[]"), "key 'adapt.sources': the list is empty",
      "[adapt]", "sources");
  add("sources_duplicate", base_doc().set("[adapt]", "sources", "[\"test\", \"adapt\", \"test\"]"),
      "key 'adapt.sources[2]': \"test\" is listed twice", "[adapt]", "sources");
  add("optimizers_empty", base_doc().set("[baselines]", "optimizers", "[]"),
      "key 'baselines.optimizers': the list is empty", "[baselines]", "optimizers");
  add("optimizers_duplicate", base_doc().set("[baselines]", "optimizers", "[\"sgd\", \"sgd\"]"),
      "key 'baselines.optimizers[1]': \"sgd\" is listed twice", "[baselines]", "optimizers");
  add("lrs_empty", base_doc().set("[baselines]", "lrs", "[]"), "key 'baselines.lrs': the list is empty",
      "[baselines]", "lrs");
  add("b_range_reversed", base_doc().set("[eval.task]", "b_range", "[1.0, 0.0]"),
      "key 'eval.task.b_range': lo = 1 is not below hi = 0", "[eval.task]", "b_range");
  add("b_range_equal", base_doc().set("[eval.task]", "b_range", "[0.5, 0.5]"), "is not below",
      "[eval.task]", "b_range");
  add("b_range_three", base_doc().set("[eval.task]", "b_range", "[0, 1, 2]"),
      "key 'eval.task.b_range': expected 2 numbers, found 3", "[eval.task]", "b_range");
  add("b_range_one", base_doc().set("[eval.task]", "b_range", "[0]"), "expected 2 numbers, found 1",
      "[eval.task]", "b_range");
  add("b_range_empty", base_doc().set("[eval.task]", "b_range", "[]"),
      "key 'eval.task.b_range': the list is empty", "[eval.task]", "b_range");
  add("list_too_long", base_doc().set("[baselines]", "lrs", [] {
        std::string s = "[";
        for (int i = 0; i < 1001; ++i) s += (i ? ", " : "") + std::string("0.1");
        return s + "]";
      }()),
      "the list has 1001 entries", "[baselines]", "lrs");

  // -- structure: missing or mistyped tables --------------------------------------------------------
  add("missing_eval_task", base_doc().drop("[eval.task]"),
      "key 'eval.task': missing: the test task D_test is required");
  add("missing_eval_task_with_eval", base_doc().drop("[eval.task]").set("[eval]", "steps", "10"),
      "key 'eval.task': missing", "", "");
  add("missing_family_eval", base_doc().erase("[eval.task]", "family"),
      "key 'eval.task.family': missing");
  add("missing_family_train", base_doc().erase("[[train.task]]", "family"),
      "key 'train.task[0].family': missing");
  add("missing_family_adapt", base_doc().set("[adapt.task]", "dim", "10"),
      "key 'adapt.task.family': missing");
  add_text("eval_task_array", "[[train.task]]\nfamily = \"lasso\"\n[[eval.task]]\nfamily = \"lasso\"\n",
           "key 'eval.task': expected a table, found an array");
  add_text("train_task_table", "[train.task]\nfamily = \"lasso\"\n[eval.task]\nfamily = \"lasso\"\n",
           "key 'train.task': expected an array of tables, found a table (write [[train.task]]");
  add_text("train_task_ints", "[train]\ntask = [1, 2]\n[eval.task]\nfamily = \"lasso\"\n",
           "key 'train.task[0]': expected a table, found an integer");
  add_text("train_task_string", "[train]\ntask = \"lasso\"\n[eval.task]\nfamily = \"lasso\"\n",
           "key 'train.task': expected an array of tables, found a string");
  add_text("eval_task_string", "[eval]\ntask = \"lasso\"\n", "key 'eval.task': expected a table, found a string");
  add_text("eval_scalar", "eval = 5\n", "key 'eval': expected a table, found an integer", 1);
  add_text("run_scalar", "run = \"x\"\n" + base_doc().text(), "key 'run': expected a table, found a string", 1);
  add_text("train_array", "train = [1]\n[eval.task]\nfamily = \"lasso\"\n", "key 'train': expected a table, found an array", 1);
  add_text("arms_bool", "arms = true\n" + base_doc().text(), "key 'arms': expected a table, found a boolean", 1);
  add_text("adapt_task_array", base_doc().text() + "\n[[adapt.task]]\nfamily = \"lasso\"\n",
           "key 'adapt.task': expected a table, found an array");
  add_text("empty_train_task_array", "[train]\ntask = []\n[eval.task]\nfamily = \"lasso\"\n",
           "key 'train.task': missing: the arms");

  // -- syntax errors ----------------------------------------------------------------------------------
  const std::vector<std::pair<std::string, int>> syntax = {
      {"[train]\nlr = = 1\n", 2},
      {"[train]\nlr = \"unterminated\n", 2},
      {"[train]\ncurriculum = [100, 200\n", 2},
      {"[train\nlr = 1\n", 1},
      {"[train]\nlr = 1\nlr = 2\n", 3},
      {"[train]\nlr = 1\n[train]\nunroll = 20\n", 3},
      {"[run]\nname = \"bad \\q escape\"\n", 2},
      {"[train]\n0.001\n", 2},
      {"[train]\nlr = 1e\n", 2},
      {"[run]\nseed = 99999999999999999999\n", 2},
      {"[train]\nlr = 1\nlr.x = 2\n", 3},
      {"[eval.task]\nfamily = \"lasso\"\n[eval]\ntask = 1\n", 4},
      {"[run]\nname = 'a'\n[run.name]\n", 3},
      {"= 1\n", 1},
      {"[]\n", 1},
      {"[[]]\n", 1},
      {"[train]\nlr = 0x\n", 2},
      {"[train]\nlr = 1..0\n", 2},
      {"[train]\nlr = .5\n", 2},
      {"[train]\nunroll = 020\n", 2},
      {"[train]\nlr = 1_\n", 2},
      {"[eval.task]\nfamily = \"lasso\" extra\n", 2},
      {"[train]\ncurriculum = [100,,200]\n", 2},
      {"[eval]\ntask = { family = \"lasso\", }\n", 2},
      {"[eval]\ntask = { family = \"lasso\"\n", 2},
      {"[run]\nname = \"\"\"never closed\n", 2},
      {"key with spaces = 1\n", 1},
      {"[train]\nlr = TRUE\n", 2},
      {"[train]\nlr = 1979-13-45\n", 2},
      {"\xef\xbb\xbf[train]\nlr = \xff\n", 2},
  };
  for (size_t i = 0; i < syntax.size(); ++i)
    add_text("syntax_" + std::to_string(i), syntax[i].first, "TOML syntax error: ", syntax[i].second);
  // Nested too deeply for toml++ (its limit is 256 levels).
  add_text("syntax_deep_arrays", "[train]\ncurriculum = " + std::string(300, '[') + std::string(300, ']') + "\n",
           "TOML syntax error: ", 2);
  add_text("syntax_deep_tables", "[eval]\ntask = " + [] {
    std::string s;
    for (int i = 0; i < 300; ++i) s += "{ a = ";
    s += "1";
    for (int i = 0; i < 300; ++i) s += " }";
    return s;
  }() + "\n",
           "TOML syntax error: ", 2);

  // -- empty and garbage input ----------------------------------------------------------------------
  add_text("empty", "", "key 'eval.task': missing", 1);
  add_text("whitespace", "\n\n   \n# only a comment\n", "key 'eval.task': missing", 1);
  add_text("nul_bytes", std::string("[train]\nlr = 1\0\0\0", 17), "TOML syntax error", 0);
  add_text("nul_only", std::string(64, '\0'), "TOML syntax error", 0);
  add_text("invalid_utf8", "[run]\nname = \"\xc3\x28\"\n", "TOML syntax error", 2);
  add_text("utf16_bom", std::string("\xff\xfe[\0r\0u\0n\0]\0", 12), "TOML syntax error", 1);
  add_text("json_instead", "{\"train\": {\"lr\": 0.001}}\n", "TOML syntax error", 1);
  add_text("yaml_instead", "train:\n  lr: 0.001\n", "TOML syntax error", 1);
  uint64_t state = 0x9e3779b97f4a7c15ull;
  for (int g = 0; g < 12; ++g) {
    std::string bytes;
    const int n = 16 + g * 37;
    for (int i = 0; i < n; ++i) {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      bytes += static_cast<char>(state & 0xff);
    }
    add_text("garbage_" + std::to_string(g), bytes, "", 0);
  }
}

// ---- checks ------------------------------------------------------------------------------------

// Runs f; the error must be exactly of type E (ConfigError for configs) and name the file.
template <class E, class F>
std::string expect_error(const std::string& label, F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << label << ": threw the wrong exception type: " << e.what();
    return {};
  } catch (...) {
    ADD_FAILURE() << label << ": threw a non-std exception";
    return {};
  }
  ADD_FAILURE() << label << ": was accepted";
  return {};
}

void check_config_message(const std::string& label, const std::string& msg, const std::string& source,
                          const std::string& expect, int line) {
  EXPECT_EQ(msg.rfind(source + ":", 0), 0u) << label << ": message does not start with the file: " << msg;
  // FILE:LINE:COL: with LINE, COL >= 1.
  const std::regex located("^.*:([1-9][0-9]*):([1-9][0-9]*): .+");
  EXPECT_TRUE(std::regex_match(msg.substr(source.size()), located))
      << label << ": no line:col: " << msg;
  if (!expect.empty()) {
    EXPECT_NE(msg.find(expect), std::string::npos) << label << ": expected '" << expect << "' in: " << msg;
  }
  if (line > 0) {
    EXPECT_EQ(msg.rfind(source + ":" + std::to_string(line) + ":", 0), 0u)
        << label << ": expected line " << line << " in: " << msg;
  }
  EXPECT_EQ(msg.find('\n'), std::string::npos) << label << ": message spans lines: " << msg;
}

TEST(Malformed, GeneratedConfigCases) {
  generate_config_cases();
  std::map<std::string, int> names;
  for (const ConfigCase& c : cases()) {
    ASSERT_EQ(names[c.name]++, 0) << "duplicate case name " << c.name;
    const std::string source = c.name + ".toml";
    const std::string msg = expect_error<ml2o::ConfigError>(
        c.name, [&] { (void)ml2o::parse_config(c.text, source); });
    if (msg.empty()) {
      ADD_FAILURE() << "case text:\n" << c.text;
      continue;
    }
    check_config_message(c.name, msg, source, c.expect, c.line);
    if (std::getenv("ML2O_PRINT_MESSAGES")) std::printf("%s\n", msg.c_str());
  }
  std::printf("[ malformed ] %zu generated config cases\n", cases().size());
  EXPECT_GE(cases().size(), 220u);
}

TEST(Malformed, UnreadableConfigPaths) {
  const std::string missing = "/nonexistent/dir/ml2o-no-such-config.toml";
  std::string msg = expect_error<ml2o::ConfigError>("missing", [&] { (void)ml2o::load_config(missing); });
  EXPECT_EQ(msg.rfind(missing + ": cannot read config file", 0), 0u) << msg;
  const std::string dir = fs::temp_directory_path().string();
  msg = expect_error<ml2o::ConfigError>("directory", [&] { (void)ml2o::load_config(dir); });
  EXPECT_NE(msg.find(dir), std::string::npos) << msg;
  EXPECT_NE(msg.find("is a directory"), std::string::npos) << msg;
  msg = expect_error<ml2o::ConfigError>("empty path", [&] { (void)ml2o::load_config(""); });
  EXPECT_NE(msg.find("cannot read config file"), std::string::npos) << msg;
  if (::geteuid() != 0) {  // root reads anything
    const std::string locked = (fs::temp_directory_path() / "ml2o_locked_config.toml").string();
    { std::ofstream(locked) << "[eval.task]\nfamily = \"lasso\"\n"; }
    fs::permissions(locked, fs::perms::none);
    msg = expect_error<ml2o::ConfigError>("unreadable", [&] { (void)ml2o::load_config(locked); });
    EXPECT_EQ(msg.rfind(locked + ": cannot read config file", 0), 0u) << msg;
    fs::permissions(locked, fs::perms::owner_all);
    fs::remove(locked);
  }
}

// ---- params files --------------------------------------------------------------------------------

struct ParamsCase {
  std::string name;
  std::string bytes;
  std::string expect;
};

std::string good_params(ml2o::Arch arch) {
  ml2o::OptimizerHyper h;
  h.arch = arch;
  return ml2o::params_to_bytes(ml2o::init_optimizer(h, 1234));
}

// Recomputes the trailing checksum so that a field change reaches the field's own check.
std::string reseal(std::string b) {
  const uint64_t sum = ml2o::fnv1a64(b.data(), b.size() - 8);
  std::memcpy(b.data() + b.size() - 8, &sum, 8);
  return b;
}

template <class T> std::string with_field(std::string b, size_t offset, T v) {
  std::memcpy(b.data() + offset, &v, sizeof(T));
  return reseal(b);
}

// Byte offsets of the header fields (the params file format, lopt.hpp).
constexpr size_t kOffVersion = 8, kOffArch = 12, kOffDmP = 16, kOffDmScale = 24, kOffCount = 32,
                 kOffTable = 36;

size_t header_size(ml2o::Arch arch) {
  size_t n = kOffTable;
  for (const auto& t : ml2o::tensor_table(arch)) n += 4 + t.name.size() + 4 + 4 * t.shape.size();
  return n + 8;  // weight count
}

std::vector<ParamsCase> params_cases() {
  std::vector<ParamsCase> v;
  for (ml2o::Arch arch : {ml2o::Arch::rnnprop, ml2o::Arch::dmlstm}) {
    const std::string a = ml2o::arch_name(arch);
    const std::string good = good_params(arch);
    const size_t hdr = header_size(arch);
    const size_t weights_end = good.size() - 8;
    v.push_back({a + "_empty", "", "truncated file"});
    v.push_back({a + "_wrong_magic", "XXXXXXXX" + good.substr(8), "wrong magic"});
    v.push_back({a + "_text_file", "[eval.task]\nfamily = \"lasso\"\n", "wrong magic"});
    v.push_back({a + "_magic_only", good.substr(0, 8), "truncated file"});
    v.push_back({a + "_version_2", with_field<uint32_t>(good, kOffVersion, 2), "params format version 2 is not supported"});
    v.push_back({a + "_version_0", with_field<uint32_t>(good, kOffVersion, 0), "version 0 is not supported"});
    v.push_back({a + "_version_max", with_field<uint32_t>(good, kOffVersion, 0xffffffffu), "is not supported"});
    v.push_back({a + "_arch_2", with_field<uint32_t>(good, kOffArch, 2), "unknown architecture id 2"});
    v.push_back({a + "_arch_huge", with_field<uint32_t>(good, kOffArch, 0x80000000u), "unknown architecture id"});
    v.push_back({a + "_other_arch",
                 with_field<uint32_t>(good, kOffArch, arch == ml2o::Arch::rnnprop ? 1u : 0u),
                 "tensors, but"});
    v.push_back({a + "_dm_p_zero", with_field<double>(good, kOffDmP, 0.0), "invalid DM-LSTM settings"});
    v.push_back({a + "_dm_p_negative", with_field<double>(good, kOffDmP, -5.0), "invalid DM-LSTM settings"});
    v.push_back({a + "_dm_p_nan", with_field<double>(good, kOffDmP, std::nan("")), "invalid DM-LSTM settings"});
    v.push_back({a + "_dm_scale_nan", with_field<double>(good, kOffDmScale, std::nan("")), "invalid DM-LSTM settings"});
    v.push_back({a + "_dm_scale_inf", with_field<double>(good, kOffDmScale, HUGE_VAL), "invalid DM-LSTM settings"});
    v.push_back({a + "_tensor_count_0", with_field<uint32_t>(good, kOffCount, 0), "0 tensors, but"});
    v.push_back({a + "_tensor_count_99", with_field<uint32_t>(good, kOffCount, 99), "99 tensors, but"});
    v.push_back({a + "_name_len_huge", with_field<uint32_t>(good, kOffTable, 0xfffffff0u), "tensor name too long"});
    v.push_back({a + "_name_len_65", with_field<uint32_t>(good, kOffTable, 65), "tensor name too long"});
    {
      std::string b = good;
      b[kOffTable + 4] = 'Z';  // first letter of the first tensor's name
      v.push_back({a + "_tensor_renamed", reseal(b), "expects '"});
    }
    {
      const ml2o::TensorInfo t0 = ml2o::tensor_table(arch)[0];
      const size_t rank_off = kOffTable + 4 + t0.name.size();
      v.push_back({a + "_tensor_rank", with_field<uint32_t>(good, rank_off, 7), "expects '" + t0.name + "'"});
      v.push_back({a + "_tensor_dim", with_field<uint32_t>(good, rank_off + 4, 3), "has the wrong shape"});
    }
    v.push_back({a + "_weight_count", with_field<uint64_t>(good, hdr - 8, 5), "5 weights, but"});
    v.push_back({a + "_weight_count_huge", with_field<uint64_t>(good, hdr - 8, ~uint64_t{0}), "weights, but"});
    v.push_back({a + "_weight_nan", with_field<float>(good, hdr + 4 * 10, std::nanf("")), "non-finite weight"});
    v.push_back({a + "_weight_inf", with_field<float>(good, weights_end - 4, HUGE_VALF), "non-finite weight"});
    v.push_back({a + "_trailing_resealed", reseal(good + std::string(12, '\x01') + std::string(8, '\0')),
                 "trailing bytes after the weights"});
    v.push_back({a + "_trailing_byte", good + "x", "checksum mismatch"});
    v.push_back({a + "_trailing_copy", good + good, "checksum mismatch"});
    v.push_back({a + "_checksum_zero", good.substr(0, weights_end) + std::string(8, '\0'),
                 "checksum mismatch"});
    // Truncated at every header offset and a sample of data offsets.
    for (size_t n = 1; n < good.size(); n += (n < hdr + 16 ? 1 : 97)) {
      std::string expect = n < 8 ? "truncated file: ran out of bytes reading magic"
                           : n < 20 ? "truncated file ("
                                    : "checksum mismatch";
      v.push_back({a + "_truncated_" + std::to_string(n), good.substr(0, n), expect});
    }
    v.push_back({a + "_truncated_last", good.substr(0, good.size() - 1), "checksum mismatch"});
    // Every single-byte flip in the header, a sample in the data and the checksum.
    auto flip_expect = [](size_t off) -> std::string {
      if (off < 8) return "wrong magic";
      if (off < 12) return "is not supported";
      return "checksum mismatch";
    };
    for (size_t off = 0; off < good.size(); off += (off < hdr ? 1 : 61)) {
      std::string b = good;
      b[off] = static_cast<char>(b[off] ^ 0x5a);
      v.push_back({a + "_flip_" + std::to_string(off), b, flip_expect(off)});
    }
    for (size_t off = weights_end; off < good.size(); ++off) {
      std::string b = good;
      b[off] = static_cast<char>(b[off] ^ 0x01);
      v.push_back({a + "_flip_sum_" + std::to_string(off), b, "checksum mismatch"});
    }
  }
  return v;
}

TEST(Malformed, ParamsFiles) {
  // The pristine files load: the cases below fail because of their one change.
  for (ml2o::Arch arch : {ml2o::Arch::rnnprop, ml2o::Arch::dmlstm})
    ASSERT_NO_THROW(ml2o::params_from_bytes(good_params(arch), "good.params"));
  const auto all = params_cases();
  std::map<std::string, int> names;
  for (const ParamsCase& c : all) {
    ASSERT_EQ(names[c.name]++, 0) << "duplicate case name " << c.name;
    const std::string source = c.name + ".params";
    const std::string msg = expect_error<ml2o::FormatError>(
        c.name, [&] { (void)ml2o::params_from_bytes(c.bytes, source); });
    if (msg.empty()) continue;
    EXPECT_EQ(msg.rfind(source + ": ", 0), 0u) << c.name << ": " << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.name << ": expected '" << c.expect << "' in: " << msg;
  }
  std::printf("[ malformed ] %zu generated params cases\n", all.size());
  EXPECT_GE(all.size(), 220u);
}

TEST(Malformed, ParamsFilesOnDisk) {
  const std::string missing = "/nonexistent/ml2o-no-such.params";
  std::string msg = expect_error<ml2o::FormatError>("missing", [&] { (void)ml2o::load_params(missing); });
  EXPECT_EQ(msg.rfind(missing + ": ", 0), 0u) << msg;
  const std::string path = (fs::temp_directory_path() / "ml2o_malformed_empty.params").string();
  ml2o::write_file_atomic(path, "");
  msg = expect_error<ml2o::FormatError>("empty", [&] { (void)ml2o::load_params(path); });
  EXPECT_EQ(msg.rfind(path + ": truncated file", 0), 0u) << msg;
  ml2o::write_file_atomic(path, good_params(ml2o::Arch::rnnprop).substr(0, 100));
  msg = expect_error<ml2o::FormatError>("truncated", [&] { (void)ml2o::load_params(path); });
  EXPECT_NE(msg.find("checksum mismatch"), std::string::npos) << msg;
  fs::remove(path);
}

// ---- the replayed corpus ---------------------------------------------------------------------------

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return s;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

TEST(Malformed, Corpus) {
  const fs::path dir = fs::path(ML2O_TEST_DATA) / "malformed";
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  std::vector<fs::path> inputs;
  for (const auto& e : fs::directory_iterator(dir)) {
    const auto ext = e.path().extension();
    if (ext == ".toml" || ext == ".params") inputs.push_back(e.path());
    if (ext == ".expect") {
      fs::path toml = e.path(), params = e.path();
      toml.replace_extension(".toml");
      params.replace_extension(".params");
      EXPECT_TRUE(fs::exists(toml) || fs::exists(params)) << "orphan " << e.path();
    }
  }
  std::sort(inputs.begin(), inputs.end());
  size_t n_toml = 0, n_params = 0;
  for (const fs::path& p : inputs) {
    fs::path expect_path = p;
    expect_path.replace_extension(".expect");
    ASSERT_TRUE(fs::exists(expect_path)) << p << " has no .expect file";
    const std::string expect = trim(slurp(expect_path));
    const std::string path = p.string();
    if (p.extension() == ".toml") {
      ++n_toml;
      const std::string msg =
          expect_error<ml2o::ConfigError>(path, [&] { (void)ml2o::load_config(path); });
      if (msg.empty()) continue;
      check_config_message(p.filename().string(), msg, path, expect, 0);
    } else {
      ++n_params;
      const std::string msg =
          expect_error<ml2o::FormatError>(path, [&] { (void)ml2o::load_params(path); });
      if (msg.empty()) continue;
      EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
      EXPECT_NE(msg.find(expect), std::string::npos) << p << ": expected '" << expect << "' in: " << msg;
    }
  }
  std::printf("[ malformed ] corpus: %zu configs, %zu params files\n", n_toml, n_params);
  EXPECT_GE(n_toml, 30u);
}

}  // namespace
