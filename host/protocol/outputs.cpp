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

void write_part(const fs::path& path, const ArmResult& r) {
  std::ostringstream os;
  os.precision(9);
  os << "# note=" << r.note << " skipped=" << r.skipped << "\n";
  for (size_t s = 0; s < r.curves.size(); ++s)
    for (size_t t = 0; t < r.curves[s].size(); ++t) os << s << ',' << t << ',' << r.curves[s][t] << '\n';
  write_file_atomic(path.string(), os.str());
}

bool read_part(const fs::path& path, ArmResult& r, int seeds, int steps) {
  if (!fs::exists(path)) return false;
  std::istringstream in(read_file(path.string()));
  auto corrupt = [&](size_t line_no, const std::string& why) {
    return FormatError(path.string() + ":" + std::to_string(line_no) + ": corrupt partial result (" +
                       why + "); delete the file to recompute this arm");
  };
  std::string line;
  std::getline(in, line);
  const auto np = line.find("note="), sp = line.rfind(" skipped=");
  if (np == std::string::npos || sp == std::string::npos) throw corrupt(1, "header");
  r.note = line.substr(np + 5, sp - np - 5);
  char* end = nullptr;
  const char* skipped = line.c_str() + sp + 9;
  r.skipped = std::strtoll(skipped, &end, 10);
  if (end == skipped || *end != '\0' || r.skipped < 0) throw corrupt(1, "header: skipped count");
  r.curves.assign(seeds, std::vector<double>(steps + 1, NAN));
  std::vector<char> seen(size_t(seeds) * (steps + 1), 0);
  size_t rows = 0, line_no = 1;
  while (std::getline(in, line)) {
    ++line_no;
    int s, t, used = 0;
    double v;
    if (std::sscanf(line.c_str(), "%d,%d,%lf%n", &s, &t, &v, &used) != 3 || size_t(used) != line.size())
      throw corrupt(line_no, "row '" + line + "'");
    if (s < 0 || s >= seeds || t < 0 || t > steps)
      throw corrupt(line_no, "seed or step out of range in '" + line + "'");
    char& was = seen[size_t(s) * (steps + 1) + t];
    if (was) throw corrupt(line_no, "duplicated row '" + line + "'");
    was = 1;
    r.curves[s][t] = v;
    ++rows;
  }
  if (rows != size_t(seeds) * (steps + 1))
    throw FormatError(path.string() + ": incomplete partial result; delete it to recompute");
  return true;
}

std::string format_double_csv(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

}  // namespace ml2o
