// Experiment configuration: TOML -> Config. Every key is declared once, in config_keys() or
// task_keys() below (its type, allowed values, help text and field; defaults are the structs'
// own, in settings.hpp, and task_defaults() per family); the reader, the resolved json and the key
// reference in configs/README.md all come from these tables (schema.hpp). The checks between
// keys are rules, written out after the tables.
//
// Adding a key: a field in the settings struct (its default there) and one line in the table.
#include "ml2o/config.hpp"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "ml2o/seeds.hpp"
#include "schema.hpp"

namespace ml2o {

using namespace schema;

namespace {

constexpr int64_t kMaxInstances = 10'000'000;
constexpr double kMemoryLimitBytes = 16.0 * 1024 * 1024 * 1024;  // instances * dim^2 * 4 bytes
constexpr size_t kMaxTrainTasks = 1000;
constexpr size_t kMaxFileBytes = 16u << 20;

const Choices<Family> kFamilies = {{"lasso", Family::lasso},
                                   {"quadratic", Family::quadratic},
                                   {"rosenbrock", Family::rosenbrock},
                                   {"rastrigin", Family::rastrigin},
                                   {"mlp", Family::mlp}};
const Choices<Activation> kActivations = {
    {"sigmoid", Activation::sigmoid}, {"relu", Activation::relu}, {"tanh", Activation::tanh}};
const Choices<std::string> kDatasets = {{"digits", "digits"}, {"idx", "idx"}};
constexpr int kMaxWidth = 100000;
const Choices<Arch> kArches = {{"rnnprop", Arch::rnnprop}, {"dmlstm", Arch::dmlstm}};
const Choices<std::string> kBackends = {{"cpu", "cpu"}, {"cuda", "cuda"}, {"auto", "auto"}};
const Choices<GradMode> kGradModes = {{"gradient_constant", GradMode::gradient_constant},
                                      {"second_derivatives", GradMode::second_derivatives}};
const Choices<MetaGradient> kMetaGradients = {{"first_order", MetaGradient::first_order},
                                              {"second_order", MetaGradient::second_order}};
const Choices<AdaptSource> kSources = {{"test", AdaptSource::test}, {"adapt", AdaptSource::adapt}};
const Choices<BaselineKind> kBaselines = {
    {"sgd", BaselineKind::sgd},         {"momentum", BaselineKind::momentum},
    {"adam", BaselineKind::adam},       {"rmsprop", BaselineKind::rmsprop},
    {"ista", BaselineKind::ista},       {"fista", BaselineKind::fista}};

unsigned family_bit(Family f) { return 1u << static_cast<unsigned>(f); }
unsigned families(std::initializer_list<Family> fs) {
  unsigned m = 0;
  for (Family f : fs) m |= family_bit(f);
  return m;
}
bool applies(const Key<TaskSpec>& k, Family f) { return (k.families & family_bit(f)) != 0; }

// ---- task tables ([[train.task]], [adapt.task], [eval.task]) ---------------------------------------

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
    case Family::mlp:
      s.instances = 8;
      s.x0_scale = 0;
      s.dim = static_cast<int>(mlp_layout(s.layers).params);
      break;
  }
  return s;
}

std::string path_problem(const std::string& s) {
  return s.empty() ? "an empty path" : std::string();
}

const std::vector<Key<TaskSpec>>& task_keys() {
  using F = Family;
  static const std::vector<Key<TaskSpec>> keys = {
      choice("family", field(&TaskSpec::family), kFamilies, "the problem family")
          .needed("every task table names its family"),
      integer("dim", field(&TaskSpec::dim), {1, kIntMax}, "the dimension d; Rosenbrock: 2 only")
          .only(families({F::lasso, F::quadratic, F::rosenbrock, F::rastrigin})),
      integer("instances", field(&TaskSpec::instances), {1, kMaxInstances}, "problems per batch"),
      real_or_list("sigma", field(&TaskSpec::sigma), kPositive, "std of A's entries")
          .only(families({F::lasso, F::quadratic})),
      real("lam", field(&TaskSpec::lam), kNonNegative, "the l1 weight").only(families({F::lasso})),
      interval("b_range", field(&TaskSpec::b_lo), field(&TaskSpec::b_hi), "b ~ U(lo, hi)")
          .only(families({F::lasso, F::quadratic})),
      real("x0_scale", field(&TaskSpec::x0_scale), kPositive,
           "std of x0 ~ N(0, s²); Rastrigin: half-width of U(-s, s)")
          .only(families({F::lasso, F::quadratic, F::rosenbrock, F::rastrigin})),
      int_list("layers", field(&TaskSpec::layers), {1, kMaxWidth}, any_values(),
               "the network's widths: inputs (the dataset's features), hidden layers, classes; "
               "d is its parameter count")
          .only(families({F::mlp})),
      choice("activation", field(&TaskSpec::activation), kActivations,
             "of the hidden layers (the output is softmax cross-entropy)")
          .only(families({F::mlp})),
      integer("minibatch", field(&TaskSpec::minibatch), {1, 100000},
              "training rows per step, drawn with replacement per instance and step")
          .only(families({F::mlp})),
      choice("dataset", field(&TaskSpec::dataset), kDatasets,
             "\"digits\": the UCI digits CSV at data_path; \"idx\": MNIST-style IDX files "
             "data_path (images) and labels_path")
          .only(families({F::mlp})),
      text("data_path", field(&TaskSpec::data_path), path_problem, "a non-empty path",
           "the digits CSV (gzip or plain), or the IDX images file (relative to the working "
           "directory)")
          .only(families({F::mlp})),
      text("labels_path", field(&TaskSpec::labels_path), path_problem, "a non-empty path",
           "the IDX labels file (dataset = \"idx\" only)")
          .only(families({F::mlp}))
          .default_is("none"),
      real("test_fraction", field(&TaskSpec::test_fraction), FloatRange{0, false, 1, false},
           "share of the rows held out as the test split (test accuracy)")
          .only(families({F::mlp})),
      integer("split_seed", field(&TaskSpec::split_seed), {0, kInt64Max},
              "the seed of the train/test split (not derived: every task on the same data "
              "shares it)")
          .only(families({F::mlp})),
      real("alpha", field(&TaskSpec::alpha), kNonNegative, "Rastrigin's α")
          .only(families({F::rastrigin})),
      integer("seed", field(&TaskSpec::seed), {0, kInt64Max}, "the seed of the task's instances")
          .default_is("derived (see below)"),
  };
  return keys;
}

// The mlp rules of one task table: the network fits the dataset (digits: 64 inputs, 10
// classes; IDX files are only read when the run starts), the IDX keys, and d = P.
void check_mlp_task(const Parser& p, const Tab& tab, TaskSpec& s) {
  const Where layers_at = p.seen(tab.key("layers"), tab.at);
  if (s.layers.size() < 2)
    p.fail_key(layers_at, tab.key("layers"), "needs at least two widths (inputs and classes)",
               "[inputs, hidden..., classes], e.g. [64, 20, 10]");
  if (s.dataset == "digits" &&
      (s.layers.front() != kDigitsFeatures || s.layers.back() != kDigitsClasses))
    p.fail_key(layers_at, tab.key("layers"),
               "the digits dataset has 64 features and 10 classes, but layers starts with " +
                   std::to_string(s.layers.front()) + " and ends with " +
                   std::to_string(s.layers.back()),
               "[64, hidden..., 10] for dataset = \"digits\"");
  if (s.dataset == "idx") {
    if (!p.given(tab.key("data_path")))
      p.fail_key(tab.at, tab.key("data_path"), "missing: dataset = \"idx\" reads the images file "
                 "named here", "a path to an idx3-ubyte file (raw or .gz)");
    if (!p.given(tab.key("labels_path")))
      p.fail_key(tab.at, tab.key("labels_path"), "missing: dataset = \"idx\" reads the labels "
                 "file named here", "a path to an idx1-ubyte file (raw or .gz)");
  } else if (p.given(tab.key("labels_path"))) {
    p.fail_key(p.seen(tab.key("labels_path"), tab.at), tab.key("labels_path"),
               "applies to dataset = \"idx\" only", "leave it out for dataset = \"digits\"");
  }
  try {
    s.dim = static_cast<int>(mlp_layout(s.layers).params);
  } catch (const std::invalid_argument& e) {
    p.fail_key(layers_at, tab.key("layers"), e.what(), "widths >= 1 with fewer than 2^31 parameters");
  }
}

struct ParsedTask {
  std::vector<TaskSpec> specs;  // one per value of a list-valued key (sigma)
  bool seed_given = false;
};

// Reads a task table: the family first (it decides the defaults and the keys that apply), then
// every key; a list-valued key expands the table when `lists_allowed` ([[train.task]]).
ParsedTask parse_task(Parser& p, const Tab& tab, bool lists_allowed) {
  const std::vector<Key<TaskSpec>>& keys = task_keys();
  p.check_keys(tab, children(keys, ""));
  const Key<TaskSpec>& family_key = *find_key(keys, "family");
  const toml::node* fam = tab.get("family");
  if (!fam)
    p.fail_key(tab.at, tab.key("family"), "missing: " + family_key.required, family_key.allowed);
  TaskSpec probe;
  family_key.read(p, Slot{*fam, tab.key("family"), p.at(*fam, tab.at), family_key.allowed}, probe);
  TaskSpec s = task_defaults(probe.family);
  const std::string fname = family_name(s.family);

  std::vector<std::string> applicable;
  for (const Key<TaskSpec>& k : keys)
    if (applies(k, s.family)) applicable.push_back(k.path);
  p.check_applicable(
      tab,
      [&](const std::string& name) {
        return std::find(applicable.begin(), applicable.end(), name) != applicable.end();
      },
      "does not apply to family " + fname, "keys for " + fname + ": " + join(applicable));

  // Lists of an expanding key: checked as lists now, their values read into copies below.
  std::vector<std::pair<const Key<TaskSpec>*, Slot>> lists;
  for (const Key<TaskSpec>& k : keys) {
    const toml::node* n = k.list_allowed.empty() ? nullptr : tab.get(k.path);
    if (!n) continue;
    const Slot v{*n, tab.key(k.path), p.at(*n, tab.at), lists_allowed ? k.list_allowed : k.allowed};
    if (n->is_array()) {
      if (!lists_allowed)
        p.fail(v, "a list of " + k.path + "s is only allowed in [[train.task]] (it expands into "
                  "one training task per " + k.path + ")");
      p.array(v, kMaxListLength);
      lists.emplace_back(&k, v);
    } else if (lists_allowed && !n->is_number()) {  // expanding keys are floats (real_or_list)
      p.wrong_type(v, "a float or a list of floats");
    }
  }
  read_table(p, tab, keys, s, "", [&](const std::string& path) {
    for (const auto& [k, v] : lists)
      if (k->path == path) return true;
    return false;
  });

  if (s.family == Family::rosenbrock && s.dim != 2)
    p.fail_key(p.seen(tab.key("dim"), tab.at), tab.key("dim"),
               "rosenbrock is defined for dim = 2 only, got " + std::to_string(s.dim), "2");
  if (s.family == Family::mlp) check_mlp_task(p, tab, s);
  const double bytes = static_cast<double>(s.instances) * s.dim * s.dim * 4.0;
  if (s.family != Family::mlp && bytes > kMemoryLimitBytes) {  // mlp: no d x d data
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.1f GiB", bytes / (1024.0 * 1024 * 1024));
    p.fail_key(p.seen(tab.key("instances"), p.seen(tab.key("dim"), tab.at)), tab.path,
               "instances * dim * dim * 4 bytes = " + std::to_string(s.instances) + " * " +
                   std::to_string(s.dim) + "^2 * 4 = " + buf +
                   " is more than this engine will allocate",
               "instances * dim^2 * 4 bytes <= 16 GiB");
  }

  ParsedTask out;
  out.seed_given = p.given(tab.key("seed"));
  out.specs = {s};
  for (const auto& [k, v] : lists) {
    const toml::array& a = *v.node.as_array();
    std::vector<TaskSpec> expanded;
    for (const TaskSpec& base : out.specs)
      for (size_t i = 0; i < a.size(); ++i) {
        TaskSpec e = base;
        k->read(p, p.element(v, a, i, k->allowed), e);
        expanded.push_back(e);
      }
    out.specs = std::move(expanded);
  }
  if (out.seed_given && !lists.empty())
    for (size_t i = 0; i < out.specs.size(); ++i) out.specs[i].seed = sigma_list_seed(s.seed, i);
  return out;
}

nlohmann::json task_json(const TaskSpec& s) {
  return to_json<TaskSpec>(task_keys(), s, [&](const Key<TaskSpec>& k) {
    return applies(k, s.family) && (k.path != "labels_path" || s.dataset == "idx");
  });
}

// [[train.task]]: D_train. Tasks without a seed get derived ones (run.seed is read by now).
Key<Config> train_tasks_key(std::string help) {
  Key<Config> k = make_key<Config>("train.task", "array of task tables", "one or more [[train.task]] tables",
                std::move(help));
  k.read = [](Parser& p, const Slot& v, Config& c) {
    if (!v.node.is_array()) {
      std::string problem = std::string("expected an array of tables, found ") + type_desc(v.node.type());
      if (v.node.is_table()) problem += " (write [[train.task]], not [train.task])";
      p.fail(v, problem);
    }
    const toml::array& a = *v.node.as_array();
    for (size_t i = 0; i < a.size(); ++i) {
      const toml::node& e = *a.get(i);
      const Slot ev{e, v.name + "[" + std::to_string(i) + "]", p.at(e, v.at), v.allowed};
      if (!e.is_table()) p.wrong_type(ev, "a table");
      const Tab tt{e.as_table(), ev.name, ev.at};
      ParsedTask pt = parse_task(p, tt, /*lists_allowed=*/true);
      for (TaskSpec& s : pt.specs) {
        if (!pt.seed_given) s.seed = default_train_task_seed(c.run.seed, c.train.tasks.size());
        c.train.tasks.push_back(s);
        if (c.train.tasks.size() > kMaxTrainTasks)
          p.fail_key(tt.at, ev.name,
                     "more than " + std::to_string(kMaxTrainTasks) +
                         " training tasks after expanding sigma lists",
                     "at most " + std::to_string(kMaxTrainTasks) + " tasks");
      }
    }
  };
  k.show = [](const Config& c) {
    nlohmann::json tasks = nlohmann::json::array();
    for (const TaskSpec& s : c.train.tasks) tasks.push_back(task_json(s));
    return tasks;
  };
  return k;
}

// [adapt.task], [eval.task]: one task; without a seed it gets default_seed(run.seed).
Key<Config> task_table(std::string path, Field<Config, TaskSpec> f,
                       uint64_t (*default_seed)(uint64_t), std::string help) {
  Key<Config> k = make_key<Config>(path, "task table",
                "a table [" + path + "] with at least family = " + quoted(names_of(kFamilies)),
                std::move(help));
  k.read = [f, default_seed](Parser& p, const Slot& v, Config& c) {
    const ParsedTask pt = parse_task(p, p.table(v), /*lists_allowed=*/false);
    f(c) = pt.specs.front();
    if (!pt.seed_given) f(c).seed = default_seed(c.run.seed);
  };
  k.show = [f](const Config& c) { return task_json(f(c)); };
  return k;
}

// ---- the config ---------------------------------------------------------------------------------------

std::string run_name_problem(const std::string& s) {
  const bool ok = !s.empty() && s.size() <= 100 && s != "." && s != ".." &&
                  std::all_of(s.begin(), s.end(), [](char c) {
                    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' ||
                           c == '-';
                  });
  return ok ? "" : "'" + printable(s) + "' is not a usable run name";
}

// Every key of a config, in the order of the file's sections; the walk reads them in this order.
const std::vector<Key<Config>>& config_keys() {
  using C = Config;
  static const std::vector<Key<Config>> keys = {
      text("run.name", field(&C::run, &RunConfig::name), run_name_problem,
           "1 to 100 letters, digits, '.', '_', '-' (not \".\" or \"..\")",
           "the run's label (plot titles)"),
      integer("run.seed", field(&C::run, &RunConfig::seed), {0, kInt64Max},
              "every derived seed comes from it (see below)"),
      choice("run.backend", field(&C::run, &RunConfig::backend), kBackends,
             "\"auto\": CUDA when a device is visible, else the CPU"),

      choice("optimizer.arch", field(&C::optimizer, &OptimizerHyper::arch), kArches,
             "the learned optimizer"),
      real("optimizer.dm_p", field(&C::optimizer, &OptimizerHyper::dm_p), kPositive,
           "DM-LSTM's log-and-sign preprocessing parameter p (paper 10, DeepMind's code 5); "
           "recorded but unused with rnnprop"),
      real("optimizer.dm_scale", field(&C::optimizer, &OptimizerHyper::dm_scale), kPositive,
           "DM-LSTM's output scale (paper 0.1, DeepMind's code 0.01); recorded but unused with "
           "rnnprop"),
      real("optimizer.output_scale", field(&C::optimizer, &OptimizerHyper::output_scale), kPositive,
           "RNNprop's update is output_scale x tanh(.), the largest step per coordinate (paper "
           "0.01); unused with dmlstm. Params files do not record it: adapt/eval take the config's"),

      integer("train.seed", field(&C::train, &TrainConfig::seed), {0, 1000000},
              "meta-training seed: initial weights, training and evaluation batches (not the test "
              "instances); `ml2o sweep --train-seeds` sets it per run"),
      integer("train.unroll", field(&C::train, &TrainConfig::unroll), {1, 1000},
              "steps per truncated unroll (one meta-update each)"),
      real("train.lr", field(&C::train, &TrainConfig::lr), kPositive, "Adam on the weights"),
      real("train.beta1", field(&C::train, &TrainConfig::beta1), kUnit, "Adam's β1"),
      real("train.beta2", field(&C::train, &TrainConfig::beta2), kUnit, "Adam's β2"),
      real("train.eps", field(&C::train, &TrainConfig::eps), kPositive, "Adam's ε"),
      integer("train.max_epochs", field(&C::train, &TrainConfig::max_epochs), {0, kIntMax},
              "epochs at most"),
      int_list("train.curriculum", field(&C::train, &TrainConfig::curriculum), {1, kIntMax},
               increasing_values("an integer >= train.unroll and a multiple of it"),
               "optimizee steps per trajectory, one curriculum stage each"),
      integer("train.eval_every", field(&C::train, &TrainConfig::eval_every), {1, kIntMax},
              "epochs between evaluations"),
      integer("train.eval_batches", field(&C::train, &TrainConfig::eval_batches), {1, kIntMax},
              "fresh batches per evaluation"),
      integer("train.patience", field(&C::train, &TrainConfig::patience), {1, kIntMax},
              "evaluations without improvement"),
      choice("train.grad_mode", field(&C::train, &TrainConfig::grad_mode), kGradModes,
             "\"gradient_constant\" (the reference), \"second_derivatives\" (∂g/∂x through the "
             "unroll)"),
      integer("train.max_skipped", field(&C::train, &TrainConfig::max_skipped), {1, kIntMax},
              "consecutive non-finite steps before the run stops"),
      train_tasks_key("D_train: task tables (below); a list of sigmas expands into one task per "
                      "sigma, at most 1000 tasks in all")
          .default_is("none"),

      integer("ml2o.inner_steps", field(&C::ml2o, &Ml2oConfig::inner_steps), {1, kIntMax},
              "SGD steps of the inner (support) update"),
      real("ml2o.inner_lr", field(&C::ml2o, &Ml2oConfig::inner_lr), kNonNegative,
           "α of the inner update"),
      choice("ml2o.meta_gradient", field(&C::ml2o, &Ml2oConfig::meta_gradient), kMetaGradients,
             "\"first_order\" (the reference), \"second_order\" (exact, through a Hessian-vector "
             "product)"),

      int_list("adapt.K", field(&C::adapt, &AdaptConfig::K), {0, 1'000'000}, distinct_values(),
               "numbers of Adam updates; one adaptation per K"),
      real("adapt.lr", field(&C::adapt, &AdaptConfig::lr), kPositive, "Adam's learning rate"),
      integer("adapt.unroll", field(&C::adapt, &AdaptConfig::unroll), {1, 1000},
              "steps per truncated unroll"),
      integer("adapt.trajectory", field(&C::adapt, &AdaptConfig::trajectory), {1, kIntMax},
              "steps before restarting from the same x0")
          .allowing("an integer >= adapt.unroll and a multiple of it"),
      choice_list("adapt.sources", field(&C::adapt, &AdaptConfig::sources), kSources,
                  distinct_values(),
                  "\"test\": adapt on the test instances; \"adapt\": on D_adapt's"),
      task_table("adapt.task", field(&C::adapt, &AdaptConfig::task), default_adapt_task_seed,
                 "D_adapt: a task table (below)")
          .default_is("the eval task with seed + 1000"),

      integer("eval.steps", field(&C::eval, &EvalConfig::steps), {1, kIntMax}, "optimizee steps"),
      integer("eval.report_every", field(&C::eval, &EvalConfig::report_every), {1, kIntMax},
              "mlp test task only: steps between reports of the full training loss and the test "
              "accuracy (and the last step)"),
      integer("eval.seeds", field(&C::eval, &EvalConfig::seeds), {1, 1000},
              "evaluation s uses eval.task.seed + s"),
      boolean("eval.in_distribution", field(&C::eval, &EvalConfig::in_distribution),
              "also evaluate the trained optimizers (frozen) and Adam on fresh instances of every "
              "[[train.task]]: summary.json \"in_distribution\", plot_in_distribution.png"),
      task_table("eval.task", field(&C::eval, &EvalConfig::task), default_eval_task_seed,
                 "D_test: a task table (below)")
          .needed("the test task D_test is required"),

      choice_list("baselines.optimizers", field(&C::baselines, &BaselinesConfig::optimizers),
                  kBaselines, distinct_values(), "\"ista\", \"fista\" for a LASSO test task only"),
      real_list("baselines.lrs", field(&C::baselines, &BaselinesConfig::lrs), kPositive, any_values(),
                "a sweep; the best final objective is reported (ISTA/FISTA use 1/L)"),
      real("baselines.momentum", field(&C::baselines, &BaselinesConfig::momentum), kUnit,
           "the momentum baseline's coefficient"),

      boolean("arms.vanilla", field(&C::arms, &ArmsConfig::vanilla),
              "random init + K adaptation steps"),
      boolean("arms.direct_transfer", field(&C::arms, &ArmsConfig::direct_transfer),
              "plain L2O trained on D_train, no adaptation"),
      boolean("arms.transfer_learning", field(&C::arms, &ArmsConfig::transfer_learning),
              "plain L2O trained on D_train + K adaptation steps"),
      boolean("arms.ml2o", field(&C::arms, &ArmsConfig::ml2o),
              "M-L2O trained on D_train + K adaptation steps"),
      boolean("arms.baselines", field(&C::arms, &ArmsConfig::baselines), "the [baselines] sweep"),
  };
  return keys;
}

// The reference's heading of each section.
const std::vector<std::pair<std::string, std::string>> kSectionTitles = {
    {"run", "the run"},
    {"optimizer", "the learned optimizer"},
    {"train", "meta-training (plain L2O, and the pretraining of M-L2O and transfer learning)"},
    {"ml2o", "M-L2O meta-training (Algorithm 1)"},
    {"adapt", "test-time adaptation (K Adam updates)"},
    {"eval", "evaluation with frozen weights"},
    {"baselines", "analytical optimizers on the test instances"},
    {"arms", "which parts of the protocol run"},
};

// ---- rules between keys (after the walk: every key has its value) -------------------------------------

Where table_at(const Parser& p, const std::string& table) { return p.seen(table, Where{1, 1}); }

void check_curriculum(const Parser& p, const TrainConfig& tr) {
  const std::string u = std::to_string(tr.unroll);
  if (!p.given("train.curriculum")) {
    for (int v : tr.curriculum)
      if (v % tr.unroll != 0 || v < tr.unroll)
        p.fail_key(p.seen("train.unroll", table_at(p, "train")), "train.curriculum",
                   "the default curriculum (100, 200, 500, ..., 3000) has stage " +
                       std::to_string(v) + ", not a multiple of train.unroll = " + u,
                   "set train.curriculum to multiples of train.unroll, or an unroll dividing 100");
    return;
  }
  const std::string allowed = "a non-empty, strictly increasing list of integers >= train.unroll (" +
                              u + ") that are multiples of it";
  for (size_t i = 0; i < tr.curriculum.size(); ++i) {
    const int v = tr.curriculum[i];
    const std::string key = "train.curriculum[" + std::to_string(i) + "]";
    const Where w = p.seen(key, table_at(p, "train"));
    if (v < tr.unroll)
      p.fail_key(w, key, std::to_string(v) + " is out of range", IntRange{tr.unroll, kIntMax}.describe());
    if (v % tr.unroll != 0)
      p.fail_key(w, key, std::to_string(v) + " is not a multiple of train.unroll = " + u, allowed);
  }
}

void check_trajectory(const Parser& p, const AdaptConfig& ac) {
  const std::string u = std::to_string(ac.unroll);
  if (!p.given("adapt.trajectory")) {
    if (ac.trajectory % ac.unroll != 0 || ac.trajectory < ac.unroll)
      p.fail_key(p.seen("adapt.unroll", table_at(p, "adapt")), "adapt.trajectory",
                 "the default trajectory (100) is not a multiple of adapt.unroll = " + u,
                 "set adapt.trajectory to a multiple of adapt.unroll");
    return;
  }
  const Where w = p.seen("adapt.trajectory", table_at(p, "adapt"));
  const std::string allowed = "a multiple of adapt.unroll (" + u + ") that is >= it";
  const std::string v = std::to_string(ac.trajectory);
  if (ac.trajectory < ac.unroll)
    p.fail_key(w, "adapt.trajectory", v + " is shorter than adapt.unroll = " + u, allowed);
  if (ac.trajectory % ac.unroll != 0)
    p.fail_key(w, "adapt.trajectory", v + " is not a multiple of adapt.unroll = " + u, allowed);
}

void check_baselines_fit_test_task(const Parser& p, const Config& cfg) {
  if (cfg.eval.task.family == Family::lasso) return;
  for (size_t i = 0; i < cfg.baselines.optimizers.size(); ++i) {
    const BaselineKind k = cfg.baselines.optimizers[i];
    if (k != BaselineKind::ista && k != BaselineKind::fista) continue;
    const std::string key = "baselines.optimizers[" + std::to_string(i) + "]";
    p.fail_key(p.seen(key, table_at(p, "baselines")), key,
               std::string(baseline_name(k)) + " solves LASSO only, but eval.task.family is " +
                   family_name(cfg.eval.task.family),
               "\"sgd\", \"momentum\", \"adam\", \"rmsprop\" for a non-LASSO test task");
  }
}

void check_some_arm(const Parser& p, const ArmsConfig& a) {
  if (a.vanilla || a.direct_transfer || a.transfer_learning || a.ml2o || a.baselines) return;
  p.fail_key(table_at(p, "arms"), "arms", "every arm is disabled, so the run would do nothing",
             "at least one of " + join(children(config_keys(), "arms.")) + " = true");
}

void check_meta_gradient(const Parser& p, const Config& cfg) {
  if (cfg.ml2o.meta_gradient == MetaGradient::second_order &&
      cfg.train.grad_mode == GradMode::second_derivatives)
    p.fail_key(p.seen("ml2o.meta_gradient", table_at(p, "ml2o")), "ml2o.meta_gradient",
               "\"second_order\" together with train.grad_mode = \"second_derivatives\" is not "
               "supported (it would need third derivatives of the optimizee through the unroll)",
               "\"first_order\" with any grad_mode, or \"second_order\" with train.grad_mode = "
               "\"gradient_constant\"");
}

void check_training_data(const Parser& p, const Config& cfg) {
  const ArmsConfig& a = cfg.arms;
  if (!cfg.train.tasks.empty() || !(a.direct_transfer || a.transfer_learning || a.ml2o)) return;
  std::vector<std::string> on;
  if (a.direct_transfer) on.push_back("direct_transfer");
  if (a.transfer_learning) on.push_back("transfer_learning");
  if (a.ml2o) on.push_back("ml2o");
  p.fail_key(p.seen("train.task", table_at(p, "train")), "train.task",
             "missing: the arms " + join(on) + " train on D_train, which is empty",
             "one or more [[train.task]] tables, or set arms." + join(on, ", arms.") + " = false");
}

// The mlp family has gradients but no Hessian-vector products, and only the CPU backend runs it.
void check_mlp_rules(const Parser& p, const Config& cfg) {
  bool train_mlp = false;
  for (const TaskSpec& t : cfg.train.tasks) train_mlp = train_mlp || t.family == Family::mlp;
  const bool any = uses_mlp(cfg);
  if (any && cfg.train.grad_mode == GradMode::second_derivatives)
    p.fail_key(p.seen("train.grad_mode", table_at(p, "train")), "train.grad_mode",
               "\"second_derivatives\" needs the optimizee's Hessian, which the mlp family does "
               "not provide",
               "\"gradient_constant\" when any task is mlp");
  if (train_mlp && cfg.arms.ml2o && cfg.ml2o.meta_gradient == MetaGradient::second_order)
    p.fail_key(p.seen("ml2o.meta_gradient", table_at(p, "ml2o")), "ml2o.meta_gradient",
               "\"second_order\" needs Hessian-vector products of the unroll, which the mlp "
               "family does not provide",
               "\"first_order\" when a [[train.task]] is mlp (or arms.ml2o = false)");
  if (any && cfg.run.backend == "cuda")
    p.fail_key(p.seen("run.backend", table_at(p, "run")), "run.backend",
               "the cuda backend does not run the mlp family yet",
               "\"cpu\", or \"auto\" (which picks the CPU for mlp runs)");
  if (cfg.eval.task.family != Family::mlp && p.given("eval.report_every"))
    p.fail_key(p.seen("eval.report_every", table_at(p, "eval")), "eval.report_every",
               std::string("applies to an mlp test task only, but eval.task.family is ") +
                   family_name(cfg.eval.task.family),
               "leave it out");
}

Config parse_document(const toml::table& doc, const std::string& source) {
  Parser p(source);
  Config cfg;
  cfg.path = source;
  read_table(p, Tab{&doc, "", Where{1, 1}}, config_keys(), cfg);
  if (!p.given("adapt.task")) {  // D_adapt defaults to D_test's distribution, other instances
    cfg.adapt.task = cfg.eval.task;
    cfg.adapt.task.seed = adapt_seed_from_eval(cfg.eval.task.seed);
  }
  check_curriculum(p, cfg.train);
  check_trajectory(p, cfg.adapt);
  check_baselines_fit_test_task(p, cfg);
  check_some_arm(p, cfg.arms);
  check_meta_gradient(p, cfg);
  check_training_data(p, cfg);
  check_mlp_rules(p, cfg);
  // Settings only (not the file's path): two files with the same settings give the same json,
  // which is what a resumed run compares.
  // eval.report_every exists for an mlp test task only (check_mlp_rules), so only then is it part
  // of the settings.
  cfg.json = to_json<Config>(config_keys(), cfg, [&](const Key<Config>& k) {
    return k.path != "eval.report_every" || cfg.eval.task.family == Family::mlp;
  });
  return cfg;
}

// ---- the reference -------------------------------------------------------------------------------------

std::string literal(const nlohmann::json& v) { return "`" + toml_literal(v) + "`"; }

// A task key's default: one value, or the value of each family where they differ.
std::string task_default(const Key<TaskSpec>& k) {
  std::vector<std::pair<std::string, std::vector<std::string>>> by_value;
  for (const auto& [name, f] : kFamilies) {
    if (!applies(k, f)) continue;
    const std::string v = literal(k.show(task_defaults(f)));
    auto it = std::find_if(by_value.begin(), by_value.end(), [&](auto& e) { return e.first == v; });
    if (it == by_value.end()) by_value.push_back({v, {name}});
    else it->second.push_back(name);
  }
  if (by_value.size() == 1) return by_value.front().first;
  std::vector<std::string> parts;
  for (const auto& [v, fams] : by_value) parts.push_back(v + " (" + join(fams) + ")");
  return join(parts, "; ");
}

std::string families_of(const Key<TaskSpec>& k) {
  std::vector<std::string> names;
  for (const auto& [name, f] : kFamilies)
    if (applies(k, f)) names.push_back(name);
  return names.size() == kFamilies.size() ? std::string("all") : join(names);
}

}  // namespace

bool uses_mlp(const Config& cfg) {
  bool any = cfg.eval.task.family == Family::mlp || cfg.adapt.task.family == Family::mlp;
  for (const TaskSpec& t : cfg.train.tasks) any = any || t.family == Family::mlp;
  return any;
}

std::vector<int> mlp_report_steps(const EvalConfig& eval) {
  std::vector<int> steps;
  for (int s = 0; s < eval.steps; s += eval.report_every) steps.push_back(s);
  steps.push_back(eval.steps);
  return steps;
}

std::string config_reference_markdown() {
  const Config defaults;
  std::string out;
  for (const std::string& section : children(config_keys(), "")) {
    std::string title;
    for (const auto& [s, t] : kSectionTitles)
      if (s == section) title = t;
    out += "## `[" + section + "]`" + (title.empty() ? "" : ": " + title) + "\n\n";
    out += markdown_table(rows<Config>(config_keys(), section + ".",
                                       [&](const Key<Config>& k) { return literal(k.show(defaults)); }),
                          false);
    out += "\n";
  }
  out += "## Task tables (`[[train.task]]`, `[adapt.task]`, `[eval.task]`)\n\n";
  std::vector<Row> task_rows = rows<TaskSpec>(task_keys(), "", task_default);
  for (size_t i = 0; i < task_rows.size(); ++i) task_rows[i].families = families_of(task_keys()[i]);
  out += markdown_table(task_rows, true);
  return out;
}

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
  Config cfg = parse_document(doc, source_name);
  return cfg;
}

namespace {
// A TOML value for the resolved config: like toml_literal, with floats always written as floats.
std::string resolved_literal(const nlohmann::json& v) {
  if (v.is_number_float()) {
    std::string t = fmt_double(v.get<double>());
    if (t.find_first_of(".eE") == std::string::npos) t += ".0";
    return t;
  }
  if (v.is_array()) {
    std::vector<std::string> parts;
    for (const auto& e : v) parts.push_back(resolved_literal(e));
    return "[" + join(parts) + "]";
  }
  return toml_literal(v);
}

void write_table(std::string& out, const std::string& header, const nlohmann::json& t) {
  out += header + "\n";
  for (const auto& [k, v] : t.items())
    if (!v.is_object() && !(v.is_array() && !v.empty() && v.front().is_object()))
      out += k + " = " + resolved_literal(v) + "\n";
}
}  // namespace

std::string config_to_toml(const Config& cfg) {
  std::string out = "# The resolved config of this run: every key, with defaults, derived seeds and\n"
                    "# command-line overrides filled in. `ml2o run` reads it like any config.\n";
  for (const auto& [section, title] : kSectionTitles) {
    if (!cfg.json.contains(section)) continue;
    const nlohmann::json& sec = cfg.json.at(section);
    out += "\n";
    write_table(out, "[" + section + "]", sec);
    for (const auto& [k, v] : sec.items()) {
      if (v.is_object()) write_table(out, "[" + section + "." + k + "]", v);
      if (v.is_array() && !v.empty() && v.front().is_object())
        for (const auto& e : v) write_table(out, "[[" + section + "." + k + "]]", e);
    }
  }
  return out;
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
