// The schema machinery's non-template half: texts, ranges and the Parser's typed reads.
#include "schema.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace ml2o::schema {

std::string fmt_double(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += sep;
    s += v[i];
  }
  return s;
}

std::string quoted(const std::vector<std::string>& names) {
  std::vector<std::string> q;
  for (const auto& n : names) q.push_back("\"" + n + "\"");
  return join(q);
}

std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (out.size() >= 60) {
      out += "...";
      break;
    }
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

namespace {

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

// Other names people reach for; an unknown key close to one of these suggests the real key. Keyed
// by name, not by key: "lr" serves train.lr and adapt.lr alike.
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

Where where_of(const toml::source_region& r) {
  return Where{static_cast<uint32_t>(r.begin.line), static_cast<uint32_t>(r.begin.column)};
}

// Where a key of the table is written (its name, else its value), for file-order comparisons.
Where key_at(const Parser& p, const Tab& tab, const toml::key& k, const toml::node& v) {
  Where w = where_of(k.source());
  return w.ok() ? w : p.at(v, tab.at);
}

bool before(Where a, Where b) { return a.line < b.line || (a.line == b.line && a.col < b.col); }

}  // namespace

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

// ---- ranges --------------------------------------------------------------------------------------------

std::string IntRange::describe(const char* what) const {
  const std::string s = what;
  if (hi >= kIntMax) return s + " >= " + std::to_string(lo);
  return s + " in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
}

bool FloatRange::contains(double v) const {
  const bool above = lo_incl ? v >= lo : v > lo;
  const bool below = std::isinf(hi) ? true : (hi_incl ? v <= hi : v < hi);
  return above && below;
}

std::string FloatRange::describe(const char* what) const {
  std::string s = what;
  if (std::isinf(lo) && std::isinf(hi)) {  // "a float" -> "a finite float", "floats" -> "finite floats"
    for (const char* article : {"a ", "an "})
      if (s.rfind(article, 0) == 0) return "a finite " + s.substr(std::string(article).size());
    return "finite " + s;
  }
  if (std::isinf(hi)) return s + (lo_incl ? " >= " : " > ") + fmt_double(lo);
  return s + " in " + (lo_incl ? "[" : "(") + fmt_double(lo) + ", " + fmt_double(hi) +
         (hi_incl ? "]" : ")");
}

std::string ListRule::describe(const std::string& elements) const {
  return std::string("a non-empty") + (increasing ? ", strictly increasing" : "") + " list" +
         (each.empty() ? " of " + elements : ", each " + each) + (distinct ? ", no duplicates" : "");
}

// ---- the parser ------------------------------------------------------------------------------------------

void Parser::fail(Where w, const std::string& msg) const {
  if (!w.ok()) w = Where{1, 1};
  throw ConfigError(src_ + ":" + std::to_string(w.line) + ":" + std::to_string(w.col) + ": " + msg);
}

void Parser::fail_key(Where w, const std::string& key, const std::string& problem,
                      const std::string& allowed) const {
  fail(w, "key '" + key + "': " + problem + "; allowed: " + allowed);
}

void Parser::wrong_type(const Slot& s, const char* expected) const {
  fail(s, std::string("expected ") + expected + ", found " + type_desc(s.node.type()));
}

Where Parser::at(const toml::node& n, Where fallback) const {
  Where w = where_of(n.source());
  return w.ok() ? w : fallback;
}

Where Parser::seen(const std::string& path, Where fallback) const {
  auto it = seen_.find(path);
  return it != seen_.end() && it->second.ok() ? it->second : fallback;
}

void Parser::check_keys(const Tab& tab, const std::vector<std::string>& allowed) const {
  if (!tab.t) return;
  const toml::key* first = nullptr;
  Where first_at{};
  for (auto&& [k, v] : *tab.t) {
    if (std::find(allowed.begin(), allowed.end(), std::string(k.str())) != allowed.end()) continue;
    const Where w = key_at(*this, tab, k, v);
    if (!first || before(w, first_at)) {
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

void Parser::check_applicable(const Tab& tab, const std::function<bool(const std::string&)>& applies,
                              const std::string& problem, const std::string& allowed) const {
  if (!tab.t) return;
  const toml::key* bad = nullptr;
  Where bad_at{};
  for (auto&& [k, v] : *tab.t) {
    if (applies(std::string(k.str()))) continue;
    const Where w = key_at(*this, tab, k, v);
    if (!bad || before(w, bad_at)) {
      bad = &k;
      bad_at = w;
    }
  }
  if (bad) fail_key(bad_at, tab.key(std::string(bad->str())), problem, allowed);
}

Tab Parser::table(const Slot& s) {
  if (!s.node.is_table()) {
    std::string hint = "a table [" + s.name + "]";
    if (s.node.is_array() && s.node.as_array()->is_array_of_tables())
      hint += " (written [" + s.name + "], not [[" + s.name + "]])";
    wrong_type(Slot{s.node, s.name, s.at, hint}, "a table");
  }
  note(s.name, s.at);
  return Tab{s.node.as_table(), s.name, s.at};
}

Tab Parser::sub(const Tab& parent, const std::string& k) {
  const toml::node* n = parent.get(k);
  if (!n) return Tab{nullptr, parent.key(k), parent.at};
  return table(Slot{*n, parent.key(k), at(*n, parent.at), ""});
}

int64_t Parser::integer(const Slot& s, const IntRange& r) const {
  if (!s.node.is_integer()) wrong_type(s, "an integer");
  const int64_t v = s.node.as_integer()->get();
  if (!r.contains(v)) fail(s, std::to_string(v) + " is out of range");
  return v;
}

double Parser::real(const Slot& s, const FloatRange& r) const {
  double v = 0;
  if (s.node.is_floating_point()) v = s.node.as_floating_point()->get();
  else if (s.node.is_integer()) v = static_cast<double>(s.node.as_integer()->get());
  else wrong_type(s, "a float");
  if (!std::isfinite(v)) fail(s, fmt_double(v) + " is not a finite number");
  if (!r.contains(v)) fail(s, fmt_double(v) + " is out of range");
  return v;
}

bool Parser::boolean(const Slot& s) const {
  if (!s.node.is_boolean()) wrong_type(s, "a boolean");
  return s.node.as_boolean()->get();
}

const std::string& Parser::string(const Slot& s) const {
  if (!s.node.is_string()) wrong_type(s, "a string");
  return s.node.as_string()->get();
}

size_t Parser::choice(const Slot& s, const std::vector<std::string>& names) const {
  const std::string& v = string(s);
  for (size_t i = 0; i < names.size(); ++i)
    if (v == names[i]) return i;
  std::string problem = "'" + printable(v) + "' is not a valid value";
  const std::string near = nearest(v, names);
  if (!near.empty()) problem += " (did you mean '" + near + "'?)";
  fail(s, problem);
}

const toml::array& Parser::array(const Slot& s, size_t max_length) const {
  if (!s.node.is_array()) wrong_type(s, "an array");
  const toml::array& a = *s.node.as_array();
  if (a.empty()) fail(s, "the list is empty");
  if (a.size() > max_length)
    fail_key(s.at, s.name, "the list has " + std::to_string(a.size()) + " entries",
             s.allowed + " (at most " + std::to_string(max_length) + " entries)");
  return a;
}

Slot Parser::element(const Slot& s, const toml::array& a, size_t i, std::string allowed) {
  Slot e{*a.get(i), s.name + "[" + std::to_string(i) + "]", at(*a.get(i), s.at), std::move(allowed)};
  note(e.name, e.at);
  return e;
}

// ---- what the table generates -----------------------------------------------------------------------

std::string toml_literal(const nlohmann::json& v) {
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
  if (v.is_number_float()) return fmt_double(v.get<double>());
  if (v.is_array()) {
    std::vector<std::string> parts;
    for (const auto& e : v) parts.push_back(toml_literal(e));
    return "[" + join(parts) + "]";
  }
  return v.dump();
}

namespace {
std::string cell(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += '\\';
    out += c;
  }
  return out;
}
}  // namespace

std::string markdown_table(const std::vector<Row>& rows, bool with_families) {
  std::string out = "| key | type | default | allowed | meaning |";
  out += with_families ? " families |\n" : "\n";
  out += "|---|---|---|---|---|";
  out += with_families ? "---|\n" : "\n";
  for (const Row& r : rows) {
    out += "| `" + cell(r.key) + "` | " + cell(r.type) + " | " + cell(r.default_value) + " | " +
           cell(r.allowed) + " | " + cell(r.help) + " |";
    out += with_families ? " " + cell(r.families) + " |\n" : "\n";
  }
  return out;
}

}  // namespace ml2o::schema
