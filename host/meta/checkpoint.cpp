// Checkpoint files (ML2OCKP1): the whole TrainerState, so a killed run resumes bit-identically.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "ml2o/io.hpp"
#include "ml2o/meta.hpp"

namespace ml2o {

// ---- checkpoint serialisation ---------------------------------------------------------------------
namespace {
constexpr char kCkptMagic[8] = {'M', 'L', '2', 'O', 'C', 'K', 'P', '1'};
constexpr uint32_t kCkptVersion = 1;
constexpr size_t kHeaderBytes = 8 + 4 + 8;  // magic, version, config hash

template <class T> void put_vec(ByteWriter& w, const std::vector<T>& v) {
  w.put<uint64_t>(v.size());
  w.put_bytes(v.data(), v.size() * sizeof(T));
}
// A length-prefixed vector whose length must be one of `allowed` (checked before allocating).
template <class T>
std::vector<T> get_vec(ByteReader& r, const char* what, std::initializer_list<uint64_t> allowed) {
  const auto n = r.get<uint64_t>(what);
  if (std::find(allowed.begin(), allowed.end(), n) == allowed.end()) {
    std::string want;
    for (uint64_t a : allowed) want += (want.empty() ? "" : " or ") + std::to_string(a);
    throw FormatError(r.source() + ": " + what + " has " + std::to_string(n) + " elements, expected " + want);
  }
  std::vector<T> v(n);
  r.get_bytes(v.data(), n * sizeof(T), what);
  return v;
}
// A length-prefixed vector of at most max_count elements.
template <class T> std::vector<T> get_vec_upto(ByteReader& r, const char* what, uint64_t max_count) {
  const uint64_t n = r.get_count(what, sizeof(T), max_count);
  std::vector<T> v(n);
  r.get_bytes(v.data(), n * sizeof(T), what);
  return v;
}

// Most evaluations a run can have done: one per stage entered, one every eval_every epochs.
uint64_t max_evaluations(const TrainConfig& tc) {
  return 1 + uint64_t(tc.max_epochs / tc.eval_every) + tc.curriculum.size();
}
int64_t unrolls_in_stage(const TrainConfig& tc, int stage) { return tc.curriculum[stage] / tc.unroll; }

[[noreturn]] void corrupt(const std::string& source, const std::string& what) {
  throw FormatError(source + ": inconsistent checkpoint: " + what +
                    "; it was not written by this run (delete it to restart the training)");
}
std::string s(int64_t v) { return std::to_string(v); }
std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}
bool all_finite(const std::vector<double>& v) {
  return std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); });
}

// The trainer's invariants at every point where it saves (trainer.cpp): what a state written by
// train() under `tc` always satisfies, so that nothing past this check can index out of range.
void check_state(const TrainerState& st, const TrainConfig& tc, const std::string& src) {
  const size_t P = st.opt.weights.size();
  if (st.stage < 0 || size_t(st.stage) >= tc.curriculum.size())
    corrupt(src, "stage " + s(st.stage) + " outside the curriculum's " + s(tc.curriculum.size()) + " stages");
  if (st.epoch < 0 || st.epoch > tc.max_epochs)
    corrupt(src, "epoch " + s(st.epoch) + " outside 0.." + s(tc.max_epochs) + " (train.max_epochs)");
  const int64_t n_unrolls = unrolls_in_stage(tc, st.stage);
  if (st.unroll_in_epoch < 0 || st.unroll_in_epoch > n_unrolls)
    corrupt(src, "unroll " + s(st.unroll_in_epoch) + " of the epoch outside 0.." + s(n_unrolls) +
                     " (stage " + s(st.stage) + ": " + s(tc.curriculum[st.stage]) + " steps / unroll " +
                     s(tc.unroll) + ")");
  // Mid-epoch, one trajectory per training task, each the task's size; between epochs none.
  const size_t want_trajs = st.unroll_in_epoch > 0 ? tc.tasks.size() : 0;
  if (st.trajs.size() != want_trajs)
    corrupt(src, s(st.trajs.size()) + " trajectories at unroll " + s(st.unroll_in_epoch) +
                     " of the epoch, expected " + s(want_trajs) + " (one per training task mid-epoch)");
  for (size_t i = 0; i < st.trajs.size(); ++i) {
    const Trajectory<float>& t = st.trajs[i];
    const uint64_t n = uint64_t(tc.tasks[i].instances) * uint64_t(tc.tasks[i].dim);
    if (t.x.size() != n || t.coord.size() != n)
      corrupt(src, "trajectory " + s(i) + " has " + s(t.x.size()) + " coordinates and " +
                       s(t.coord.size()) + " states, but training task " + s(i) + " has " + s(n) +
                       " (instances x dim)");
    if (t.k < 1 || t.k > 1 + st.unroll_in_epoch * tc.unroll)
      corrupt(src, "trajectory " + s(i) + " is at step " + s(t.k) + ", outside 1.." +
                       s(1 + st.unroll_in_epoch * tc.unroll));
  }
  if (st.adam.m.size() != st.adam.v.size() || (st.adam.t > 0 && st.adam.m.size() != P))
    corrupt(src, "Adam moments of " + s(st.adam.m.size()) + " and " + s(st.adam.v.size()) +
                     " values after " + s(st.adam.t) + " steps, for " + s(P) + " weights");
  const int64_t longest = *std::max_element(tc.curriculum.begin(), tc.curriculum.end()) / tc.unroll;
  const int64_t max_steps = (st.epoch + 1) * longest;
  if (st.adam.t < 0 || st.adam.t > max_steps)
    corrupt(src, "Adam step count " + s(st.adam.t) + " outside 0.." + s(max_steps) + " at epoch " + s(st.epoch));
  if (!all_finite(st.adam.m) || !all_finite(st.adam.v) ||
      std::any_of(st.adam.v.begin(), st.adam.v.end(), [](double x) { return x < 0; }))
    corrupt(src, "non-finite or negative Adam moments");
  if (st.best_weights.size() != (st.has_best ? P : 0))
    corrupt(src, s(st.best_weights.size()) + " best weights with has_best = " + s(st.has_best) +
                     ", expected " + s(st.has_best ? P : 0));
  if (!std::all_of(st.best_weights.begin(), st.best_weights.end(), [](float x) { return std::isfinite(x); }))
    corrupt(src, "non-finite best weights");
  if (std::isnan(st.best_score)) corrupt(src, "best score is NaN");
  if (st.evals_without_improvement < 0 || st.evals_without_improvement > tc.patience)
    corrupt(src, s(st.evals_without_improvement) + " evaluations without improvement, outside 0.." +
                     s(tc.patience) + " (train.patience)");
  if (st.skipped_steps < 0 || st.consecutive_skipped < 0 || st.consecutive_skipped > tc.max_skipped ||
      st.consecutive_skipped > st.skipped_steps)
    corrupt(src, "skipped-step counters " + s(st.skipped_steps) + " (total) and " +
                     s(st.consecutive_skipped) + " (consecutive; train.max_skipped = " + s(tc.max_skipped) + ")");
  // Every evaluation so far: one per stage entered and one every eval_every epochs.
  if (st.has_best) {
    const uint64_t evals = 1 + uint64_t(st.epoch / tc.eval_every) + uint64_t(st.stage);
    if (st.eval_history.size() != evals)
      corrupt(src, s(st.eval_history.size()) + " evaluations at epoch " + s(st.epoch) + " stage " +
                       s(st.stage) + ", expected " + s(evals));
  } else if (!st.eval_history.empty() || st.epoch != 0 || st.stage != 0 || st.unroll_in_epoch != 0) {
    corrupt(src, "progress recorded before the first evaluation (has_best = 0)");
  }
  if (std::any_of(st.eval_history.begin(), st.eval_history.end(), [](double x) { return std::isnan(x); }))
    corrupt(src, "NaN evaluation score");
  if (st.loss_history.size() != uint64_t(st.epoch))
    corrupt(src, s(st.loss_history.size()) + " epoch losses at epoch " + s(st.epoch));
  if (st.epoch_loss_count < 0 || st.epoch_loss_count > st.unroll_in_epoch ||
      (st.epoch_loss_count == 0 && st.epoch_loss_sum != 0) || std::isnan(st.epoch_loss_sum))
    corrupt(src, "epoch loss over " + s(st.epoch_loss_count) + " unrolls at unroll " + s(st.unroll_in_epoch));
}
}  // namespace

size_t checkpoint_max_bytes(const TrainConfig& tc, const OptimizerHyper& hyper) {
  const size_t P = size_t(param_count(hyper.arch));
  size_t n = kHeaderBytes + 8 + max_params_bytes() + 4;  // params, method
  n += 2 * (8 + P * sizeof(double)) + 8 + 8 + 4 + 8;      // Adam, counters
  n += 8;                                                 // trajectory count
  for (const TaskSpec& t : tc.tasks) {
    const size_t c = size_t(t.instances) * size_t(t.dim);
    n += 8 + c * sizeof(float) + 8 + c * sizeof(CoordState<float>) + 8;
  }
  n += 8 + 1 + 8 + P * sizeof(float) + 4 + 1 + 1 + 8 + 4;  // best weights and flags
  n += 8 + max_evaluations(tc) * 8 + 8 + size_t(tc.max_epochs) * 8 + 8 + 8 + 8;  // histories, sum
  return n;
}

std::string trainer_to_bytes(const TrainerState& st, uint64_t config_hash) {
  ByteWriter w;
  w.put_bytes(kCkptMagic, 8);
  w.put<uint32_t>(kCkptVersion);
  w.put<uint64_t>(config_hash);
  const std::string params = params_to_bytes(st.opt);
  w.put<uint64_t>(params.size());
  w.put_bytes(params.data(), params.size());
  w.put<uint32_t>(uint32_t(st.method));
  put_vec(w, st.adam.m);
  put_vec(w, st.adam.v);
  w.put<int64_t>(st.adam.t);
  w.put<int64_t>(st.epoch);
  w.put<int32_t>(st.stage);
  w.put<int64_t>(st.unroll_in_epoch);
  w.put<uint64_t>(st.trajs.size());
  for (const auto& t : st.trajs) {
    put_vec(w, t.x);
    put_vec(w, t.coord);
    w.put<int64_t>(t.k);
  }
  w.put<double>(st.best_score);
  w.put<uint8_t>(st.has_best);
  put_vec(w, st.best_weights);
  w.put<int32_t>(st.evals_without_improvement);
  w.put<uint8_t>(st.improved_in_stage);
  w.put<uint8_t>(st.finished);
  w.put<int64_t>(st.skipped_steps);
  w.put<int32_t>(st.consecutive_skipped);
  put_vec(w, st.eval_history);
  put_vec(w, st.loss_history);
  w.put<double>(st.epoch_loss_sum);
  w.put<int64_t>(st.epoch_loss_count);
  const uint64_t sum = fnv1a64(w.bytes().data(), w.bytes().size());
  w.put<uint64_t>(sum);
  return std::move(w.bytes());
}

TrainerState trainer_from_bytes(const std::string& bytes, const std::string& source,
                                const CheckpointExpect& expect) {
  ByteReader head(bytes, source);
  char magic[8];
  head.get_bytes(magic, 8, "magic");
  if (std::memcmp(magic, kCkptMagic, 8) != 0)
    throw FormatError(source + ": not an ml2o checkpoint (wrong magic; expected \"ML2OCKP1\")");
  const auto version = head.get<uint32_t>("version");
  if (version != kCkptVersion)
    throw FormatError(source + ": checkpoint version " + std::to_string(version) +
                      " is not supported (this build reads version " + std::to_string(kCkptVersion) + ")");
  if (bytes.size() < kHeaderBytes + 8) throw FormatError(source + ": truncated checkpoint");
  // The checksum covers everything, so it is verified before any other field is trusted.
  uint64_t stored;
  std::memcpy(&stored, bytes.data() + bytes.size() - 8, 8);
  if (fnv1a64(bytes.data(), bytes.size() - 8) != stored)
    throw FormatError(source + ": checksum mismatch: the checkpoint is corrupted or truncated");
  // The fields, without the checksum: a count that claims more than is there runs out of bytes.
  const std::string body = bytes.substr(0, bytes.size() - 8);
  ByteReader r(body, source);
  r.get_bytes(magic, 8, "magic");
  (void)r.get<uint32_t>("version");
  if (r.get<uint64_t>("config hash") != expect.config_hash)
    throw FormatError(source + ": the checkpoint was written by a run with a different config; "
                               "start a new output directory or restore the original config");
  const TrainConfig& tc = *expect.train;
  TrainerState st;
  const auto plen = r.get_count("params length", 1, max_params_bytes());
  std::string params(plen, '\0');
  r.get_bytes(params.data(), plen, "params");
  st.opt = params_from_bytes(params, source + ": embedded params");
  if (st.opt.hyper.arch != expect.hyper.arch)
    corrupt(source, std::string("embedded params are ") + arch_name(st.opt.hyper.arch) +
                        " but the config's optimizer.arch is " + arch_name(expect.hyper.arch));
  if (st.opt.hyper.dm_p != expect.hyper.dm_p || st.opt.hyper.dm_scale != expect.hyper.dm_scale)
    corrupt(source, "embedded params have dm_p = " + num(st.opt.hyper.dm_p) + ", dm_scale = " +
                        num(st.opt.hyper.dm_scale) + " but the config has " + num(expect.hyper.dm_p) +
                        ", " + num(expect.hyper.dm_scale));
  const uint64_t P = st.opt.weights.size();
  const auto method = r.get<uint32_t>("method");
  if (method != uint32_t(expect.method))
    corrupt(source, "method id " + std::to_string(method) + ", expected " +
                        std::to_string(uint32_t(expect.method)) + " (" + method_name(expect.method) + ")");
  st.method = expect.method;
  st.adam.m = get_vec<double>(r, "Adam m", {0, P});
  st.adam.v = get_vec<double>(r, "Adam v", {0, P});
  st.adam.t = r.get<int64_t>("Adam t");
  st.epoch = r.get<int64_t>("epoch");
  st.stage = r.get<int32_t>("stage");
  st.unroll_in_epoch = r.get<int64_t>("unroll in epoch");
  const auto ntraj = r.get_count("trajectory count", 3 * 8, tc.tasks.size());
  for (uint64_t i = 0; i < ntraj; ++i) {
    const uint64_t n = uint64_t(tc.tasks[i].instances) * uint64_t(tc.tasks[i].dim);
    Trajectory<float> t;
    t.x = get_vec<float>(r, "trajectory x", {n});
    t.coord = get_vec<CoordState<float>>(r, "trajectory state", {n});
    t.k = r.get<int64_t>("trajectory k");
    st.trajs.push_back(std::move(t));
  }
  st.best_score = r.get<double>("best score");
  const auto flag = [&](const char* what) {
    const auto b = r.get<uint8_t>(what);
    if (b > 1) corrupt(source, std::string(what) + " is " + std::to_string(b) + ", not 0 or 1");
    return b == 1;
  };
  st.has_best = flag("has best");
  st.best_weights = get_vec<float>(r, "best weights", {0, P});
  st.evals_without_improvement = r.get<int32_t>("evals without improvement");
  st.improved_in_stage = flag("improved in stage");
  st.finished = flag("finished");
  st.skipped_steps = r.get<int64_t>("skipped steps");
  st.consecutive_skipped = r.get<int32_t>("consecutive skipped");
  st.eval_history = get_vec_upto<double>(r, "eval history", max_evaluations(tc));
  st.loss_history = get_vec_upto<double>(r, "loss history", uint64_t(tc.max_epochs));
  st.epoch_loss_sum = r.get<double>("epoch loss sum");
  st.epoch_loss_count = r.get<int64_t>("epoch loss count");
  if (r.remaining() != 0)
    throw FormatError(source + ": " + std::to_string(r.remaining()) + " trailing bytes before the checksum");
  check_state(st, tc, source);
  return st;
}

std::string read_checkpoint_bytes(const std::string& path, const CheckpointExpect& expect) {
  return read_file(path, checkpoint_max_bytes(*expect.train, expect.hyper), std::string(kCkptMagic, 8),
                   "checkpoint");
}

TrainerState load_checkpoint(const std::string& path, const CheckpointExpect& expect) {
  return trainer_from_bytes(read_checkpoint_bytes(path, expect), path, expect);
}

}  // namespace ml2o
