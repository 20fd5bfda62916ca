// The run's result files: per-arm partial results (parts/*.csv, so a resumed run skips finished
// arms), curves.csv, and the curve statistics of summary.json.
#include "outputs.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "ml2o/io.hpp"
#include "ml2o/protocol.hpp"

namespace fs = std::filesystem;

namespace ml2o {

CurveStats summarise_curves(const std::vector<std::vector<double>>& per_seed) {
  CurveStats s;
  if (per_seed.empty()) return s;
  const size_t n = per_seed[0].size();
  std::vector<double> mean(n, 0.0);
  for (const auto& c : per_seed)
    for (size_t t = 0; t < n; ++t) mean[t] += c[t] / double(per_seed.size());
  double sq = 0;
  for (const auto& c : per_seed) sq += (c.back() - mean.back()) * (c.back() - mean.back());
  s.start_mean = mean[0];
  s.final_mean = mean.back();
  s.final_std = per_seed.size() > 1 ? std::sqrt(sq / double(per_seed.size() - 1)) : 0.0;
  if (n > 10) s.at10 = mean[10];
  if (n > 100) s.at100 = mean[100];
  if (n > 1000) s.at1000 = mean[1000];
  for (size_t t = 0; t < n; ++t) {
    if (s.steps_to_10x < 0 && mean[t] <= mean[0] / 10) s.steps_to_10x = int64_t(t);
    if (s.steps_to_100x < 0 && mean[t] <= mean[0] / 100) s.steps_to_100x = int64_t(t);
  }
  return s;
}

std::string part_name(const std::string& arm, int K, const std::string& source) {
  return arm + "__K" + std::to_string(K) + "__" + source + ".csv";
}

// 17 significant digits: every double reads back exactly, so a resumed run's outputs are
// byte-identical to an uninterrupted run's.
void write_part(const fs::path& path, const ArmResult& r) {
  std::ostringstream os;
  os << "# note=" << r.note << " skipped=" << r.skipped << "\n";
  char buf[40];
  for (size_t s = 0; s < r.curves.size(); ++s)
    for (size_t t = 0; t < r.curves[s].size(); ++t) {
      std::snprintf(buf, sizeof buf, "%.17g", r.curves[s][t]);
      os << s << ',' << t << ',' << buf << '\n';
    }
  write_file_atomic(path.string(), os.str());
}

bool read_part(const fs::path& path, ArmResult& r, int seeds, int steps) {
  if (!fs::exists(path)) return false;
  // At most the size this part can have: the header (a note lists up to 1000 swept rates) and
  // rows of two indices and 17 digits with sign and exponent.
  const size_t max_bytes = (size_t(1) << 20) + size_t(seeds) * size_t(steps + 1) * 64;
  const std::string bytes = read_file(path.string(), max_bytes);
  const std::string where = path.string() + ": corrupt partial result (delete it to recompute): ";
  if (bytes.empty() || bytes.back() != '\n') throw FormatError(where + "cut off (no final newline)");
  std::istringstream in(bytes);
  std::string line;
  std::getline(in, line);
  const auto np = line.find("note="), sp = line.rfind(" skipped=");
  char* end = nullptr;
  if (line.rfind("# note=", 0) != 0 || sp == std::string::npos || sp < np)
    throw FormatError(where + "header '" + line + "'");
  r.note = line.substr(np + 5, sp - np - 5);
  const std::string skipped = line.substr(sp + 9);
  r.skipped = std::strtoll(skipped.c_str(), &end, 10);
  if (skipped.empty() || *end != '\0' || r.skipped < 0)
    throw FormatError(where + "header '" + line + "'");
  r.curves.assign(seeds, std::vector<double>(steps + 1, NAN));
  std::vector<std::vector<bool>> seen(seeds, std::vector<bool>(steps + 1, false));
  size_t rows = 0;
  while (std::getline(in, line)) {
    int s, t, n = 0;
    double v;
    if (std::sscanf(line.c_str(), "%d,%d,%lf%n", &s, &t, &v, &n) != 3 || size_t(n) != line.size() ||
        s < 0 || s >= seeds || t < 0 || t > steps || seen[s][t])
      throw FormatError(where + "row '" + line + "'");
    seen[s][t] = true;
    r.curves[s][t] = v;
    ++rows;
  }
  if (rows != size_t(seeds) * (steps + 1))
    throw FormatError(path.string() + ": incomplete partial result; delete it to recompute");
  return true;
}

void write_mlp_part(const fs::path& path, const ArmResult& r) {
  std::ostringstream os;
  os << "seed,step,train_loss,test_accuracy\n";
  for (size_t s = 0; s < r.mlp.size(); ++s)
    for (const MlpPoint& m : r.mlp[s])
      os << s << ',' << m.step << ',' << format_double_csv(m.train_loss) << ','
         << format_double_csv(m.test_accuracy) << '\n';
  write_file_atomic(path.string(), os.str());
}

bool read_mlp_part(const fs::path& path, ArmResult& r, int seeds, const std::vector<int>& steps) {
  if (!fs::exists(path)) return false;
  std::istringstream in(read_file(path.string()));
  std::string line;
  std::getline(in, line);
  r.mlp.assign(seeds, {});
  while (std::getline(in, line)) {
    int s, t;
    double loss, acc;
    if (std::sscanf(line.c_str(), "%d,%d,%lf,%lf", &s, &t, &loss, &acc) != 4 || s < 0 || s >= seeds)
      throw FormatError(path.string() + ": corrupt partial result (row '" + line + "')");
    r.mlp[s].push_back(MlpPoint{t, loss, acc});
  }
  for (const auto& per_seed : r.mlp) {
    bool same = per_seed.size() == steps.size();
    for (size_t i = 0; same && i < steps.size(); ++i) same = per_seed[i].step == steps[i];
    if (!same) throw FormatError(path.string() + ": incomplete partial result; delete it to recompute");
  }
  return true;
}

std::vector<MlpPoint> mean_mlp_points(const ArmResult& r) {
  std::vector<MlpPoint> out;
  if (r.mlp.empty()) return out;
  out = r.mlp[0];
  for (size_t i = 0; i < out.size(); ++i) {
    double loss = 0, acc = 0;
    for (const auto& per_seed : r.mlp) {
      loss += per_seed[i].train_loss;
      acc += per_seed[i].test_accuracy;
    }
    out[i].train_loss = loss / double(r.mlp.size());
    out[i].test_accuracy = acc / double(r.mlp.size());
  }
  return out;
}

std::string format_double_csv(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

}  // namespace ml2o
