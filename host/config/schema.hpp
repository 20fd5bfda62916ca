// The config schema machinery: every key is declared once, as a Key (its path, type, allowed
// values, help text and the field it sets); a reader walks TOML tables against a list of Keys with
// located errors; the resolved json and the markdown reference come from the same list.
// host/config/config.cpp holds ml2o's two tables (the config, and a task table); the tests build
// small tables of their own.
//
// Every error is a ConfigError "FILE:LINE:COL: key 'a.b': problem; allowed: what". Line and column
// come from toml++'s source regions: the offending value, key or table header; for a missing key,
// the table that should hold it.
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include "ml2o/config.hpp"

namespace ml2o::schema {

constexpr int64_t kIntMax = std::numeric_limits<int>::max();
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr size_t kMaxListLength = 1000;

// ---- text helpers ----------------------------------------------------------------------------------

std::string fmt_double(double v);  // shortest round-trip form; "nan", "inf"
std::string join(const std::vector<std::string>& v, const char* sep = ", ");
std::string quoted(const std::vector<std::string>& names);  // "a", "b"
std::string printable(const std::string& s);  // one readable line whatever bytes s holds
// The nearest of `allowed` (or a known alias of one), or "" when nothing is a plausible typo.
std::string nearest(const std::string& key, const std::vector<std::string>& allowed);
const char* type_desc(toml::node_type t);  // "an integer", "a table", ...

// ---- ranges ------------------------------------------------------------------------------------------

struct IntRange {
  int64_t lo, hi;  // hi >= kIntMax prints as no upper bound
  bool contains(int64_t v) const { return v >= lo && v <= hi; }
  std::string describe(const char* what = "an integer") const;
};

struct FloatRange {
  double lo;
  bool lo_incl;
  double hi;  // +inf: no upper bound
  bool hi_incl;
  bool contains(double v) const;
  std::string describe(const char* what = "a float") const;
};
constexpr double kInf = std::numeric_limits<double>::infinity();
inline const FloatRange kPositive{0, false, kInf, false};
inline const FloatRange kNonNegative{0, true, kInf, false};
inline const FloatRange kUnit{0, true, 1, false};  // [0, 1)
inline const FloatRange kFinite{-kInf, false, kInf, false};

// ---- the reader --------------------------------------------------------------------------------------

struct Where {
  uint32_t line = 0, col = 0;
  bool ok() const { return line > 0 && col > 0; }
};

// A table being read, with its dotted path ("" for the document root) and location; t is null
// when the table is absent (every key then takes its default).
struct Tab {
  const toml::table* t = nullptr;
  std::string path;
  Where at;
  std::string key(const std::string& k) const { return path.empty() ? k : path + "." + k; }
  const toml::node* get(const std::string& k) const { return t ? t->get(k) : nullptr; }
};

// A value being read: its node, the key as messages name it ("train.task[1].sigma"), where it is,
// and what messages say is allowed.
struct Slot {
  const toml::node& node;
  std::string name;
  Where at;
  std::string allowed;
};

// Reads values with their checks and throws located ConfigErrors. Remembers where each key (and
// each list element, "a.b[2]") was seen, for the checks between keys that run after the walk.
class Parser {
 public:
  explicit Parser(std::string source) : src_(std::move(source)) {}

  [[noreturn]] void fail(Where w, const std::string& msg) const;
  [[noreturn]] void fail_key(Where w, const std::string& key, const std::string& problem,
                             const std::string& allowed) const;
  [[noreturn]] void fail(const Slot& s, const std::string& problem) const {
    fail_key(s.at, s.name, problem, s.allowed);
  }
  [[noreturn]] void wrong_type(const Slot& s, const char* expected) const;

  Where at(const toml::node& n, Where fallback) const;
  // Where a key was seen, else the fallback (its table, for defaults).
  Where seen(const std::string& path, Where fallback) const;
  bool given(const std::string& path) const { return seen_.count(path) > 0; }
  void note(const std::string& path, Where w) { seen_[path] = w; }

  // Rejects keys outside `allowed`, the first one in the file first, suggesting the nearest.
  void check_keys(const Tab& tab, const std::vector<std::string>& allowed) const;
  // Rejects the first key (in file order) for which `applies` is false.
  void check_applicable(const Tab& tab, const std::function<bool(const std::string&)>& applies,
                        const std::string& problem, const std::string& allowed) const;

  Tab table(const Slot& s);                           // the value must be a table
  Tab sub(const Tab& parent, const std::string& k);  // absent: t == nullptr

  // Typed values.
  int64_t integer(const Slot& s, const IntRange& r) const;
  double real(const Slot& s, const FloatRange& r) const;
  bool boolean(const Slot& s) const;
  const std::string& string(const Slot& s) const;
  size_t choice(const Slot& s, const std::vector<std::string>& names) const;  // index in names
  const toml::array& array(const Slot& s, size_t max_length) const;  // non-empty, <= max_length
  // Element i of an array read from s, described by `allowed`.
  Slot element(const Slot& s, const toml::array& a, size_t i, std::string allowed);

  const std::string& source() const { return src_; }

 private:
  std::string src_;
  std::map<std::string, Where> seen_;
};

// ---- keys ----------------------------------------------------------------------------------------------

// A field of Target that a key reads into: one member, or a member of a member.
template <class Target, class T> struct Field {
  std::function<T&(Target&)> ref;
  T& operator()(Target& t) const { return ref(t); }
  const T& operator()(const Target& t) const { return ref(const_cast<Target&>(t)); }  // reads only
};
template <class S, class T> Field<S, T> field(T S::*m) {
  return {[m](S& s) -> T& { return s.*m; }};
}
template <class S, class U, class T> Field<S, T> field(U S::*a, T U::*b) {
  return {[a, b](S& s) -> T& { return (s.*a).*b; }};
}

// Names of an enumeration's values, in the order messages list them.
template <class E> using Choices = std::vector<std::pair<std::string, E>>;
template <class E> std::vector<std::string> names_of(const Choices<E>& c) {
  std::vector<std::string> out;
  for (const auto& [name, v] : c) out.push_back(name);
  return out;
}
template <class E> std::string name_of(const Choices<E>& c, const E& v) {
  for (const auto& [name, e] : c)
    if (e == v) return name;
  return "?";
}

// One config key. Built by the helpers below; the modifiers after them add what few keys need.
template <class Target> struct Key {
  std::string path;     // dotted, from the table the schema reads: "train.lr"; "sigma" in a task
  std::string type;     // for the reference: "integer", "list of floats", ...
  std::string allowed;  // what a value must be, as messages and the reference say it
  std::string help;     // what the key means
  // Reads the key's value (present in the file) into the target.
  std::function<void(Parser&, const Slot&, Target&)> read;
  // The effective value, as the resolved json holds it.
  std::function<nlohmann::json(const Target&)> show;
  std::string required;      // non-empty: the key must be given, for this reason
  std::string default_text;  // non-empty: the reference prints this instead of the default
  unsigned families = ~0u;   // task keys: bit f is set when the key applies to family f
  // real_or_list: what a list of values must be; where lists are allowed, a list expands the
  // table into one copy per value. Empty for every other key.
  std::string list_allowed;

  Key needed(std::string why) && { required = std::move(why); return std::move(*this); }
  Key default_is(std::string text) && { default_text = std::move(text); return std::move(*this); }
  Key only(unsigned family_mask) && { families = family_mask; return std::move(*this); }
  Key allowing(std::string text) && { allowed = std::move(text); return std::move(*this); }
};

template <class S>
Key<S> make_key(std::string path, std::string type, std::string allowed, std::string help) {
  Key<S> k;
  k.path = std::move(path);
  k.type = std::move(type);
  k.allowed = std::move(allowed);
  k.help = std::move(help);
  return k;
}

// The resolved json of a plain field.
template <class S, class T> auto show_field(Field<S, T> f) {
  return [f](const S& s) { return nlohmann::json(f(s)); };
}

template <class S, class T>
Key<S> integer(std::string path, Field<S, T> f, IntRange r, std::string help) {
  Key<S> k = make_key<S>(std::move(path), "integer", r.describe(), std::move(help));
  k.read = [f, r](Parser& p, const Slot& v, S& s) { f(s) = static_cast<T>(p.integer(v, r)); };
  k.show = show_field(f);
  return k;
}

template <class S>
Key<S> real(std::string path, Field<S, double> f, FloatRange r, std::string help) {
  Key<S> k = make_key<S>(std::move(path), "float", r.describe(), std::move(help));
  k.read = [f, r](Parser& p, const Slot& v, S& s) { f(s) = p.real(v, r); };
  k.show = show_field(f);
  return k;
}

// A float that, where the reader allows it ([[train.task]]), may be a list of floats: the table
// then stands for one copy of itself per value.
template <class S>
Key<S> real_or_list(std::string path, Field<S, double> f, FloatRange r, std::string help) {
  Key<S> k = real(std::move(path), f, r, std::move(help));
  k.type = "float (a list in `[[train.task]]`)";
  k.list_allowed = r.describe() + " or a non-empty list of " + r.describe("floats");
  return k;
}

template <class S> Key<S> boolean(std::string path, Field<S, bool> f, std::string help) {
  Key<S> k = make_key<S>(std::move(path), "boolean", "true, false", std::move(help));
  k.read = [f](Parser& p, const Slot& v, S& s) { f(s) = p.boolean(v); };
  k.show = show_field(f);
  return k;
}

// A free string; `problem` returns "" for a usable value, else what is wrong with it.
template <class S>
Key<S> text(std::string path, Field<S, std::string> f,
            std::function<std::string(const std::string&)> problem, std::string allowed,
            std::string help) {
  Key<S> k = make_key<S>(std::move(path), "string", std::move(allowed), std::move(help));
  k.read = [f, problem](Parser& p, const Slot& v, S& s) {
    const std::string& str = p.string(v);
    const std::string why = problem(str);
    if (!why.empty()) p.fail(v, why);
    f(s) = str;
  };
  k.show = show_field(f);
  return k;
}

template <class S, class E>
Key<S> choice(std::string path, Field<S, E> f, Choices<E> c, std::string help) {
  Key<S> k = make_key<S>(std::move(path), "string", quoted(names_of(c)), std::move(help));
  k.read = [f, c](Parser& p, const Slot& v, S& s) { f(s) = c[p.choice(v, names_of(c))].second; };
  k.show = [f, c](const S& s) { return nlohmann::json(name_of(c, f(s))); };
  return k;
}

// ---- lists: non-empty, at most max_length values, each checked like a single value --------------------

struct ListRule {
  bool distinct = false;    // no value twice
  bool increasing = false;  // each value above the previous one
  size_t max_length = kMaxListLength;
  std::string each;         // non-empty: says what one value must be, instead of its range
  // "a non-empty[, strictly increasing] list of <elements>[, no duplicates]", or with `each`:
  // "a non-empty[, strictly increasing] list, each <each>[, no duplicates]"
  std::string describe(const std::string& elements) const;
};
inline ListRule any_values() { return ListRule{}; }
inline ListRule distinct_values() {
  ListRule r;
  r.distinct = true;
  return r;
}
inline ListRule increasing_values(std::string each = "") {
  ListRule r;
  r.increasing = true;
  r.each = std::move(each);
  return r;
}

// A list whose elements are read by `one` and named in messages by `say`; `element` describes one
// element ("an integer >= 1"), `elements` all of them ("integers >= 1").
template <class S, class T>
Key<S> list_of(std::string path, Field<S, std::vector<T>> f, std::string type, std::string element,
               std::string elements, ListRule rule, std::string help,
               std::function<T(Parser&, const Slot&)> one, std::function<std::string(const T&)> say) {
  Key<S> k = make_key<S>(std::move(path), std::move(type), rule.describe(elements), std::move(help));
  if (!rule.each.empty()) element = rule.each;
  k.read = [f, rule, element, one, say](Parser& p, const Slot& v, S& s) {
    const toml::array& a = p.array(v, rule.max_length);
    std::vector<T> out;
    for (size_t i = 0; i < a.size(); ++i) {
      const Slot e = p.element(v, a, i, element);
      T x = one(p, e);
      const Slot whole{e.node, e.name, e.at, v.allowed};  // list-level problems
      if (rule.distinct && std::find(out.begin(), out.end(), x) != out.end())
        p.fail(whole, say(x) + " is listed twice");
      if (rule.increasing && !out.empty() && !(out.back() < x))
        p.fail(whole, say(x) + " does not increase on the previous entry (" + say(out.back()) + ")");
      out.push_back(std::move(x));
    }
    f(s) = std::move(out);
  };
  k.show = show_field(f);
  return k;
}

template <class S, class T>
Key<S> int_list(std::string path, Field<S, std::vector<T>> f, IntRange r, ListRule rule,
                std::string help) {
  return list_of<S, T>(
      std::move(path), f, "list of integers", r.describe(), r.describe("integers"), rule, std::move(help),
      [r](Parser& p, const Slot& e) { return static_cast<T>(p.integer(e, r)); },
      [](const T& x) { return std::to_string(x); });
}

template <class S>
Key<S> real_list(std::string path, Field<S, std::vector<double>> f, FloatRange r, ListRule rule,
                 std::string help) {
  return list_of<S, double>(
      std::move(path), f, "list of floats", r.describe(), r.describe("floats"), rule, std::move(help),
      [r](Parser& p, const Slot& e) { return p.real(e, r); },
      [](const double& x) { return fmt_double(x); });
}

template <class S, class E>
Key<S> choice_list(std::string path, Field<S, std::vector<E>> f, Choices<E> c, ListRule rule,
                   std::string help) {
  Key<S> k = list_of<S, E>(
      std::move(path), f, "list of strings", quoted(names_of(c)), quoted(names_of(c)), rule, std::move(help),
      [c](Parser& p, const Slot& e) { return c[p.choice(e, names_of(c))].second; },
      [c](const E& x) { return "\"" + name_of(c, x) + "\""; });
  k.show = [f, c](const S& s) {
    nlohmann::json j = nlohmann::json::array();
    for (const E& x : f(s)) j.push_back(name_of(c, x));
    return j;
  };
  return k;
}

// [lo, hi]: two finite floats with lo < hi.
template <class S>
Key<S> interval(std::string path, Field<S, double> lo, Field<S, double> hi, std::string help) {
  Key<S> k = make_key<S>(std::move(path), "[lo, hi]", "[lo, hi] with lo < hi", std::move(help));
  k.read = [lo, hi](Parser& p, const Slot& v, S& s) {
    const toml::array& a = p.array(v, kMaxListLength);
    if (a.size() != 2) p.fail(v, "expected 2 numbers, found " + std::to_string(a.size()));
    const double l = p.real(p.element(v, a, 0, kFinite.describe()), kFinite);
    const double h = p.real(p.element(v, a, 1, kFinite.describe()), kFinite);
    if (!(l < h)) p.fail(v, "lo = " + fmt_double(l) + " is not below hi = " + fmt_double(h));
    lo(s) = l;
    hi(s) = h;
  };
  k.show = [lo, hi](const S& s) { return nlohmann::json{lo(s), hi(s)}; };
  return k;
}

// ---- walking a table, and what the table generates ------------------------------------------------------

// The names directly under `prefix` ("" or "train."), in the order of the keys: leaves and tables.
template <class S>
std::vector<std::string> children(const std::vector<Key<S>>& keys, const std::string& prefix) {
  std::vector<std::string> out;
  for (const Key<S>& k : keys) {
    if (k.path.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = k.path.substr(prefix.size());
    const std::string name = rest.substr(0, rest.find('.'));
    if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(name);
  }
  return out;
}

template <class S> const Key<S>* find_key(const std::vector<Key<S>>& keys, const std::string& path) {
  for (const Key<S>& k : keys)
    if (k.path == path) return &k;
  return nullptr;
}

// Reads `tab` into `target`: unknown keys first, then each key in table order (sub-tables
// recursively, absent ones too, for their required keys). `skip(path)` leaves a key to the caller.
template <class S>
void read_table(Parser& p, const Tab& tab, const std::vector<Key<S>>& keys, S& target,
                const std::string& prefix = "",
                const std::function<bool(const std::string&)>& skip = nullptr) {
  const std::vector<std::string> names = children(keys, prefix);
  p.check_keys(tab, names);
  for (const std::string& name : names) {
    const std::string path = prefix + name;
    const Key<S>* k = find_key(keys, path);
    if (!k) {
      read_table(p, p.sub(tab, name), keys, target, path + ".", skip);
      continue;
    }
    const toml::node* n = tab.get(name);
    if (!n) {
      if (!k->required.empty())
        p.fail_key(tab.at, tab.key(name), "missing: " + k->required, k->allowed);
      continue;
    }
    const Slot v{*n, tab.key(name), p.at(*n, tab.at), k->allowed};
    p.note(v.name, v.at);
    if (skip && skip(path)) continue;
    k->read(p, v, target);
  }
}

// The resolved values of the keys for which `keep` holds, keyed as in the TOML file.
template <class S>
nlohmann::json to_json(const std::vector<Key<S>>& keys, const S& target,
                       const std::function<bool(const Key<S>&)>& keep = nullptr) {
  nlohmann::json j = nlohmann::json::object();
  for (const Key<S>& k : keys) {
    if (keep && !keep(k)) continue;
    std::string pointer = "/" + k.path;
    std::replace(pointer.begin(), pointer.end(), '.', '/');
    j[nlohmann::json::json_pointer(pointer)] = k.show(target);
  }
  return j;
}

// A value as a TOML literal: "run", 0.001, [100, 200], true.
std::string toml_literal(const nlohmann::json& v);

// One markdown row per key under `prefix`: | key | type | default | allowed | meaning | and, when
// `families` is given, a last column | families |. `default_of(k)` is the default column's text.
struct Row {
  std::string key, type, default_value, allowed, help, families;
};
std::string markdown_table(const std::vector<Row>& rows, bool with_families);

template <class S>
std::vector<Row> rows(const std::vector<Key<S>>& keys, const std::string& prefix,
                      const std::function<std::string(const Key<S>&)>& default_of) {
  std::vector<Row> out;
  for (const Key<S>& k : keys) {
    if (k.path.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string shown = !k.required.empty()       ? "required"
                              : !k.default_text.empty() ? k.default_text
                                                        : default_of(k);
    out.push_back({k.path.substr(prefix.size()), k.type, shown, k.allowed, k.help, ""});
  }
  return out;
}

}  // namespace ml2o::schema
