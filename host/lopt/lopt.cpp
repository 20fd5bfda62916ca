#include "ml2o/lopt.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ml2o/io.hpp"
#include "ml2o/rng.hpp"

namespace ml2o {

namespace {
constexpr char kMagic[8] = {'M', 'L', '2', 'O', 'P', 'R', 'M', '1'};
constexpr uint32_t kVersion = 1;
}  // namespace

const char* arch_name(Arch a) { return a == Arch::rnnprop ? "rnnprop" : "dmlstm"; }

bool parse_arch(const std::string& name, Arch* out) {
  if (name == "rnnprop") { *out = Arch::rnnprop; return true; }
  if (name == "dmlstm") { *out = Arch::dmlstm; return true; }
  return false;
}

int param_count(Arch a) { return a == Arch::rnnprop ? RnnpropLayout::size : DmlstmLayout::size; }

std::vector<TensorInfo> tensor_table(Arch a) {
  if (a == Arch::rnnprop) {
    using L = RnnpropLayout;
    return {{"W_in", {2, kHidden}, L::W_in},       {"b_in", {kHidden}, L::b_in},
            {"W1", {2 * kHidden, kGates}, L::W1},  {"b1", {kGates}, L::b1},
            {"W2", {2 * kHidden, kGates}, L::W2},  {"b2", {kGates}, L::b2},
            {"W_out", {kHidden, 1}, L::W_out},     {"b_out", {1}, L::b_out}};
  }
  using L = DmlstmLayout;
  return {{"W1", {2 + kHidden, kGates}, L::W1}, {"b1", {kGates}, L::b1},
          {"W2", {2 * kHidden, kGates}, L::W2}, {"b2", {kGates}, L::b2},
          {"W_out", {kHidden, 1}, L::W_out},    {"b_out", {1}, L::b_out}};
}

LearnedOptimizer init_optimizer(const OptimizerHyper& hyper, uint64_t seed) {
  LearnedOptimizer opt{hyper, std::vector<float>(param_count(hyper.arch), 0.0f)};
  const double lstm_std = 1.0 / std::sqrt(40.0);
  uint64_t tensor_index = 0;
  for (const TensorInfo& t : tensor_table(hyper.arch)) {
    const bool is_lstm = t.name == "W1" || t.name == "b1" || t.name == "W2" || t.name == "b2";
    const bool is_bias = t.shape.size() == 1;
    ++tensor_index;
    if (is_bias && !is_lstm) continue;  // linear biases start at 0
    const double std = is_lstm ? lstm_std : 1.0 / std::sqrt(static_cast<double>(t.shape[0]));
    for (int e = 0; e < t.size(); ++e)
      opt.weights[t.offset + e] =
          static_cast<float>(std * truncated_normal01(seed, Stream::weights, tensor_index, e));
  }
  return opt;
}

uint64_t fnv1a64(const void* data, size_t n, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string params_to_bytes(const LearnedOptimizer& opt) {
  ByteWriter w;
  w.put_bytes(kMagic, 8);
  w.put<uint32_t>(kVersion);
  w.put<uint32_t>(static_cast<uint32_t>(opt.hyper.arch));
  w.put<double>(opt.hyper.dm_p);
  w.put<double>(opt.hyper.dm_scale);
  const auto table = tensor_table(opt.hyper.arch);
  w.put<uint32_t>(static_cast<uint32_t>(table.size()));
  for (const TensorInfo& t : table) {
    w.put<uint32_t>(static_cast<uint32_t>(t.name.size()));
    w.put_bytes(t.name.data(), t.name.size());
    w.put<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (int s : t.shape) w.put<uint32_t>(static_cast<uint32_t>(s));
  }
  w.put<uint64_t>(opt.weights.size());
  w.put_bytes(opt.weights.data(), opt.weights.size() * sizeof(float));
  const uint64_t sum = fnv1a64(w.bytes().data(), w.bytes().size());
  w.put<uint64_t>(sum);
  return std::move(w.bytes());
}

LearnedOptimizer params_from_bytes(const std::string& bytes, const std::string& source) {
  ByteReader r(bytes, source);
  char magic[8];
  r.get_bytes(magic, 8, "magic");
  if (std::memcmp(magic, kMagic, 8) != 0)
    throw FormatError(source + ": not an ml2o params file (wrong magic; expected \"ML2OPRM1\")");
  // The checksum covers everything, so verify it before trusting any field.
  if (bytes.size() < 8 + sizeof(uint64_t) + 4)
    throw FormatError(source + ": truncated file (" + std::to_string(bytes.size()) + " bytes)");
  uint64_t stored;
  std::memcpy(&stored, bytes.data() + bytes.size() - 8, 8);
  const auto version = r.get<uint32_t>("version");
  if (version != kVersion)
    throw FormatError(source + ": params format version " + std::to_string(version) +
                      " is not supported (this build reads version " + std::to_string(kVersion) + ")");
  if (fnv1a64(bytes.data(), bytes.size() - 8) != stored)
    throw FormatError(source + ": checksum mismatch: the file is corrupted or truncated");
  LearnedOptimizer opt;
  const auto arch = r.get<uint32_t>("arch");
  if (arch > 1)
    throw FormatError(source + ": unknown architecture id " + std::to_string(arch) +
                      " (allowed: 0 rnnprop, 1 dmlstm)");
  opt.hyper.arch = static_cast<Arch>(arch);
  opt.hyper.dm_p = r.get<double>("dm_p");
  opt.hyper.dm_scale = r.get<double>("dm_scale");
  if (!(opt.hyper.dm_p > 0 && std::isfinite(opt.hyper.dm_p)) ||
      !(opt.hyper.dm_scale > 0 && std::isfinite(opt.hyper.dm_scale)))
    throw FormatError(source + ": invalid DM-LSTM settings in header (dm_p and dm_scale must be "
                      "positive and finite)");
  const auto table = tensor_table(opt.hyper.arch);
  const auto count = r.get<uint32_t>("tensor count");
  if (count != table.size())
    throw FormatError(source + ": " + std::to_string(count) + " tensors, but " +
                      arch_name(opt.hyper.arch) + " has " + std::to_string(table.size()));
  for (const TensorInfo& t : table) {
    const auto len = r.get<uint32_t>("tensor name length");
    if (len > 64) throw FormatError(source + ": tensor name too long");
    std::string name(len, '\0');
    r.get_bytes(name.data(), len, "tensor name");
    const auto rank = r.get<uint32_t>("tensor rank");
    if (name != t.name || rank != t.shape.size())
      throw FormatError(source + ": tensor '" + name + "' where " + arch_name(opt.hyper.arch) +
                        " expects '" + t.name + "'");
    for (int s : t.shape)
      if (r.get<uint32_t>("tensor dim") != static_cast<uint32_t>(s))
        throw FormatError(source + ": tensor '" + t.name + "' has the wrong shape");
  }
  const auto n = r.get<uint64_t>("weight count");
  if (n != static_cast<uint64_t>(param_count(opt.hyper.arch)))
    throw FormatError(source + ": " + std::to_string(n) + " weights, but " +
                      arch_name(opt.hyper.arch) + " has " +
                      std::to_string(param_count(opt.hyper.arch)));
  opt.weights.resize(n);
  r.get_bytes(opt.weights.data(), n * sizeof(float), "weights");
  if (r.remaining() != 8) throw FormatError(source + ": trailing bytes after the weights");
  for (float v : opt.weights)
    if (!std::isfinite(v)) throw FormatError(source + ": non-finite weight");
  return opt;
}

void save_params(const std::string& path, const LearnedOptimizer& opt) {
  write_file_atomic(path, params_to_bytes(opt));
}

size_t max_params_bytes() {
  static const size_t n = [] {
    size_t m = 0;
    for (Arch a : {Arch::rnnprop, Arch::dmlstm}) {
      LearnedOptimizer opt;
      opt.hyper.arch = a;
      opt.weights.assign(param_count(a), 0.0f);
      m = std::max(m, params_to_bytes(opt).size());
    }
    return m;
  }();
  return n;
}

LearnedOptimizer load_params(const std::string& path) {
  return params_from_bytes(read_file(path, max_params_bytes(), std::string(kMagic, 8), "params file"), path);
}

}  // namespace ml2o
