// Checkpoint files (ML2OCKP1): the whole TrainerState, so a killed run resumes bit-identically.
#include <cstring>

#include "ml2o/io.hpp"
#include "ml2o/meta.hpp"

namespace ml2o {

// ---- checkpoint serialisation ---------------------------------------------------------------------
namespace {
constexpr char kCkptMagic[8] = {'M', 'L', '2', 'O', 'C', 'K', 'P', '1'};
constexpr uint32_t kCkptVersion = 1;

template <class T> void put_vec(ByteWriter& w, const std::vector<T>& v) {
  w.put<uint64_t>(v.size());
  w.put_bytes(v.data(), v.size() * sizeof(T));
}
template <class T> std::vector<T> get_vec(ByteReader& r, const char* what, uint64_t max_count) {
  const auto n = r.get<uint64_t>(what);
  if (n > max_count || n * sizeof(T) > r.remaining())
    throw FormatError(r.source() + ": corrupt checkpoint: " + what + " has " + std::to_string(n) +
                      " elements");
  std::vector<T> v(n);
  r.get_bytes(v.data(), n * sizeof(T), what);
  return v;
}
}  // namespace

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
                                uint64_t config_hash) {
  ByteReader r(bytes, source);
  char magic[8];
  r.get_bytes(magic, 8, "magic");
  if (std::memcmp(magic, kCkptMagic, 8) != 0)
    throw FormatError(source + ": not an ml2o checkpoint (wrong magic; expected \"ML2OCKP1\")");
  const auto version = r.get<uint32_t>("version");
  if (version != kCkptVersion)
    throw FormatError(source + ": checkpoint version " + std::to_string(version) +
                      " is not supported (this build reads version " + std::to_string(kCkptVersion) + ")");
  if (bytes.size() < 28) throw FormatError(source + ": truncated checkpoint");
  uint64_t stored;
  std::memcpy(&stored, bytes.data() + bytes.size() - 8, 8);
  if (fnv1a64(bytes.data(), bytes.size() - 8) != stored)
    throw FormatError(source + ": checksum mismatch: the checkpoint is corrupted or truncated");
  if (r.get<uint64_t>("config hash") != config_hash)
    throw FormatError(source + ": the checkpoint was written by a run with a different config; "
                               "start a new output directory or restore the original config");
  TrainerState st;
  const auto plen = r.get<uint64_t>("params length");
  if (plen > r.remaining()) throw FormatError(source + ": truncated checkpoint (params)");
  std::string params(plen, '\0');
  r.get_bytes(params.data(), plen, "params");
  st.opt = params_from_bytes(params, source + " (embedded params)");
  const size_t P = st.opt.weights.size();
  const auto method = r.get<uint32_t>("method");
  if (method > 1) throw FormatError(source + ": unknown training method id");
  st.method = Method(method);
  st.adam.m = get_vec<double>(r, "adam m", P);
  st.adam.v = get_vec<double>(r, "adam v", P);
  st.adam.t = r.get<int64_t>("adam t");
  st.epoch = r.get<int64_t>("epoch");
  st.stage = r.get<int32_t>("stage");
  st.unroll_in_epoch = r.get<int64_t>("unroll in epoch");
  const auto ntraj = r.get<uint64_t>("trajectory count");
  if (ntraj > 4096) throw FormatError(source + ": corrupt checkpoint: trajectory count");
  for (uint64_t i = 0; i < ntraj; ++i) {
    Trajectory<float> t;
    t.x = get_vec<float>(r, "trajectory x", uint64_t(1) << 40);
    t.coord = get_vec<CoordState<float>>(r, "trajectory state", uint64_t(1) << 40);
    t.k = r.get<int64_t>("trajectory k");
    if (t.coord.size() != t.x.size()) throw FormatError(source + ": corrupt checkpoint: trajectory sizes");
    st.trajs.push_back(std::move(t));
  }
  st.best_score = r.get<double>("best score");
  st.has_best = r.get<uint8_t>("has best");
  st.best_weights = get_vec<float>(r, "best weights", P);
  st.evals_without_improvement = r.get<int32_t>("evals without improvement");
  st.improved_in_stage = r.get<uint8_t>("improved in stage");
  st.finished = r.get<uint8_t>("finished");
  st.skipped_steps = r.get<int64_t>("skipped steps");
  st.consecutive_skipped = r.get<int32_t>("consecutive skipped");
  st.eval_history = get_vec<double>(r, "eval history", uint64_t(1) << 32);
  st.loss_history = get_vec<double>(r, "loss history", uint64_t(1) << 32);
  st.epoch_loss_sum = r.get<double>("epoch loss sum");
  st.epoch_loss_count = r.get<int64_t>("epoch loss count");
  if (r.remaining() != 8) throw FormatError(source + ": trailing bytes in checkpoint");
  if (st.stage < 0 || st.epoch < 0 || st.unroll_in_epoch < 0)
    throw FormatError(source + ": corrupt checkpoint: negative counters");
  return st;
}

}  // namespace ml2o
