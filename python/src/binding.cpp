// ml2o._core: the engine for Python. The package python/ml2o wraps this module; the commands are
// the CLI's own (ml2o/commands.hpp), so the binding adds only the conversions between Python and
// the engine, the interrupt handling, and the checks of arrays it is handed.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>

#include "ml2o/commands.hpp"
#include "ml2o/external.hpp"
#include "ml2o/io.hpp"
#include "ml2o/output_claim.hpp"

namespace py = pybind11;
using namespace ml2o;

namespace {

// ---- Ctrl-C during a long call --------------------------------------------------------------
// While the engine runs (GIL released), SIGINT sets the engine's flag as in the CLI: training
// checkpoints and stops, the protocol stops between arms. Python's handler is restored after, and
// the call raises KeyboardInterrupt.
void on_sigint(int) { g_interrupt_requested.store(true); }

bool in_main_thread() {
  const py::module_ threading = py::module_::import("threading");
  return threading.attr("current_thread")().is(threading.attr("main_thread")());
}

class EngineCall {
 public:
  EngineCall() : main_(in_main_thread()) {
    g_interrupt_requested.store(false);
    if (main_) previous_ = std::signal(SIGINT, on_sigint);
  }
  ~EngineCall() {
    if (main_) std::signal(SIGINT, previous_);
  }
  // After a call that returned normally: an interrupt it did not act on still raises.
  void raise_if_interrupted(const std::string& what) const {
    if (g_interrupt_requested.exchange(false)) {
      PyErr_SetString(PyExc_KeyboardInterrupt, ("interrupted; " + what + " finished first").c_str());
      throw py::error_already_set();
    }
  }

 private:
  bool main_;
  void (*previous_)(int) = SIG_DFL;
};

// Runs fn without the GIL, inside an EngineCall.
template <class Fn> auto engine_call(const std::string& what, Fn&& fn) {
  EngineCall call;
  auto result = [&] {
    py::gil_scoped_release release;
    return fn();
  }();
  call.raise_if_interrupted(what);
  return result;
}

// ---- arrays ---------------------------------------------------------------------------------------
std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += std::to_string(a.shape(i)) + (a.ndim() == 1 ? "," : i + 1 < a.ndim() ? ", " : "");
  return s + ")";
}

// A float32, C-contiguous (and, when asked, writable) numpy array, or ValueError naming `name`.
py::array checked_f32(const py::handle& obj, const std::string& name, bool writable) {
  if (!py::isinstance<py::array>(obj))
    throw py::value_error(name + ": expected a numpy float32 array, got " +
                          std::string(py::str(py::type::of(obj).attr("__name__"))));
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().is(py::dtype::of<float>()))
    throw py::value_error(name + ": expected dtype float32, got " + std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(name + ": the array is not C-contiguous (pass np.ascontiguousarray(...))");
  if (writable && !a.writeable()) throw py::value_error(name + ": the array is read-only");
  return a;
}

std::vector<float> to_vector(const py::array& a) {
  const float* p = static_cast<const float*>(a.data());
  return std::vector<float>(p, p + a.size());
}

py::array_t<float> to_array(const std::vector<float>& v) {
  py::array_t<float> a(py::ssize_t(v.size()));
  std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(float));
  return a;
}

py::array_t<double> curves_array(const std::vector<std::vector<double>>& curves) {
  const size_t rows = curves.size(), cols = rows ? curves[0].size() : 0;
  py::array_t<double> a({py::ssize_t(rows), py::ssize_t(cols)});
  auto m = a.mutable_unchecked<2>();
  for (size_t s = 0; s < rows; ++s)
    for (size_t t = 0; t < cols; ++t) m(s, t) = curves[s][t];
  return a;
}

py::object json_to_py(const nlohmann::json& j) {
  return py::module_::import("json").attr("loads")(j.dump());
}

Method parse_method(const std::string& m) {
  if (m == "l2o") return Method::l2o;
  if (m == "ml2o") return Method::ml2o;
  throw py::value_error("method '" + m + "': allowed: l2o, ml2o");
}

AdaptSource parse_source(const std::string& s) {
  if (s == "test") return AdaptSource::test;
  if (s == "adapt") return AdaptSource::adapt;
  throw py::value_error("source '" + s + "': allowed: test, adapt");
}

// The objective of adapt_external: a Python callable x -> (loss, grad), called with the GIL.
ExternalObjective python_objective(const py::function& fn) {
  return [fn](const std::vector<float>& x, std::vector<float>& g) -> float {
    py::gil_scoped_acquire gil;
    const py::object r = fn(to_array(x));
    if (!py::isinstance<py::tuple>(r) || py::len(r) != 2)
      throw py::value_error("objective: must return (loss, grad), got " +
                            std::string(py::str(py::type::of(r).attr("__name__"))));
    const py::tuple t = r.cast<py::tuple>();
    const float loss = t[0].cast<float>();
    const py::array grad = py::module_::import("numpy").attr("asarray")(t[1], "float32").attr("ravel")();
    if (size_t(grad.size()) != x.size())
      throw py::value_error("objective: the gradient has " + std::to_string(grad.size()) +
                            " values for " + std::to_string(x.size()) + " parameters");
    g = to_vector(py::module_::import("numpy").attr("ascontiguousarray")(grad));
    return loss;
  };
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "ml2o engine (see the package ml2o; docs/python.md)";
  static py::exception<DivergenceError> divergence(m, "DivergenceError", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Interrupted& e) {
      PyErr_SetString(PyExc_KeyboardInterrupt, e.what());
    } catch (const FormatError& e) {  // ConfigError too: bad input
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const IoError& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    } catch (const std::filesystem::filesystem_error& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    } catch (const DivergenceError& e) {
      divergence(e.what());
    }
  });
  m.attr("version") = engine_version();
  m.attr("COORD_STATE_FLOATS") = kCoordStateFloats;

  py::class_<Config>(m, "Config", "A validated experiment config (ml2o.load_config)")
      .def_readonly("path", &Config::path, "The file (or name) it was read from")
      .def_property_readonly("toml", [](const Config& c) { return config_to_toml(c); },
                             "The resolved config as TOML text (what a run saves as config.toml)")
      .def_property_readonly("json", [](const Config& c) { return json_to_py(c.json); },
                             "The resolved config (defaults filled in), as in summary.json")
      .def("__repr__", [](const Config& c) { return "<ml2o.Config " + c.path + ">"; });
  m.def("load_config_file", [](const std::string& path, const std::string& backend) {
    return load_with_overrides(path, ConfigOverrides{backend, {}});
  }, py::arg("path"), py::arg("backend") = "");
  m.def("parse_config_text", [](const std::string& text, const std::string& source, const std::string& backend) {
    return parse_with_overrides(text, source, ConfigOverrides{backend, {}});
  }, py::arg("text"), py::arg("source"), py::arg("backend") = "");

  py::class_<LearnedOptimizer>(m, "Weights", "A learned optimizer's architecture and weights")
      .def_static("load", &load_params, py::arg("path"))
      .def_static("init", [](const std::string& arch, uint64_t seed) {
            OptimizerHyper h;
            if (!parse_arch(arch, &h.arch))
              throw py::value_error("arch '" + arch + "': allowed: " + kArchNames);
            return init_optimizer(h, seed);
          }, py::arg("arch"), py::arg("seed"))
      .def_static("from_bytes", [](const py::bytes& b, const std::string& source) {
            return params_from_bytes(std::string(b), source);
          }, py::arg("data"), py::arg("source") = "<bytes>")
      .def("to_bytes", [](const LearnedOptimizer& o) { return py::bytes(params_to_bytes(o)); })
      .def("save", [](const LearnedOptimizer& o, const std::string& path) { save_params(path, o); })
      .def_property_readonly("arch", [](const LearnedOptimizer& o) { return std::string(arch_name(o.hyper.arch)); })
      .def_property_readonly("weights", [](const LearnedOptimizer& o) { return to_array(o.weights); },
                             "A copy of the flat float32 weight vector");
  m.def("param_count", [](const std::string& arch) {
    Arch a;
    if (!parse_arch(arch, &a)) throw py::value_error("arch '" + arch + "': allowed: " + kArchNames);
    return param_count(a);
  });

  // ---- the CLI's commands --------------------------------------------------------------------
  m.def("run", [](const Config& cfg, const std::string& out, bool resume, double every) {
    engine_call("the run", [&] { run_command(cfg, RunOptions{out, resume, every, "", {}}); return 0; });
  }, py::arg("cfg"), py::arg("out"), py::arg("resume"), py::arg("checkpoint_every"));
  m.def("train", [](const Config& cfg, const std::string& method, const std::string& out,
                    const LearnedOptimizer* init, bool resume, double every) {
    const Method meth = parse_method(method);
    const TrainerState st = engine_call("training", [&] {
      return train_command(cfg, meth, init, RunOptions{out, resume, every, "", {}});
    });
    py::dict summary;
    summary["epochs"] = st.epoch;
    summary["stage"] = st.stage;
    summary["evaluations"] = st.eval_history;
    summary["meta_loss_per_epoch"] = st.loss_history;
    summary["skipped_steps"] = st.skipped_steps;
    return py::make_tuple(st.opt, summary);
  }, py::arg("cfg"), py::arg("method"), py::arg("out"), py::arg("init"), py::arg("resume"),
     py::arg("checkpoint_every"));
  m.def("adapt", [](const Config& cfg, const LearnedOptimizer& start, const std::string& params_source,
                    int K, const std::string& source, int seed_index) {
    const AdaptSource src = parse_source(source);
    const AdaptResult r = engine_call("adaptation", [&] {
      return adapt_command(cfg, start, params_source, K, src, seed_index);
    });
    return py::make_tuple(r.opt, r.skipped);
  }, py::arg("cfg"), py::arg("start"), py::arg("params_source"), py::arg("K"), py::arg("source"),
     py::arg("seed_index"));
  m.def("evaluate", [](const Config& cfg, const LearnedOptimizer& opt, const std::string& params_source,
                       int steps, const std::string& out) {
    const auto curves = engine_call("evaluation", [&] {
      std::optional<OutputClaim> claim;  // the CLI's rules for --out
      if (!out.empty()) claim.emplace(OutputClaim::directory(out, "eval", false, false));
      auto c = eval_command(cfg, opt, params_source, steps);
      if (claim) write_file_atomic((claim->path() / "curves.csv").string(), eval_curves_csv(c));
      return c;
    });
    return curves_array(curves);
  }, py::arg("cfg"), py::arg("opt"), py::arg("params_source"), py::arg("steps"), py::arg("out"));
  m.def("baseline", [](const Config& cfg, const std::string& optimizer, double lr, int steps,
                       const std::string& task, int seed_index, const std::string& out) {
    const auto curve = engine_call("the baseline", [&] {
      std::optional<OutputClaim> claim;  // the CLI's rules for --out
      if (!out.empty()) claim.emplace(OutputClaim::directory(out, "baseline", false, false));
      auto c = baseline_command(cfg, optimizer, lr, steps, task, seed_index);
      if (claim) write_file_atomic((claim->path() / "baseline.csv").string(), baseline_csv(c));
      return c;
    });
    return py::array_t<double>(py::ssize_t(curve.size()), curve.data());
  }, py::arg("cfg"), py::arg("optimizer"), py::arg("lr"), py::arg("steps"), py::arg("task"),
     py::arg("seed_index"), py::arg("out"));
  m.def("sample_task", [](const Config& cfg, const std::string& role, int seed_index) {
    if (seed_index < 0) throw py::value_error("seed_index must be >= 0");
    Task<float> t;
    if (role == "eval") t = test_task(cfg, seed_index);
    else if (role == "adapt") t = adapt_task(cfg, AdaptSource::adapt, seed_index);
    else throw py::value_error("role '" + role + "': allowed: eval, adapt");
    const py::ssize_t N = t.spec.instances, d = t.spec.dim;
    py::dict out;
    out["family"] = std::string(family_name(t.spec.family));
    out["lam"] = t.spec.lam;
    out["alpha"] = t.spec.alpha;
    if (!t.A.empty()) {
      py::array_t<float> A({N, d, d});
      std::memcpy(A.mutable_data(), t.A.data(), t.A.size() * sizeof(float));
      out["A"] = A;
    }
    if (!t.b.empty()) out["b"] = to_array(t.b).attr("reshape")(N, d);
    out["x0"] = to_array(t.x0).attr("reshape")(N, d);
    return out;
  }, py::arg("cfg"), py::arg("role"), py::arg("seed_index"));

  // ---- a learned optimizer on the user's arrays ----------------------------------------------
  m.def("step", [](const LearnedOptimizer& opt, const py::object& params, const py::object& grads,
                   const py::object& state, int64_t k) {
    py::array x = checked_f32(params, "params", true);
    const py::array g = checked_f32(grads, "grads", false);
    py::array s = checked_f32(state, "state", true);
    if (x.ndim() != g.ndim() || !std::equal(x.shape(), x.shape() + x.ndim(), g.shape()))
      throw py::value_error("grads: shape " + shape_of(g) + " does not match params' " + shape_of(x));
    if (s.ndim() != 2 || s.shape(0) != x.size() || s.shape(1) != kCoordStateFloats)
      throw py::value_error("state: shape " + shape_of(s) + ", expected (" + std::to_string(x.size()) +
                            ", " + std::to_string(kCoordStateFloats) + ")");
    if (k < 1) throw py::value_error("step: k must be >= 1, got " + std::to_string(k));
    float* xp = static_cast<float*>(x.mutable_data());
    const float* gp = static_cast<const float*>(g.data());
    auto* sp = reinterpret_cast<CoordState<float>*>(s.mutable_data());
    const int64_t n = x.size();
    py::gil_scoped_release release;
    learned_step(opt, xp, gp, sp, n, k);
  }, py::arg("opt"), py::arg("params"), py::arg("grads"), py::arg("state"), py::arg("k"));

  m.def("adapt_external", [](const LearnedOptimizer& start, const py::object& x0, const py::function& objective,
                             int K, double lr, double beta1, double beta2, double eps, int unroll, int trajectory) {
    const std::vector<float> x = to_vector(checked_f32(x0, "x0", false));
    const AdaptPlan plan{AdamHyper{lr, beta1, beta2, eps}, unroll, trajectory, GradMode::gradient_constant};
    const ExternalObjective f = python_objective(objective);
    AdaptResult r;
    {
      py::gil_scoped_release release;
      r = adapt_external(plan, start, x, f, K);
    }
    return py::make_tuple(r.opt, r.skipped);
  }, py::arg("start"), py::arg("x0"), py::arg("objective"), py::arg("K"), py::arg("lr"), py::arg("beta1"),
     py::arg("beta2"), py::arg("eps"), py::arg("unroll"), py::arg("trajectory"));
}
