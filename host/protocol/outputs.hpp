// Internal to host/protocol: the result of one arm and the files it is kept in.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

namespace ml2o {

// One arm's evaluation curves: an adapted or frozen learned optimizer, or a baseline.
struct ArmResult {
  std::string arm, source, note;
  int K = 0;
  std::vector<std::vector<double>> curves;  // per seed, steps + 1 objectives
  int64_t skipped = 0;
};

std::string part_name(const std::string& arm, int K, const std::string& source);
void write_part(const std::filesystem::path& path, const ArmResult& r);
// False when the part does not exist; throws FormatError when it is corrupt or incomplete.
bool read_part(const std::filesystem::path& path, ArmResult& r, int seeds, int steps);

std::string format_double_csv(double v);

}  // namespace ml2o
