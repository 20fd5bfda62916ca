// Internal to host/protocol: plot.png and its data, drawn by gnuplot.
#pragma once
#include <filesystem>
#include <vector>

#include <nlohmann/json.hpp>

#include "ml2o/config.hpp"
#include "ml2o/progress.hpp"
#include "outputs.hpp"

namespace ml2o {

// Writes plot.gp and plot_data_K<k>.tsv, runs gnuplot, and records the result in summary["plot"].
void write_plot(const std::filesystem::path& out, const std::vector<ArmResult>& results,
                const Config& cfg, Progress& progress, nlohmann::json& summary);

}  // namespace ml2o
