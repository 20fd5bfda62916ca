// Internal to host/protocol: the result of one arm and the files it is kept in.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

namespace ml2o {

// An mlp test task's iterates scored at one step: the full training split's mean cross-entropy
// and the test split's accuracy, each the mean over the instances.
struct MlpPoint {
  int step = 0;
  double train_loss = 0, test_accuracy = 0;
};

// One arm's evaluation curves: an adapted or frozen learned optimizer, or a baseline.
struct ArmResult {
  std::string arm, source, note;
  int K = 0;
  std::vector<std::vector<double>> curves;  // per seed, steps + 1 objectives
  int64_t skipped = 0;
  std::vector<std::vector<MlpPoint>> mlp;   // mlp test task: per seed, at mlp_report_steps
};

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
