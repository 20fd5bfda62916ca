// The engine's side of the peers benchmark (bench/peers/): exports a case that the PyTorch and
// JAX peers must reproduce, and times the engine's meta-gradient the way the peers time theirs.
//
//   peer_case export --out DIR [--instances N] [--dim D] [--T T] [--seed S] [--sigma SIGMA]
//   peer_case bench [--backend cpu|cuda] [--coordinates C,C,...] [--dim D] [--T T] [--min-s S]
//
// The workload (docs/method.md section 2): RNNprop on LASSO (lam = 0.005), T steps from x0 with fresh state
// (global step k = 1), the optimizee gradient as a constant, meta-loss = sum over t = 0..T of the
// mean over instances of f(x_t), meta-gradient = d(meta-loss)/d(weights).
//
// export writes into DIR (created, or empty): weights.npy (float32 [6641], RnnpropLayout order),
// params.ml2o (the same weights as a params file), A.npy [N, D, D], b.npy [N, D], x0.npy [N, D]
// (float32), the CPU backend's result engine_grad.npy (float32), engine_step_loss.npy (float64
// [T + 1]), the double oracle's (unroll_cpu<double> on the same float inputs) oracle_grad.npy and
// oracle_step_loss.npy (float64), and case.json (sizes, constants, both meta-losses).
// The weights are init_optimizer(seed) with the zero-initialised linear biases (b_in, b_out) drawn
// too, so that every tensor of the check is non-zero.
//
// bench prints one JSON line per size: coordinates = instances * D with instances =
// floor(C / D); one call = Backend::unroll with the meta-gradient of one task from a fresh
// trajectory (restarted outside the timed region; task, weights and gradient stay on the backend,
// as the peers' stay on their device); one warm-up call, then calls until >= 3 and >= min-s
// seconds; the median is reported (wall, and the process's CPU time as cpu_ms_per_iter).
#include <omp.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "ml2o/backend.hpp"
#include "ml2o/lopt.hpp"
#include "ml2o/rng.hpp"

namespace {

using namespace ml2o;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
static_assert(std::endian::native == std::endian::little, ".npy files are written little-endian");

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

constexpr const char* kUsage =
    "usage: peer_case export --out DIR [--instances N=16] [--dim D=10] [--T T=20] [--seed S=7]\n"
    "                        [--sigma SIGMA=1.0]\n"
    "       peer_case bench [--backend cpu|cuda] [--coordinates C,C,...=120,1020,8190,65530]\n"
    "                       [--dim D=10] [--T T=20] [--min-s S=1.0]\n";

// NumPy's .npy format, version 1.0: magic, header length, a Python dict literal padded with
// spaces to a multiple of 64 bytes, then the raw little-endian data.
template <class S>
void write_npy(const fs::path& path, const std::vector<S>& data, const std::vector<int64_t>& shape) {
  static_assert(sizeof(S) == 4 || sizeof(S) == 8, "float32 or float64");
  std::string dims;
  for (int64_t s : shape) dims += std::to_string(s) + ",";  // (3,) and (3,4,) are both valid
  std::string header = std::string("{'descr': '<f") + (sizeof(S) == 4 ? "4" : "8") +
                       "', 'fortran_order': False, 'shape': (" + dims + "), }";
  const size_t unpadded = 10 + header.size() + 1;
  header += std::string((64 - unpadded % 64) % 64, ' ') + "\n";
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  const uint16_t len = static_cast<uint16_t>(header.size());
  f.write("\x93NUMPY\x01\x00", 8);
  f.write(reinterpret_cast<const char*>(&len), 2);
  f.write(header.data(), std::streamsize(header.size()));
  f.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size() * sizeof(S)));
  if (!f) throw std::runtime_error("cannot write " + path.string());
}

int64_t to_int(const std::string& flag, const std::string& v, int64_t lo) {
  size_t used = 0;
  int64_t x = 0;
  try {
    x = std::stoll(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || x < lo)
    throw UsageError(flag + " must be an integer >= " + std::to_string(lo) + ", not '" + v + "'");
  return x;
}

double to_double(const std::string& flag, const std::string& v) {
  size_t used = 0;
  double x = 0;
  try {
    x = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || !(x > 0)) throw UsageError(flag + " must be a number > 0, not '" + v + "'");
  return x;
}

// The exported weights: the engine's initialisation (docs/method.md section 2), plus draws for the linear biases it leaves at 0.
std::vector<float> case_weights(uint64_t seed) {
  OptimizerHyper hyper;
  std::vector<float> w = init_optimizer(hyper, seed).weights;
  using L = RnnpropLayout;
  for (int h = 0; h < kHidden; ++h)
    w[L::b_in + h] = static_cast<float>(0.1 * normal01(seed, Stream::weights, 1000, h));
  w[L::b_out] = static_cast<float>(0.1 * normal01(seed, Stream::weights, 1001, 0));
  return w;
}

TaskSpec lasso_spec(int d, int64_t instances, uint64_t seed, double sigma) {
  TaskSpec s;
  s.family = Family::lasso;
  s.dim = d;
  s.instances = instances;
  s.seed = seed;
  s.sigma = sigma;
  return s;
}

// One meta-gradient unroll of a task on a backend, from a fresh trajectory each time: the task,
// trajectory, weights and gradient live on the backend (device memory for CUDA) between calls.
struct EngineCall {
  const OptimizerHyper hyper;
  Backend& be;
  std::unique_ptr<BackendTask> task;
  std::unique_ptr<BackendTrajectory> traj;
  std::unique_ptr<BackendVector> w, grad;

  EngineCall(Backend& b, const std::vector<float>& weights, const Task<float>& t)
      : be(b), task(b.upload(t)), traj(b.trajectory(*task)), w(b.vector(weights.size())),
        grad(b.vector(weights.size())) {
    w->write(weights);
  }
  void restart() const { traj->restart(); }  // x0, zero state, k = 1
  UnrollLoss run(int T) const {
    const UnrollItem item{task.get(), traj.get(), w.get(), grad.get()};
    return be.unroll(hyper, std::span<const UnrollItem>(&item, 1), T, GradMode::gradient_constant)[0];
  }
};

int run_export(const fs::path& out, int64_t N, int d, int T, uint64_t seed, double sigma) {
  if (fs::exists(out) && !(fs::is_directory(out) && fs::is_empty(out)))
    throw UsageError("--out " + out.string() + " exists and is not an empty directory");
  fs::create_directories(out);
  const OptimizerHyper hyper;
  const std::vector<float> w = case_weights(seed);
  const Task<float> task = sample_task<float>(lasso_spec(d, N, seed, sigma));

  const auto be = make_backend("cpu");
  const EngineCall call(*be, w, task);
  const UnrollLoss eng = call.run(T);
  const std::vector<float> eng_grad = call.grad->read();
  const Task<double> task64 = cast_task<double>(task);
  Trajectory<double> traj64 = start_trajectory(task64.x0);
  const std::vector<double> w64(w.begin(), w.end());
  const UnrollResult<double> ora =
      unroll_cpu(hyper, w64, view_of(task64), traj64, T, GradMode::gradient_constant);

  const int64_t P = int64_t(w.size());
  write_npy(out / "weights.npy", w, {P});
  save_params((out / "params.ml2o").string(), LearnedOptimizer{hyper, w});
  write_npy(out / "A.npy", task.A, {N, d, d});
  write_npy(out / "b.npy", task.b, {N, d});
  write_npy(out / "x0.npy", task.x0, {N, d});
  write_npy(out / "engine_grad.npy", eng_grad, {P});
  write_npy(out / "engine_step_loss.npy", eng.step_loss, {int64_t(T) + 1});
  write_npy(out / "oracle_grad.npy", ora.grad, {P});
  write_npy(out / "oracle_step_loss.npy", ora.step_loss, {int64_t(T) + 1});
  using L = RnnpropLayout;
  const nlohmann::json c = {
      {"arch", "rnnprop"}, {"family", "lasso"}, {"instances", N}, {"dim", d}, {"T", T},
      {"k0", 1}, {"seed", seed}, {"sigma", sigma}, {"lam", task.spec.lam},
      {"grad_mode", "gradient_constant"},
      {"engine_meta_loss", double(eng.meta_loss)}, {"oracle_meta_loss", ora.meta_loss},
      {"layout", {{"W_in", {L::W_in, 2, kHidden}}, {"b_in", {L::b_in, kHidden}},
                  {"W1", {L::W1, 2 * kHidden, kGates}}, {"b1", {L::b1, kGates}},
                  {"W2", {L::W2, 2 * kHidden, kGates}}, {"b2", {L::b2, kGates}},
                  {"W_out", {L::W_out, kHidden, 1}}, {"b_out", {L::b_out, 1}}}}};
  std::ofstream(out / "case.json") << c.dump(2) << "\n";
  std::cerr << "peer_case: wrote " << out.string() << " (" << N << " instances x d = " << d
            << ", T = " << T << "; meta-loss engine " << eng.meta_loss << ", oracle "
            << ora.meta_loss << ")\n";
  return 0;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// CPU seconds of the process, all threads (with one thread: the work done, whatever else runs).
double process_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

nlohmann::json bench_one(Backend& be, int64_t target, int d, int T, double min_s) {
  const std::vector<float> w = case_weights(7);
  const int64_t N = std::max<int64_t>(1, target / d);
  const EngineCall call(be, w, sample_task<float>(lasso_spec(d, N, 7, 1.0)));
  const auto t_warm = Clock::now();
  (void)call.run(T);
  const double warm_s = std::chrono::duration<double>(Clock::now() - t_warm).count();
  std::vector<double> wall, cpu;
  double total = 0.0;
  while (wall.size() < 3 || (total < min_s && wall.size() < 2000)) {
    call.restart();
    const double c0 = process_cpu_s();
    const auto t0 = Clock::now();
    (void)call.run(T);
    wall.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    cpu.push_back(process_cpu_s() - c0);
    total += wall.back();
  }
  const double s = median(wall);
  const int64_t coords = N * d;
  return {{"bench", "peers"}, {"peer", "ml2o"}, {"device", be.name()},
          {"device_name", be.device()}, {"coordinates", coords}, {"instances", N}, {"d", d},
          {"T", T}, {"repeats", wall.size()}, {"warmup_s", warm_s}, {"ms_per_iter", s * 1e3},
          {"coord_steps_per_s", double(coords) * T / s}, {"threads", omp_get_max_threads()},
          {"cpu_ms_per_iter", median(cpu) * 1e3}, {"version", ML2O_VERSION}};
}

int run_bench(const std::string& which, const std::vector<int64_t>& sizes, int d, int T,
              double min_s) {
  auto be = make_backend(which);
  int failed = 0;
  for (const int64_t c : sizes) {
    try {
      std::cout << bench_one(*be, c, d, T, min_s).dump() << std::endl;
    } catch (const std::exception& e) {  // out of memory, say: reported, the other sizes still run
      ++failed;
      std::cerr << "peer_case: " << c << " coordinates failed: " << e.what() << "\n";
      std::cout << nlohmann::json{{"bench", "peers"}, {"peer", "ml2o"}, {"device", which},
                                  {"coordinates", c}, {"error", e.what()}}
                       .dump()
                << std::endl;
    }
  }
  return failed ? 1 : 0;
}

std::vector<int64_t> parse_sizes(const std::string& v) {
  std::vector<int64_t> out;
  std::stringstream ss(v);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(to_int("--coordinates", item, 1));
  if (out.empty()) throw UsageError("--coordinates needs at least one size");
  return out;
}

int run(int argc, char** argv) {
  if (argc < 2) throw UsageError("missing command (export or bench)");
  const std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h") {
    std::cout << kUsage;
    return 0;
  }
  if (cmd != "export" && cmd != "bench")
    throw UsageError("unknown command '" + cmd + "' (allowed: export, bench)");
  std::string out, backend = "cpu";
  std::vector<int64_t> sizes = {120, 1020, 8190, 65530};
  int64_t N = 16, d = 10, T = 20, seed = 7;
  double sigma = 1.0, min_s = 1.0;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) throw UsageError("unknown or incomplete argument '" + a + "'");
    const std::string v = argv[++i];
    if (a == "--out" && cmd == "export") out = v;
    else if (a == "--instances" && cmd == "export") N = to_int(a, v, 1);
    else if (a == "--seed" && cmd == "export") seed = to_int(a, v, 0);
    else if (a == "--sigma" && cmd == "export") sigma = to_double(a, v);
    else if (a == "--backend" && cmd == "bench") backend = v;
    else if (a == "--coordinates" && cmd == "bench") sizes = parse_sizes(v);
    else if (a == "--min-s" && cmd == "bench") min_s = to_double(a, v);
    else if (a == "--dim") d = to_int(a, v, 1);
    else if (a == "--T") T = to_int(a, v, 1);
    else throw UsageError("unknown argument '" + a + "' for " + cmd);
  }
  if (cmd == "export") {
    if (out.empty()) throw UsageError("export needs --out DIR");
    return run_export(out, N, int(d), int(T), uint64_t(seed), sigma);
  }
  if (backend != "cpu" && backend != "cuda")
    throw UsageError("--backend must be cpu or cuda, not '" + backend + "'");
  return run_bench(backend, sizes, int(d), int(T), min_s);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "peer_case: " << e.what() << "\n" << kUsage;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "peer_case: error: " << e.what() << "\n";
    return 1;
  }
}
