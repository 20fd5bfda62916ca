// Internal to host/protocol: plot.png and its data, drawn by gnuplot.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ml2o/config.hpp"
#include "ml2o/progress.hpp"
#include "outputs.hpp"

namespace ml2o {

// Which picture: its file names, title and what the curves' band spans.
struct PlotSpec {
  std::string stem = "plot";         // <stem>.gp, <stem>_data_K<k>.tsv, <stem>_K<k>.png, <stem>.png
  std::string summary_key = "plot";  // summary[summary_key] = "<stem>.png" (null if gnuplot failed)
  std::string title;                 // after the run name; " K = <k> ..." follows when per K
  std::string band = "min-max over seeds";
  std::vector<int> Ks;               // one picture per K; arms with K = 0 appear in each

  static PlotSpec out_of_distribution(const Config& cfg);  // plot.png: the test task, per K
  static PlotSpec in_distribution(const Config& cfg);      // plot_in_distribution.png
};

// Writes <stem>.gp and <stem>_data_K<k>.tsv, runs gnuplot, and records the result in summary.
void write_plot(const std::filesystem::path& out, const std::vector<ArmResult>& results,
                const Config& cfg, Progress& progress, nlohmann::json& summary, const PlotSpec& spec);

// The line colour of an arm (baselines included): one table, a distinct colour per arm name.
// Adaptation on D_adapt is drawn dashed in its arm's colour.
const char* arm_colour(const std::string& arm);
// Every arm name that has a colour of its own.
std::vector<std::string> coloured_arms();

}  // namespace ml2o
