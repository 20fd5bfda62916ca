// plot.png: log-scale objective against step, mean over seeds with a min-max band, one picture per
// K, drawn by gnuplot from plot.gp and plot_data_K<k>.tsv (which stay for re-plotting).
#include "plot.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "ml2o/io.hpp"
#include "ml2o/progress.hpp"
#include "ml2o/protocol.hpp"

namespace fs = std::filesystem;

namespace ml2o {

void write_plot(const fs::path& out, const std::vector<ArmResult>& results, const Config& cfg,
                Progress& progress, nlohmann::json& summary) {
  std::vector<int> Ks;
  for (int K : cfg.adapt.K)
    if (std::find(Ks.begin(), Ks.end(), K) == Ks.end()) Ks.push_back(K);
  if (Ks.empty()) Ks.push_back(0);
  std::ostringstream gp;
  gp << "# gnuplot script written by ml2o " << engine_version() << "; rerun: gnuplot plot.gp\n"
     << "set terminal pngcairo size 1100,700 noenhanced\nset logscale y\nset format y '%.0e'\n"
     << "set xlabel 'optimizee step'\nset ylabel 'mean objective (band: min-max over seeds)'\n"
     << "set key outside right\nset grid\n";
  std::vector<std::string> pngs;
  // Distinct colours; adaptation on D_adapt is dashed, so an arm and its @adapt twin pair up.
  static const char* kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
                                   "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#000000", "#aec7e8",
                                   "#393b79", "#637939", "#8c6d31", "#843c39"};
  for (int K : Ks) {
    // Arms that diverged (non-finite final objective) are left out of the picture, not the data.
    std::vector<const ArmResult*> shown;
    double lo = HUGE_VAL, start_hi = 0;
    for (const auto& r : results) {
      if (r.K != K && r.K != 0) continue;
      const CurveStats cs = summarise_curves(r.curves);
      if (!std::isfinite(cs.final_mean)) continue;
      shown.push_back(&r);
      start_hi = std::max(start_hi, cs.start_mean);
      for (const auto& c : r.curves)
        for (double v : c)
          if (v > 0 && std::isfinite(v)) lo = std::min(lo, v);
    }
    const std::string data = "plot_data_K" + std::to_string(K) + ".tsv";
    std::ostringstream ds;
    ds << "# step";
    for (auto* r : shown) ds << "\t" << r->arm << "@" << r->source << "_K" << r->K << "(mean,min,max)";
    ds << "\n";
    const size_t n = shown.empty() ? 0 : shown[0]->curves[0].size();
    for (size_t t = 0; t < n; ++t) {
      ds << t;
      for (auto* r : shown) {
        double mean = 0, mn = HUGE_VAL, mx = -HUGE_VAL;
        for (const auto& c : r->curves) {
          mean += c[t] / double(r->curves.size());
          mn = std::min(mn, c[t]);
          mx = std::max(mx, c[t]);
        }
        ds << '\t' << format_double_csv(mean) << '\t' << format_double_csv(mn) << '\t'
           << format_double_csv(mx);
      }
      ds << '\n';
    }
    write_file_atomic((out / data).string(), ds.str());
    const std::string png = "plot_K" + std::to_string(K) + ".png";
    pngs.push_back(png);
    gp << "set output '" << png << "'\nset title '" << cfg.run.name << ": " << family_name(cfg.eval.task.family)
       << " test, K = " << K << " adaptation steps (diverged arms omitted)'\n";
    if (std::isfinite(lo) && start_hi > 0)  // keep an arm that blows up from flattening the rest
      gp << "set yrange [" << format_double_csv(lo / 2) << ":" << format_double_csv(start_hi * 100) << "]\n";
    gp << "plot ";
    for (size_t i = 0; i < shown.size(); ++i) {
      const int col = 2 + 3 * int(i);
      const bool dashed = shown[i]->source == "adapt";
      const std::string colour = kColours[i % (sizeof(kColours) / sizeof(kColours[0]))];
      const std::string label = shown[i]->arm + (dashed ? "@adapt" : "");
      gp << (i ? ", \\\n  " : "") << "'" << data << "' using 1:" << col + 1 << ":" << col + 2
         << " with filledcurves fs transparent solid 0.12 lc rgb '" << colour << "' notitle, '"
         << data << "' using 1:" << col << " with lines lw 2 dt " << (dashed ? 2 : 1)
         << " lc rgb '" << colour << "' title '" << label << "'";
    }
    gp << "\n";
  }
  // An mlp test task: full training loss (log scale) and test accuracy at the report steps, every
  // arm in one picture of two panels (plot_mlp.png).
  const bool mlp = !results.empty() && !results[0].mlp.empty();
  if (mlp) {
    std::ostringstream ds;
    ds << "# step";
    for (const auto& r : results) ds << "\t" << r.arm << "@" << r.source << "_K" << r.K << "(train_loss,test_accuracy)";
    ds << "\n";
    std::vector<std::vector<MlpPoint>> means;
    for (const auto& r : results) means.push_back(mean_mlp_points(r));
    for (size_t i = 0; i < means[0].size(); ++i) {
      ds << means[0][i].step;
      for (const auto& m : means)
        ds << '\t' << format_double_csv(m[i].train_loss) << '\t' << format_double_csv(m[i].test_accuracy);
      ds << '\n';
    }
    write_file_atomic((out / "plot_mlp_data.tsv").string(), ds.str());
    gp << "set output 'plot_mlp.png'\nset terminal pngcairo size 1100,900 noenhanced\nunset title\n"
       << "set multiplot layout 2,1 title '" << cfg.run.name << ": mlp test task, mean over seeds'\n";
    for (int panel = 0; panel < 2; ++panel) {
      if (panel == 0)
        gp << "set logscale y\nset format y '%g'\nset yrange [*:*]\nset ylabel 'full training loss'\n";
      else
        gp << "unset logscale y\nset format y '%g'\nset yrange [0:1]\nset ylabel 'test accuracy'\n";
      gp << "plot ";
      for (size_t i = 0; i < results.size(); ++i) {
        const std::string colour = kColours[i % (sizeof(kColours) / sizeof(kColours[0]))];
        std::string label = results[i].arm + (results[i].source == "adapt" ? "@adapt" : "");
        if (results[i].K > 0) label += " K=" + std::to_string(results[i].K);
        gp << (i ? ", \\\n  " : "") << "'plot_mlp_data.tsv' using 1:" << 2 + 2 * int(i) + panel
           << " with linespoints lw 2 dt " << (results[i].source == "adapt" ? 2 : 1) << " lc rgb '"
           << colour << "' title '" << label << "'";
      }
      gp << "\n";
    }
    gp << "unset multiplot\n";
  }
  write_file_atomic((out / "plot.gp").string(), gp.str());
  const std::string cmd = "cd '" + out.string() + "' && gnuplot plot.gp 2>gnuplot.err";
  const int rc = std::system(cmd.c_str());
  if (rc == 0 && fs::exists(out / pngs[0])) {
    fs::copy_file(out / pngs[0], out / "plot.png", fs::copy_options::overwrite_existing);
    fs::remove(out / "gnuplot.err");
    summary["plot"] = "plot.png";
    if (mlp && fs::exists(out / "plot_mlp.png")) summary["plot_mlp"] = "plot_mlp.png";
  } else {
    progress.line("warning: gnuplot failed or is missing (see gnuplot.err); plot data and plot.gp "
                  "are written, run 'gnuplot plot.gp' in the output directory after installing it");
    summary["plot"] = nullptr;
  }
}

}  // namespace ml2o
