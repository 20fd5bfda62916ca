// Experiment configuration: TOML -> Config, with every key validated against one schema.
//
// Every error is a ConfigError "FILE:LINE:COL: key 'a.b': problem; allowed: what". Line and column
// come from toml++'s source regions: the offending value, key or table header; for a missing key,
// the table that should hold it. configs/README.md lists every key, its default and allowed values.
#include "ml2o/config.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>

#include <toml++/toml.h>

#include "ml2o/lopt.hpp"
#include "ml2o/seeds.hpp"

namespace ml2o {

namespace {

// Default seeds of task tables come from ml2o/seeds.hpp (every seed of a run is derived there).
constexpr int64_t kMaxInstances = 10'000'000;
constexpr double kMemoryLimitBytes = 16.0 * 1024 * 1024 * 1024;  // instances * dim^2 * 4 bytes
constexpr int64_t kIntMax = std::numeric_limits<int>::max();
constexpr size_t kMaxListLength = 1000;
constexpr size_t kMaxTrainTasks = 1000;
constexpr size_t kMaxFileBytes = 16u << 20;


struct Where {
  uint32_t line = 0, col = 0;
  bool ok() const { return line > 0 && col > 0; }
};

Where where_of(const toml::source_region& r) {
  return Where{static_cast<uint32_t>(r.begin.line), static_cast<uint32_t>(r.begin.column)};
}

std::string fmt_double(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  std::string s(buf, res.ptr);
  return s;
}

std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += sep;
    s += v[i];
  }
  return s;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// Other names people reach for; an unknown key close to one of these suggests the real key.
const std::map<std::string, std::vector<std::string>>& key_aliases() {
  static const std::map<std::string, std::vector<std::string>> m = {
      {"lr", {"learning_rate", "learningrate", "step_size", "stepsize", "meta_lr", "alpha_lr"}},
      {"inner_lr", {"inner_learning_rate", "alpha", "inner_alpha"}},
      {"unroll", {"unroll_length", "unroll_len", "truncation", "t"}},
      {"max_epochs", {"epochs", "num_epochs", "n_epochs", "epoch"}},
      {"seeds", {"n_seeds", "num_seeds", "repeats"}},
      {"steps", {"n_steps", "num_steps", "iterations", "iters", "optimizee_steps"}},
      {"instances", {"batch", "batch_size", "n_instances", "num_instances", "n"}},
      {"dim", {"d", "dimension", "n_dim", "ndim", "size"}},
      {"lam", {"lambda", "l1", "lmbda", "l1_weight"}},
      {"x0_scale", {"x0_std", "x0", "init_scale", "x0_sigma"}},
      {"eval_every", {"eval_interval", "evaluate_every"}},
      {"beta1", {"b1", "beta_1"}},
      {"beta2", {"b2", "beta_2"}},
      {"arch", {"architecture", "type", "model"}},
      {"optimizers", {"methods", "names", "optimizer"}},
      {"inner_steps", {"n_inner", "inner_iterations"}},
      {"trajectory", {"trajectory_length", "traj_len", "horizon"}},
      {"family", {"problem", "kind", "type_of_problem"}},
      {"grad_mode", {"gradient_mode", "second_derivatives"}},
      {"meta_gradient", {"order", "first_order", "second_order"}},
  };
  return m;
}

// The nearest allowed key, or "" when nothing is close enough to be a plausible typo.
std::string nearest(const std::string& key, const std::vector<std::string>& allowed) {
  const std::string k = lower(key);
  std::string best;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const std::string& a : allowed) {
    size_t d = edit_distance(k, lower(a));
    auto it = key_aliases().find(a);
    if (it != key_aliases().end())
      for (const std::string& alias : it->second) d = std::min(d, edit_distance(k, alias));
    if (d < best_d) {
      best_d = d;
      best = a;
    }
  }
  const size_t limit = std::max<size_t>(2, k.size() / 3);
  return best_d <= limit ? best : std::string();
}

const char* type_desc(toml::node_type t) {
  switch (t) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    default: return "nothing";
  }
}

struct FloatRange {
  double lo;
  bool lo_incl;
  double hi;  // +inf: no upper bound
  bool hi_incl;
  bool contains(double v) const {
    const bool above = lo_incl ? v >= lo : v > lo;
    const bool below = std::isinf(hi) ? true : (hi_incl ? v <= hi : v < hi);
    return above && below;
  }
  std::string describe(const char* what = "a float") const {
    std::string s = what;
    if (std::isinf(lo) && std::isinf(hi)) return std::string("a finite ") + (what + 2);  // "a float"
    if (std::isinf(hi)) return s + (lo_incl ? " >= " : " > ") + fmt_double(lo);
    return s + " in " + (lo_incl ? "[" : "(") + fmt_double(lo) + ", " + fmt_double(hi) +
           (hi_incl ? "]" : ")");
  }
};
constexpr double kInf = std::numeric_limits<double>::infinity();
const FloatRange kPositive{0, false, kInf, false};
const FloatRange kNonNegative{0, true, kInf, false};
const FloatRange kUnit{0, true, 1, false};  // [0, 1)

std::string int_desc(int64_t lo, int64_t hi, const char* what = "an integer") {
  std::string s = what;
  if (hi >= kIntMax) return s + " >= " + std::to_string(lo);
  return s + " in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
}

// A table being read, with its dotted path ("" for the document root) and location.
struct Tab {
  const toml::table* t = nullptr;
  std::string path;
  Where at;
  std::string key(const std::string& k) const { return path.empty() ? k : path + "." + k; }
  const toml::node* get(const char* k) const { return t ? t->get(k) : nullptr; }
};

class Parser {
 public:
  explicit Parser(std::string source) : src_(std::move(source)) {}

  [[noreturn]] void fail(Where w, const std::string& msg) const {
    if (!w.ok()) w = Where{1, 1};
    throw ConfigError(src_ + ":" + std::to_string(w.line) + ":" + std::to_string(w.col) + ": " +
                      msg);
  }
  [[noreturn]] void fail_key(Where w, const std::string& key, const std::string& problem,
                             const std::string& allowed) const {
    fail(w, "key '" + key + "': " + problem + "; allowed: " + allowed);
  }

  Where at(const toml::node& n, Where fallback) const {
    Where w = where_of(n.source());
    return w.ok() ? w : fallback;
  }
  // Where a key was seen (for cross-checks), else the fallback (its table, for defaults).
  Where seen(const std::string& path, Where fallback) const {
    auto it = seen_.find(path);
    return it != seen_.end() && it->second.ok() ? it->second : fallback;
  }
  void note(const std::string& path, Where w) { seen_[path] = w; }

  // Rejects keys outside `allowed`, the first one in the file first.
  void check_keys(const Tab& tab, const std::vector<std::string>& allowed) const {
    if (!tab.t) return;
    const toml::key* first = nullptr;
    Where first_at{};
    for (auto&& [k, v] : *tab.t) {
      if (std::find(allowed.begin(), allowed.end(), std::string(k.str())) != allowed.end()) continue;
      Where w = where_of(k.source());
      if (!w.ok()) w = at(v, tab.at);
      if (!first || w.line < first_at.line || (w.line == first_at.line && w.col < first_at.col)) {
        first = &k;
        first_at = w;
      }
    }
    if (!first) return;
    const std::string name(first->str());
    const std::string near = nearest(name, allowed);
    std::string msg = "unknown key '" + tab.key(printable(name)) + "'";
    msg += near.empty() ? std::string(";") : "; did you mean '" + near + "'?";
    msg += tab.path.empty() ? std::string(" allowed top-level tables: ")
                            : " allowed keys in [" + tab.path + "]: ";
    msg += join(allowed);
    fail(first_at, msg);
  }

  [[noreturn]] void wrong_type(const toml::node& n, const std::string& key, const char* expected,
                               const std::string& allowed, Where fallback) const {
    fail_key(at(n, fallback), key, std::string("expected ") + expected + ", found " +
                                       type_desc(n.type()),
             allowed);
  }

  // A sub-table (or nullptr when absent).
  Tab sub(const Tab& parent, const char* k) {
    Tab out;
    out.path = parent.key(k);
    out.at = parent.at;
    const toml::node* n = parent.get(k);
    if (!n) return out;
    if (!n->is_table()) {
      std::string hint = "a table [" + out.path + "]";
      if (n->is_array() && n->as_array()->is_array_of_tables())
        hint += " (written [" + out.path + "], not [[" + out.path + "]])";
      wrong_type(*n, out.path, "a table", hint, parent.at);
    }
    out.t = n->as_table();
    out.at = at(*n, parent.at);
    note(out.path, out.at);
    return out;
  }

  std::optional<int64_t> get_int(const Tab& tab, const char* k, int64_t lo, int64_t hi) {
    const toml::node* n = tab.get(k);
    if (!n) return std::nullopt;
    const std::string key = tab.key(k);
    const Where w = at(*n, tab.at);
    note(key, w);
    return int_value(*n, key, lo, hi, w);
  }
  int64_t int_value(const toml::node& n, const std::string& key, int64_t lo, int64_t hi, Where w) {
    if (!n.is_integer()) wrong_type(n, key, "an integer", int_desc(lo, hi), w);
    const int64_t v = n.as_integer()->get();
    if (v < lo || v > hi)
      fail_key(w, key, std::to_string(v) + " is out of range", int_desc(lo, hi));
    return v;
  }

  std::optional<double> get_float(const Tab& tab, const char* k, const FloatRange& range) {
    const toml::node* n = tab.get(k);
    if (!n) return std::nullopt;
    const std::string key = tab.key(k);
    const Where w = at(*n, tab.at);
    note(key, w);
    return float_value(*n, key, range, w);
  }
  double float_value(const toml::node& n, const std::string& key, const FloatRange& range,
                     Where w) {
    double v;
    if (n.is_floating_point()) v = n.as_floating_point()->get();
    else if (n.is_integer()) v = static_cast<double>(n.as_integer()->get());
    else wrong_type(n, key, "a float", range.describe(), w);
    if (!std::isfinite(v))
      fail_key(w, key, fmt_double(v) + " is not a finite number", range.describe());
    if (!range.contains(v)) fail_key(w, key, fmt_double(v) + " is out of range", range.describe());
    return v;
  }

  std::optional<bool> get_bool(const Tab& tab, const char* k) {
    const toml::node* n = tab.get(k);
    if (!n) return std::nullopt;
    const std::string key = tab.key(k);
    const Where w = at(*n, tab.at);
    note(key, w);
    if (!n->is_boolean()) wrong_type(*n, key, "a boolean", "true, false", w);
    return n->as_boolean()->get();
  }

  std::optional<std::string> get_string(const Tab& tab, const char* k, const std::string& allowed) {
    const toml::node* n = tab.get(k);
    if (!n) return std::nullopt;
    const std::string key = tab.key(k);
    const Where w = at(*n, tab.at);
    note(key, w);
    if (!n->is_string()) wrong_type(*n, key, "a string", allowed, w);
    return n->as_string()->get();
  }

  // One of `names`; returns its index.
  int enum_value(const toml::node& n, const std::string& key, const std::vector<std::string>& names,
                 Where w) {
    const std::string allowed = quoted(names);
    if (!n.is_string()) wrong_type(n, key, "a string", allowed, w);
    const std::string& s = n.as_string()->get();
    for (size_t i = 0; i < names.size(); ++i)
      if (s == names[i]) return static_cast<int>(i);
    std::string problem = "'" + printable(s) + "' is not a valid value";
    const std::string near = nearest(s, names);
    if (!near.empty()) problem += " (did you mean '" + near + "'?)";
    fail_key(w, key, problem, allowed);
  }
  std::optional<int> get_enum(const Tab& tab, const char* k, const std::vector<std::string>& names) {
    const toml::node* n = tab.get(k);
    if (!n) return std::nullopt;
    const std::string key = tab.key(k);
    const Where w = at(*n, tab.at);
    note(key, w);
    return enum_value(*n, key, names, w);
  }

  // An array value (type-checked, length-checked); elements are checked by the caller.
  const toml::array* get_array(const Tab& tab, const char* k, const std::string& allowed,
                               bool non_empty) {
    const toml::node* n = tab.get(k);
    if (!n) return nullptr;
    const std::string key = tab.key(k);
    const Where w = at(*n, tab.at);
    note(key, w);
    if (!n->is_array()) wrong_type(*n, key, "an array", allowed, w);
    const toml::array* a = n->as_array();
    if (non_empty && a->empty()) fail_key(w, key, "the list is empty", allowed);
    if (a->size() > kMaxListLength)
      fail_key(w, key, "the list has " + std::to_string(a->size()) + " entries",
               allowed + " (at most " + std::to_string(kMaxListLength) + " entries)");
    return a;
  }
  Where elem_at(const toml::array& a, size_t i, const Tab& tab, const char* k) const {
    const Where fallback = seen(tab.key(k), tab.at);
    return at(*a.get(i), fallback);
  }

  static std::string quoted(const std::vector<std::string>& names) {
    std::vector<std::string> q;
    for (const auto& n : names) q.push_back("\"" + n + "\"");
    return join(q);
  }
  // Keeps messages one readable line whatever bytes the file held.
  static std::string printable(const std::string& s) {
    std::string out;
    for (unsigned char c : s) {
      if (out.size() >= 60) { out += "..."; break; }
      if (c < 0x20 || c == 0x7f) {
        char buf[8];
        std::snprintf(buf, sizeof(buf), "\\x%02x", c);
        out += buf;
      } else {
        out += static_cast<char>(c);
      }
    }
    return out;
  }

  const std::string& source() const { return src_; }

 private:
  std::string src_;
  std::map<std::string, Where> seen_;
};

// ---- schema --------------------------------------------------------------------------------------

const std::vector<std::string> kTopKeys = {"run", "optimizer", "train", "ml2o",
                                           "adapt", "eval", "baselines", "arms"};
const std::vector<std::string> kRunKeys = {"name", "seed", "backend"};
const std::vector<std::string> kOptimizerKeys = {"arch", "dm_p", "dm_scale"};
const std::vector<std::string> kTrainKeys = {"unroll",     "lr",           "beta1",      "beta2",
                                             "eps",        "max_epochs",   "curriculum", "eval_every",
                                             "eval_batches", "patience",   "grad_mode",  "max_skipped",
                                             "task"};
const std::vector<std::string> kMl2oKeys = {"inner_steps", "inner_lr", "meta_gradient"};
const std::vector<std::string> kAdaptKeys = {"K", "lr", "unroll", "trajectory", "sources", "task"};
const std::vector<std::string> kEvalKeys = {"steps", "seeds", "task"};
const std::vector<std::string> kBaselinesKeys = {"optimizers", "lrs", "momentum"};
const std::vector<std::string> kArmsKeys = {"vanilla", "direct_transfer", "transfer_learning",
                                            "ml2o", "baselines"};
const std::vector<std::string> kTaskKeys = {"family", "dim",     "instances", "sigma", "lam",
                                            "b_range", "x0_scale", "alpha",   "seed"};

const std::vector<std::string> kFamilies = {"lasso", "quadratic", "rosenbrock", "rastrigin"};
const std::vector<std::string> kArches = {"rnnprop", "dmlstm"};
const std::vector<std::string> kBackends = {"cpu", "cuda", "auto"};
const std::vector<std::string> kGradModes = {"gradient_constant", "second_derivatives"};
const std::vector<std::string> kMetaGradients = {"first_order", "second_order"};
const std::vector<std::string> kSources = {"test", "adapt"};
const std::vector<std::string> kBaselines = {"sgd", "momentum", "adam", "rmsprop", "ista", "fista"};

std::vector<std::string> task_keys_for(Family f) {
  switch (f) {
    case Family::lasso:
      return {"family", "dim", "instances", "sigma", "lam", "b_range", "x0_scale", "seed"};
    case Family::quadratic:
      return {"family", "dim", "instances", "sigma", "b_range", "x0_scale", "seed"};
    case Family::rosenbrock: return {"family", "dim", "instances", "x0_scale", "seed"};
    case Family::rastrigin: return {"family", "dim", "instances", "x0_scale", "alpha", "seed"};
  }
  return {};
}

// Family defaults; fields that do not apply to the family are zero.
TaskSpec task_defaults(Family f) {
  TaskSpec s;
  s.family = f;
  s.dim = f == Family::rosenbrock ? 2 : 10;
  s.instances = 128;
  s.sigma = 0;
  s.lam = 0;
  s.b_lo = s.b_hi = 0;
  s.alpha = 0;
  switch (f) {
    case Family::lasso:
      s.sigma = 1.0;
      s.lam = 0.005;
      s.b_lo = 0.0;
      s.b_hi = 1.0;
      s.x0_scale = 0.01;
      break;
    case Family::quadratic:
      s.sigma = 1.0;
      s.b_lo = -1.0;
      s.b_hi = 1.0;
      s.x0_scale = 0.01;
      break;
    case Family::rosenbrock: s.x0_scale = 1.0; break;
    case Family::rastrigin:
      s.x0_scale = 3.0;
      s.alpha = 10.0;
      break;
  }
  return s;
}

struct ParsedTask {
  std::vector<TaskSpec> specs;  // one per sigma
  bool seed_given = false;
};

ParsedTask parse_task(Parser& p, const Tab& tab, bool allow_sigma_list) {
  p.check_keys(tab, kTaskKeys);
  const toml::node* fam_node = tab.get("family");
  if (!fam_node)
    p.fail_key(tab.at, tab.key("family"), "missing (every task table names its family)",
               Parser::quoted(kFamilies));
  const Family family =
      static_cast<Family>(p.enum_value(*fam_node, tab.key("family"), kFamilies, p.at(*fam_node, tab.at)));
  p.note(tab.key("family"), p.at(*fam_node, tab.at));

  const std::vector<std::string> applicable = task_keys_for(family);
  {
    // Keys of other families, the first one in the file first.
    const toml::key* bad = nullptr;
    Where bad_at{};
    for (auto&& [k, v] : *tab.t) {
      if (std::find(applicable.begin(), applicable.end(), std::string(k.str())) != applicable.end())
        continue;
      Where w = where_of(k.source());
      if (!w.ok()) w = p.at(v, tab.at);
      if (!bad || w.line < bad_at.line || (w.line == bad_at.line && w.col < bad_at.col)) {
        bad = &k;
        bad_at = w;
      }
    }
    if (bad)
      p.fail_key(bad_at, tab.key(std::string(bad->str())),
                 std::string("does not apply to family ") + family_name(family),
                 std::string("keys for ") + family_name(family) + ": " + join(applicable));
  }

  TaskSpec s = task_defaults(family);
  if (auto v = p.get_int(tab, "dim", 1, kIntMax)) {
    if (family == Family::rosenbrock && *v != 2)
      p.fail_key(p.seen(tab.key("dim"), tab.at), tab.key("dim"),
                 "rosenbrock is defined for dim = 2 only, got " + std::to_string(*v), "2");
    s.dim = static_cast<int>(*v);
  }
  if (auto v = p.get_int(tab, "instances", 1, kMaxInstances)) s.instances = *v;
  std::vector<double> sigmas;
  if (const toml::node* n = tab.get("sigma")) {
    const std::string key = tab.key("sigma");
    const Where w = p.at(*n, tab.at);
    p.note(key, w);
    if (n->is_array()) {
      const std::string allowed =
          allow_sigma_list ? "a float > 0 or a non-empty list of floats > 0" : "a float > 0";
      if (!allow_sigma_list)
        p.fail_key(w, key,
                   "a list of sigmas is only allowed in [[train.task]] (it expands into one "
                   "training task per sigma)",
                   allowed);
      const toml::array* a = n->as_array();
      if (a->empty()) p.fail_key(w, key, "the list is empty", allowed);
      if (a->size() > kMaxListLength)
        p.fail_key(w, key, "the list has " + std::to_string(a->size()) + " entries",
                   allowed + " (at most " + std::to_string(kMaxListLength) + " entries)");
      for (size_t i = 0; i < a->size(); ++i)
        sigmas.push_back(p.float_value(*a->get(i), key + "[" + std::to_string(i) + "]", kPositive,
                                       p.at(*a->get(i), w)));
    } else if (n->is_integer() || n->is_floating_point()) {
      sigmas.push_back(p.float_value(*n, key, kPositive, w));
    } else {
      p.wrong_type(*n, key, allow_sigma_list ? "a float or a list of floats" : "a float",
                   allow_sigma_list ? "a float > 0 or a non-empty list of floats > 0" : "a float > 0",
                   w);
    }
  }
  if (auto v = p.get_float(tab, "lam", kNonNegative)) s.lam = *v;
  if (const toml::array* a = p.get_array(tab, "b_range", "[lo, hi] with lo < hi", true)) {
    const std::string key = tab.key("b_range");
    const Where w = p.seen(key, tab.at);
    if (a->size() != 2)
      p.fail_key(w, key, "expected 2 numbers, found " + std::to_string(a->size()),
                 "[lo, hi] with lo < hi");
    const FloatRange any{-kInf, false, kInf, false};
    const double lo = p.float_value(*a->get(0), key + "[0]", any, p.at(*a->get(0), w));
    const double hi = p.float_value(*a->get(1), key + "[1]", any, p.at(*a->get(1), w));
    if (!(lo < hi))
      p.fail_key(w, key, "lo = " + fmt_double(lo) + " is not below hi = " + fmt_double(hi),
                 "[lo, hi] with lo < hi");
    s.b_lo = lo;
    s.b_hi = hi;
  }
  if (auto v = p.get_float(tab, "x0_scale", kPositive)) s.x0_scale = *v;
  if (auto v = p.get_float(tab, "alpha", kNonNegative)) s.alpha = *v;
  ParsedTask out;
  if (auto v = p.get_int(tab, "seed", 0, std::numeric_limits<int64_t>::max())) {
    s.seed = static_cast<uint64_t>(*v);
    out.seed_given = true;
  }

  const double bytes = static_cast<double>(s.instances) * s.dim * s.dim * 4.0;
  if (bytes > kMemoryLimitBytes) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.1f GiB", bytes / (1024.0 * 1024 * 1024));
    p.fail_key(p.seen(tab.key("instances"), p.seen(tab.key("dim"), tab.at)), tab.path,
               "instances * dim * dim * 4 bytes = " + std::to_string(s.instances) + " * " +
                   std::to_string(s.dim) + "^2 * 4 = " + buf + " is more than this engine will allocate",
               "instances * dim^2 * 4 bytes <= 16 GiB");
  }

  if (sigmas.empty()) {
    out.specs.push_back(s);
  } else {
    for (size_t i = 0; i < sigmas.size(); ++i) {
      TaskSpec e = s;
      e.sigma = sigmas[i];
      if (out.seed_given) e.seed = sigma_list_seed(s.seed, i);
      out.specs.push_back(e);
    }
  }
  return out;
}

nlohmann::json task_json(const TaskSpec& s) {
  nlohmann::json j;
  j["family"] = family_name(s.family);
  j["dim"] = s.dim;
  j["instances"] = s.instances;
  if (s.family == Family::lasso || s.family == Family::quadratic) {
    j["sigma"] = s.sigma;
    j["b_range"] = {s.b_lo, s.b_hi};
  }
  if (s.family == Family::lasso) j["lam"] = s.lam;
  if (s.family == Family::rastrigin) j["alpha"] = s.alpha;
  j["x0_scale"] = s.x0_scale;
  j["seed"] = s.seed;
  return j;
}

Config parse_document(const toml::table& doc, const std::string& source) {
  Parser p(source);
  Config cfg;
  cfg.path = source;
  const Tab root{&doc, "", Where{1, 1}};
  p.check_keys(root, kTopKeys);

  // [run]
  const Tab run = p.sub(root, "run");
  p.check_keys(run, kRunKeys);
  if (auto v = p.get_string(run, "name", "a non-empty name of letters, digits, '.', '_', '-'")) {
    const std::string& s = *v;
    const bool ok = !s.empty() && s.size() <= 100 && s != "." && s != ".." &&
                    std::all_of(s.begin(), s.end(), [](char c) {
                      return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' ||
                             c == '-';
                    });
    if (!ok)
      p.fail_key(p.seen("run.name", run.at), "run.name",
                 "'" + Parser::printable(s) + "' is not a usable run name",
                 "1 to 100 letters, digits, '.', '_', '-' (not \".\" or \"..\")");
    cfg.run.name = s;
  }
  if (auto v = p.get_int(run, "seed", 0, std::numeric_limits<int64_t>::max()))
    cfg.run.seed = static_cast<uint64_t>(*v);
  if (auto v = p.get_enum(run, "backend", kBackends)) cfg.run.backend = kBackends[*v];

  // [optimizer]
  const Tab opt = p.sub(root, "optimizer");
  p.check_keys(opt, kOptimizerKeys);
  if (auto v = p.get_enum(opt, "arch", kArches)) cfg.optimizer.arch = static_cast<Arch>(*v);
  if (auto v = p.get_float(opt, "dm_p", kPositive)) cfg.optimizer.dm_p = *v;
  if (auto v = p.get_float(opt, "dm_scale", kPositive)) cfg.optimizer.dm_scale = *v;

  // [train]
  const Tab train = p.sub(root, "train");
  p.check_keys(train, kTrainKeys);
  TrainConfig& tr = cfg.train;
  if (auto v = p.get_int(train, "unroll", 1, 1000)) tr.unroll = static_cast<int>(*v);
  if (auto v = p.get_float(train, "lr", kPositive)) tr.lr = *v;
  if (auto v = p.get_float(train, "beta1", kUnit)) tr.beta1 = *v;
  if (auto v = p.get_float(train, "beta2", kUnit)) tr.beta2 = *v;
  if (auto v = p.get_float(train, "eps", kPositive)) tr.eps = *v;
  if (auto v = p.get_int(train, "max_epochs", 0, kIntMax)) tr.max_epochs = static_cast<int>(*v);
  {
    const std::string allowed = "a non-empty, strictly increasing list of integers >= train.unroll (" +
                                std::to_string(tr.unroll) + ") that are multiples of it";
    if (const toml::array* a = p.get_array(train, "curriculum", allowed, true)) {
      tr.curriculum.clear();
      for (size_t i = 0; i < a->size(); ++i) {
        const std::string key = "train.curriculum[" + std::to_string(i) + "]";
        const Where w = p.elem_at(*a, i, train, "curriculum");
        const int64_t v = p.int_value(*a->get(i), key, tr.unroll, kIntMax, w);
        if (v % tr.unroll != 0)
          p.fail_key(w, key,
                     std::to_string(v) + " is not a multiple of train.unroll = " +
                         std::to_string(tr.unroll),
                     allowed);
        if (!tr.curriculum.empty() && v <= tr.curriculum.back())
          p.fail_key(w, key,
                     std::to_string(v) + " does not increase on the previous stage (" +
                         std::to_string(tr.curriculum.back()) + ")",
                     allowed);
        tr.curriculum.push_back(static_cast<int>(v));
      }
    } else {
      for (int v : tr.curriculum)
        if (v % tr.unroll != 0 || v < tr.unroll)
          p.fail_key(p.seen("train.unroll", train.at), "train.curriculum",
                     "the default curriculum (100, 200, 500, ..., 3000) has stage " +
                         std::to_string(v) + ", not a multiple of train.unroll = " +
                         std::to_string(tr.unroll),
                     "set train.curriculum to multiples of train.unroll, or an unroll dividing 100");
    }
  }
  if (auto v = p.get_int(train, "eval_every", 1, kIntMax)) tr.eval_every = static_cast<int>(*v);
  if (auto v = p.get_int(train, "eval_batches", 1, kIntMax)) tr.eval_batches = static_cast<int>(*v);
  if (auto v = p.get_int(train, "patience", 1, kIntMax)) tr.patience = static_cast<int>(*v);
  if (auto v = p.get_enum(train, "grad_mode", kGradModes))
    tr.grad_mode = *v == 0 ? GradMode::gradient_constant : GradMode::second_derivatives;
  if (auto v = p.get_int(train, "max_skipped", 1, kIntMax)) tr.max_skipped = static_cast<int>(*v);
  if (const toml::node* n = train.get("task")) {
    const Where w = p.at(*n, train.at);
    p.note("train.task", w);
    const std::string allowed = "one or more [[train.task]] tables";
    if (!n->is_array()) {
      std::string problem = std::string("expected an array of tables, found ") + type_desc(n->type());
      if (n->is_table()) problem += " (write [[train.task]], not [train.task])";
      p.fail_key(w, "train.task", problem, allowed);
    }
    const toml::array* a = n->as_array();
    for (size_t i = 0; i < a->size(); ++i) {
      const toml::node& e = *a->get(i);
      const std::string path = "train.task[" + std::to_string(i) + "]";
      if (!e.is_table()) p.wrong_type(e, path, "a table", allowed, w);
      const Tab tt{e.as_table(), path, p.at(e, w)};
      ParsedTask pt = parse_task(p, tt, /*allow_sigma_list=*/true);
      for (TaskSpec& s : pt.specs) {
        if (!pt.seed_given)
          s.seed = default_train_task_seed(cfg.run.seed, tr.tasks.size());
        tr.tasks.push_back(s);
        if (tr.tasks.size() > kMaxTrainTasks)
          p.fail_key(tt.at, path, "more than " + std::to_string(kMaxTrainTasks) +
                                      " training tasks after expanding sigma lists",
                     "at most " + std::to_string(kMaxTrainTasks) + " tasks");
      }
    }
  }

  // [ml2o]
  const Tab ml = p.sub(root, "ml2o");
  p.check_keys(ml, kMl2oKeys);
  if (auto v = p.get_int(ml, "inner_steps", 1, kIntMax)) cfg.ml2o.inner_steps = static_cast<int>(*v);
  if (auto v = p.get_float(ml, "inner_lr", kNonNegative)) cfg.ml2o.inner_lr = *v;
  if (auto v = p.get_enum(ml, "meta_gradient", kMetaGradients))
    cfg.ml2o.meta_gradient = *v == 0 ? MetaGradient::first_order : MetaGradient::second_order;

  // [eval] first: D_adapt defaults to D_test.
  const Tab ev = p.sub(root, "eval");
  p.check_keys(ev, kEvalKeys);
  if (auto v = p.get_int(ev, "steps", 1, kIntMax)) cfg.eval.steps = static_cast<int>(*v);
  if (auto v = p.get_int(ev, "seeds", 1, 1000)) cfg.eval.seeds = static_cast<int>(*v);

  // [adapt]
  const Tab ad = p.sub(root, "adapt");
  p.check_keys(ad, kAdaptKeys);
  AdaptConfig& ac = cfg.adapt;
  if (const toml::array* a = p.get_array(ad, "K", "a non-empty list of integers >= 0", true)) {
    ac.K.clear();
    for (size_t i = 0; i < a->size(); ++i) {
      const std::string key = "adapt.K[" + std::to_string(i) + "]";
      const Where w = p.elem_at(*a, i, ad, "K");
      const int64_t v = p.int_value(*a->get(i), key, 0, 1'000'000, w);
      if (std::find(ac.K.begin(), ac.K.end(), static_cast<int>(v)) != ac.K.end())
        p.fail_key(w, key, std::to_string(v) + " is listed twice", "distinct integers >= 0");
      ac.K.push_back(static_cast<int>(v));
    }
  }
  if (auto v = p.get_float(ad, "lr", kPositive)) ac.lr = *v;
  if (auto v = p.get_int(ad, "unroll", 1, 1000)) ac.unroll = static_cast<int>(*v);
  if (auto v = p.get_int(ad, "trajectory", 1, kIntMax)) {
    const Where w = p.seen("adapt.trajectory", ad.at);
    const std::string allowed =
        "a multiple of adapt.unroll (" + std::to_string(ac.unroll) + ") that is >= it";
    if (*v < ac.unroll)
      p.fail_key(w, "adapt.trajectory",
                 std::to_string(*v) + " is shorter than adapt.unroll = " + std::to_string(ac.unroll),
                 allowed);
    if (*v % ac.unroll != 0)
      p.fail_key(w, "adapt.trajectory",
                 std::to_string(*v) + " is not a multiple of adapt.unroll = " +
                     std::to_string(ac.unroll),
                 allowed);
    ac.trajectory = static_cast<int>(*v);
  } else if (ac.trajectory % ac.unroll != 0 || ac.trajectory < ac.unroll) {
    p.fail_key(p.seen("adapt.unroll", ad.at), "adapt.trajectory",
               "the default trajectory (100) is not a multiple of adapt.unroll = " +
                   std::to_string(ac.unroll),
               "set adapt.trajectory to a multiple of adapt.unroll");
  }
  if (const toml::array* a = p.get_array(ad, "sources", Parser::quoted(kSources) + " (non-empty, no duplicates)", true)) {
    ac.sources.clear();
    for (size_t i = 0; i < a->size(); ++i) {
      const std::string key = "adapt.sources[" + std::to_string(i) + "]";
      const Where w = p.elem_at(*a, i, ad, "sources");
      const auto src = static_cast<AdaptSource>(p.enum_value(*a->get(i), key, kSources, w));
      if (std::find(ac.sources.begin(), ac.sources.end(), src) != ac.sources.end())
        p.fail_key(w, key, std::string("\"") + adapt_source_name(src) + "\" is listed twice",
                   Parser::quoted(kSources) + " (non-empty, no duplicates)");
      ac.sources.push_back(src);
    }
  }

  // The test task (required) and the adaptation task.
  const Tab et = p.sub(ev, "task");
  if (!et.t)
    p.fail_key(ev.t ? ev.at : Where{1, 1}, "eval.task",
               "missing: the test task D_test is required",
               "a table [eval.task] with at least family = " + Parser::quoted(kFamilies));
  {
    ParsedTask pt = parse_task(p, et, false);
    cfg.eval.task = pt.specs.front();
    if (!pt.seed_given) cfg.eval.task.seed = default_eval_task_seed(cfg.run.seed);
  }
  const Tab adt = p.sub(ad, "task");
  if (adt.t) {
    ParsedTask pt = parse_task(p, adt, false);
    ac.task = pt.specs.front();
    if (!pt.seed_given) ac.task.seed = default_adapt_task_seed(cfg.run.seed);
  } else {
    ac.task = cfg.eval.task;
    ac.task.seed = adapt_seed_from_eval(cfg.eval.task.seed);
  }

  // [baselines]
  const Tab bl = p.sub(root, "baselines");
  p.check_keys(bl, kBaselinesKeys);
  if (const toml::array* a = p.get_array(bl, "optimizers", Parser::quoted(kBaselines) + " (non-empty, no duplicates)", true)) {
    cfg.baselines.optimizers.clear();
    for (size_t i = 0; i < a->size(); ++i) {
      const std::string key = "baselines.optimizers[" + std::to_string(i) + "]";
      const Where w = p.elem_at(*a, i, bl, "optimizers");
      const auto k = static_cast<BaselineKind>(p.enum_value(*a->get(i), key, kBaselines, w));
      auto& v = cfg.baselines.optimizers;
      if (std::find(v.begin(), v.end(), k) != v.end())
        p.fail_key(w, key, std::string("\"") + baseline_name(k) + "\" is listed twice",
                   Parser::quoted(kBaselines) + " (no duplicates)");
      if ((k == BaselineKind::ista || k == BaselineKind::fista) &&
          cfg.eval.task.family != Family::lasso)
        p.fail_key(w, key,
                   std::string(baseline_name(k)) + " solves LASSO only, but eval.task.family is " +
                       family_name(cfg.eval.task.family),
                   "\"sgd\", \"momentum\", \"adam\", \"rmsprop\" for a non-LASSO test task");
      v.push_back(k);
    }
  }
  if (const toml::array* a = p.get_array(bl, "lrs", "a non-empty list of floats > 0", true)) {
    cfg.baselines.lrs.clear();
    for (size_t i = 0; i < a->size(); ++i)
      cfg.baselines.lrs.push_back(p.float_value(*a->get(i), "baselines.lrs[" + std::to_string(i) + "]",
                                                kPositive, p.elem_at(*a, i, bl, "lrs")));
  }
  if (auto v = p.get_float(bl, "momentum", kUnit)) cfg.baselines.momentum = *v;

  // [arms]
  const Tab arms = p.sub(root, "arms");
  p.check_keys(arms, kArmsKeys);
  if (auto v = p.get_bool(arms, "vanilla")) cfg.arms.vanilla = *v;
  if (auto v = p.get_bool(arms, "direct_transfer")) cfg.arms.direct_transfer = *v;
  if (auto v = p.get_bool(arms, "transfer_learning")) cfg.arms.transfer_learning = *v;
  if (auto v = p.get_bool(arms, "ml2o")) cfg.arms.ml2o = *v;
  if (auto v = p.get_bool(arms, "baselines")) cfg.arms.baselines = *v;
  const ArmsConfig& a = cfg.arms;
  if (!a.vanilla && !a.direct_transfer && !a.transfer_learning && !a.ml2o && !a.baselines)
    p.fail_key(arms.at, "arms", "every arm is disabled, so the run would do nothing",
               "at least one of " + join(kArmsKeys) + " = true");

  // Contradictions between sections.
  if (cfg.ml2o.meta_gradient == MetaGradient::second_order &&
      tr.grad_mode == GradMode::second_derivatives)
    p.fail_key(p.seen("ml2o.meta_gradient", ml.at), "ml2o.meta_gradient",
               "\"second_order\" together with train.grad_mode = \"second_derivatives\" is not "
               "supported (it would need third derivatives of the optimizee through the unroll)",
               "\"first_order\" with any grad_mode, or \"second_order\" with train.grad_mode = "
               "\"gradient_constant\"");
  if (tr.tasks.empty() && (a.direct_transfer || a.transfer_learning || a.ml2o)) {
    std::vector<std::string> on;
    if (a.direct_transfer) on.push_back("direct_transfer");
    if (a.transfer_learning) on.push_back("transfer_learning");
    if (a.ml2o) on.push_back("ml2o");
    Where w = p.seen("train.task", p.seen("train", Where{1, 1}));
    p.fail_key(w, "train.task",
               "missing: the arms " + join(on) + " train on D_train, which is empty",
               "one or more [[train.task]] tables, or set arms." + join(on, ", arms.") + " = false");
  }

  // The resolved config, every field with its effective value, keyed as in the TOML file.
  // Settings only (not the file's path): two files with the same settings give the same json, which
  // is what a resumed run compares.
  nlohmann::json j;
  j["run"] = {{"name", cfg.run.name}, {"seed", cfg.run.seed}, {"backend", cfg.run.backend}};
  j["optimizer"] = {{"arch", arch_name(cfg.optimizer.arch)},
                    {"dm_p", cfg.optimizer.dm_p},
                    {"dm_scale", cfg.optimizer.dm_scale}};
  nlohmann::json tasks = nlohmann::json::array();
  for (const TaskSpec& s : tr.tasks) tasks.push_back(task_json(s));
  j["train"] = {{"unroll", tr.unroll},         {"lr", tr.lr},
                {"beta1", tr.beta1},           {"beta2", tr.beta2},
                {"eps", tr.eps},               {"max_epochs", tr.max_epochs},
                {"curriculum", tr.curriculum}, {"eval_every", tr.eval_every},
                {"eval_batches", tr.eval_batches}, {"patience", tr.patience},
                {"grad_mode", grad_mode_name(tr.grad_mode)}, {"max_skipped", tr.max_skipped},
                {"task", tasks}};
  j["ml2o"] = {{"inner_steps", cfg.ml2o.inner_steps},
               {"inner_lr", cfg.ml2o.inner_lr},
               {"meta_gradient", meta_gradient_name(cfg.ml2o.meta_gradient)}};
  nlohmann::json sources = nlohmann::json::array();
  for (AdaptSource s : ac.sources) sources.push_back(adapt_source_name(s));
  j["adapt"] = {{"K", ac.K},          {"lr", ac.lr},           {"unroll", ac.unroll},
                {"trajectory", ac.trajectory}, {"sources", sources}, {"task", task_json(ac.task)}};
  j["eval"] = {{"steps", cfg.eval.steps}, {"seeds", cfg.eval.seeds}, {"task", task_json(cfg.eval.task)}};
  nlohmann::json opts = nlohmann::json::array();
  for (BaselineKind k : cfg.baselines.optimizers) opts.push_back(baseline_name(k));
  j["baselines"] = {{"optimizers", opts}, {"lrs", cfg.baselines.lrs}, {"momentum", cfg.baselines.momentum}};
  j["arms"] = {{"vanilla", a.vanilla},
               {"direct_transfer", a.direct_transfer},
               {"transfer_learning", a.transfer_learning},
               {"ml2o", a.ml2o},
               {"baselines", a.baselines}};
  cfg.json = std::move(j);
  return cfg;
}

}  // namespace

const char* grad_mode_name(GradMode m) {
  switch (m) {
    case GradMode::none: return "none";
    case GradMode::gradient_constant: return "gradient_constant";
    case GradMode::second_derivatives: return "second_derivatives";
  }
  return "?";
}

const char* meta_gradient_name(MetaGradient m) {
  return m == MetaGradient::first_order ? "first_order" : "second_order";
}

const char* adapt_source_name(AdaptSource s) { return s == AdaptSource::test ? "test" : "adapt"; }

namespace {

// toml++ 3.3.0 reaches __builtin_unreachable (undefined behaviour) when it asks whether certain
// non-ASCII code points are whitespace (U+00A1..U+0499, U+2C8E..U+3087, U+FC06..U+FEFE, found by
// fuzz/fuzz_config.cpp; upstream marzer/tomlplusplus#190, #295). No such code point may reach it.
// Configs are ASCII except in comments, so outside comments any non-ASCII character is refused
// here with its position; inside comments (whose text toml++ drops) the dangerous ones are
// replaced by harmless code points of the same UTF-8 length, so lines and columns do not move.
bool toml_whitespace_hazard(uint32_t c) {
  return (c > 0xA0 && c < 0x49A) || (c >= 0x2C8E && c < 0x3088 && c != 0x3000) ||
         (c >= 0xFC06 && c < 0xFEFF);
}

std::string guard_non_ascii(const std::string& text, const std::string& source) {
  std::string out = text;
  enum class St { normal, comment, basic, literal, ml_basic, ml_literal } st = St::normal;
  size_t i = 0, line = 1, col = 1;
  if (out.compare(0, 3, "\xEF\xBB\xBF") == 0) i = 3;  // a leading byte-order mark is allowed
  const size_t n = out.size();
  auto at = [&](size_t k) { return k < n ? static_cast<unsigned char>(out[k]) : 0u; };
  auto run_of = [&](size_t k, unsigned char q) {
    size_t m = 0;
    while (k + m < n && at(k + m) == q) ++m;
    return m;
  };
  bool escaped = false;
  while (i < n) {
    const unsigned char b = at(i);
    if (b >= 0x80) {
      // Decode by structure only (lead byte, then continuation bytes), as permissively as any
      // decoder might, so that every code point toml++ could see is checked.
      size_t len = 1;
      uint32_t cp = b;
      if ((b & 0xE0) == 0xC0) { len = 2; cp = b & 0x1F; }
      else if ((b & 0xF0) == 0xE0) { len = 3; cp = b & 0x0F; }
      else if ((b & 0xF8) == 0xF0) { len = 4; cp = b & 0x07; }
      bool whole = len > 1 && i + len <= n;
      for (size_t k = 1; whole && k < len; ++k) {
        if ((at(i + k) & 0xC0) != 0x80) whole = false;
        else cp = (cp << 6) | (at(i + k) & 0x3F);
      }
      // Invalid UTF-8: toml++ stops there with its own error, so nothing after it is ever read.
      if (!whole) return out;
      if (st != St::comment) {
        char buf[16];
        std::snprintf(buf, sizeof(buf), "U+%04X", static_cast<unsigned>(cp));
        throw ConfigError(source + ":" + std::to_string(line) + ":" + std::to_string(col) +
                          ": non-ASCII character " + buf + (st == St::normal ? "" : " in a string") +
                          "; allowed: ASCII everywhere but in comments (every key and value is ASCII)");
      }
      if (toml_whitespace_hazard(cp)) {
        static const char* kSafe[] = {"", "", "\xD4\x80", "\xE4\xB8\x80", "\xF0\x90\x80\x80"};
        out.replace(i, len, kSafe[len]);  // U+0500, U+4E00, U+10000
      }
      i += len;
      ++col;
      escaped = false;
      continue;
    }
    const char c = static_cast<char>(b);
    if (c == '\n') {
      ++line;
      col = 1;
      ++i;
      if (st == St::comment || st == St::basic || st == St::literal) st = St::normal;
      escaped = false;
      continue;
    }
    switch (st) {
      case St::normal:
        if (c == '#') st = St::comment;
        else if (c == '"') {
          if (run_of(i, '"') >= 3) { st = St::ml_basic; i += 2; col += 2; }
          else st = St::basic;
        } else if (c == '\'') {
          if (run_of(i, '\'') >= 3) { st = St::ml_literal; i += 2; col += 2; }
          else st = St::literal;
        }
        break;
      case St::comment: break;
      case St::basic:
        if (escaped) escaped = false;
        else if (c == '\\') escaped = true;
        else if (c == '"') st = St::normal;
        break;
      case St::literal:
        if (c == '\'') st = St::normal;
        break;
      case St::ml_basic:
        if (escaped) escaped = false;
        else if (c == '\\') escaped = true;
        else if (c == '"' && run_of(i, '"') >= 3) {
          const size_t m = run_of(i, '"');
          st = St::normal;
          i += m - 1;
          col += m - 1;
        }
        break;
      case St::ml_literal:
        if (c == '\'' && run_of(i, '\'') >= 3) {
          const size_t m = run_of(i, '\'');
          st = St::normal;
          i += m - 1;
          col += m - 1;
        }
        break;
    }
    ++i;
    ++col;
  }
  return out;
}

}  // namespace

Config parse_config(const std::string& text, const std::string& source_name) {
  const std::string safe = guard_non_ascii(text, source_name);
  toml::table doc;
  try {
    doc = toml::parse(std::string_view(safe), std::string_view(source_name));
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    const unsigned line = b.line ? b.line : 1, col = b.column ? b.column : 1;
    std::string desc(e.description());
    for (char& c : desc)
      if (c == '\n' || c == '\r') c = ' ';
    throw ConfigError(source_name + ":" + std::to_string(line) + ":" + std::to_string(col) +
                      ": TOML syntax error: " + desc);
  }
  return parse_document(doc, source_name);
}

Config load_config(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status))
    throw ConfigError(path + ": cannot read config file: " +
                      (ec ? ec.message() : std::string("no such file")));
  if (std::filesystem::is_directory(status))
    throw ConfigError(path + ": cannot read config file: it is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot read config file: " + std::strerror(errno));
  std::string text;
  char buf[65536];
  while (in.read(buf, sizeof(buf)) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxFileBytes)
      throw ConfigError(path + ": config file is larger than " +
                        std::to_string(kMaxFileBytes >> 20) + " MiB; not a config");
  }
  if (in.bad()) throw ConfigError(path + ": cannot read config file: read error");
  return parse_config(text, path);
}

}  // namespace ml2o
