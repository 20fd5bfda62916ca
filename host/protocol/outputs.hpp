// Internal to host/protocol: the result of one arm and the files it is kept in.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "ml2o/protocol.hpp"

namespace ml2o {

std::string part_name(const std::string& arm, int K, const std::string& source);
void write_part(const std::filesystem::path& path, const ArmResult& r);
// False when the part does not exist; throws FormatError when it is corrupt or incomplete.
bool read_part(const std::filesystem::path& path, ArmResult& r, int seeds, int steps);

// parts/<part>.mlp.csv: the mlp scores of a finished arm (read_mlp_part: false when absent).
void write_mlp_part(const std::filesystem::path& path, const ArmResult& r);
bool read_mlp_part(const std::filesystem::path& path, ArmResult& r, int seeds,
                   const std::vector<int>& steps);
// The mean over seeds of the scores at each report step.
std::vector<MlpPoint> mean_mlp_points(const ArmResult& r);

std::string format_double_csv(double v);

}  // namespace ml2o
