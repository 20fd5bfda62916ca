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

std::string format_double_csv(double v);

}  // namespace ml2o
