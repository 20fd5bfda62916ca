// plot.png: log-scale objective against step, mean over seeds with a min-max band, one picture per
// K, drawn by gnuplot from plot.gp and plot_data_K<k>.tsv (which stay for re-plotting). The same
// drawing serves plot_in_distribution.png and a sweep's bands across meta-training seeds.
#include "plot.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "ml2o/io.hpp"
#include "ml2o/progress.hpp"
#include "ml2o/protocol.hpp"
#include "ml2o/spawn.hpp"

namespace fs = std::filesystem;

namespace ml2o {

namespace {
// One colour per arm name, so an arm looks the same in every picture and no two arms share one.
const std::pair<const char*, const char*> kArmColours[] = {
    {"ml2o", "#d62728"},     {"transfer_learning", "#1f77b4"}, {"direct_transfer", "#17becf"},
    {"vanilla", "#9467bd"},  {"l2o", "#393b79"},               {"sgd", "#8c564b"},
    {"momentum", "#e377c2"}, {"adam", "#2ca02c"},              {"rmsprop", "#bcbd22"},
    {"ista", "#ff7f0e"},     {"fista", "#000000"},
};
constexpr const char* kUnknownArmColour = "#7f7f7f";

// A gnuplot single-quoted string: a quote inside is doubled.
std::string gnuplot_quoted(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("''") : std::string(1, c);
  return q + "'";
}

// Runs gnuplot on `script` (saved as spec.stem + ".gp") in `out` without a shell. The pictures are
// drawn under temporary names and renamed only when gnuplot succeeded, so a failure (missing
// gnuplot, full disk) leaves no cut-off picture; gnuplot's messages go to gnuplot.err, written whole
// or not at all. pngs[0] is also copied to spec.stem + ".png".
void draw_with_gnuplot(const fs::path& out, const std::string& script, const std::vector<std::string>& pngs,
                       const PlotSpec& spec, Progress& progress, nlohmann::json& summary) {
  const std::string gp_name = spec.stem + ".gp";
  const std::string tmp_suffix = ".tmp." + std::to_string(::getpid());
  std::string run_script = script;
  for (const std::string& png : pngs)
    for (size_t p = 0; (p = run_script.find("set output '" + png + "'", p)) != std::string::npos; ++p)
      run_script.insert(p + 12 + png.size(), tmp_suffix);
  const std::string run_gp = gp_name + tmp_suffix;
  write_file_atomic((out / run_gp).string(), run_script);
  const ProgramResult r = run_program({"gnuplot", run_gp}, out.string());
  fs::remove(out / run_gp);
  bool drawn = r.ok();
  for (const std::string& png : pngs) {
    std::error_code ec;
    drawn = drawn && fs::file_size(out / (png + tmp_suffix), ec) > 0 && !ec;
  }
  try {
    if (drawn) {
      for (const std::string& png : pngs) fs::rename(out / (png + tmp_suffix), out / png);
      write_file_atomic((out / (spec.stem + ".png")).string(), read_file((out / pngs[0]).string()));
      fs::remove(out / "gnuplot.err");
      summary[spec.summary_key] = spec.stem + ".png";
      if (std::find(pngs.begin(), pngs.end(), "plot_mlp.png") != pngs.end()) summary["plot_mlp"] = "plot_mlp.png";
      return;
    }
  } catch (const IoError&) {
    drawn = false;
  } catch (const fs::filesystem_error&) {
    drawn = false;
  }
  for (const std::string& png : pngs) fs::remove(out / (png + tmp_suffix));
  std::string why;
  if (!r.started) why = r.start_error;
  else if (!r.exited) why = "gnuplot was killed by signal " + std::to_string(r.signal);
  else if (r.exit_code != 0) why = "gnuplot failed (exit " + std::to_string(r.exit_code) + ")";
  else why = "gnuplot wrote no picture (disk full?)";
  try {
    write_file_atomic((out / "gnuplot.err").string(), why + "\n" + r.stderr_text);
    why += "; see gnuplot.err";
  } catch (const IoError&) {
  }
  progress.line("warning: no plot: " + why + ". The plot data and " + gp_name + " are written; run 'gnuplot " +
                gp_name + "' in " + out.string() + " to draw it");
  summary[spec.summary_key] = nullptr;
}

}  // namespace

const char* arm_colour(const std::string& arm) {
  for (const auto& [name, colour] : kArmColours)
    if (arm == name) return colour;
  return kUnknownArmColour;
}

std::vector<std::string> coloured_arms() {
  std::vector<std::string> names;
  for (const auto& entry : kArmColours) names.push_back(entry.first);
  return names;
}

PlotSpec PlotSpec::out_of_distribution(const Config& cfg) {
  PlotSpec p;
  p.title = std::string(family_name(cfg.eval.task.family)) + " test,";
  for (int K : cfg.adapt.K)
    if (std::find(p.Ks.begin(), p.Ks.end(), K) == p.Ks.end()) p.Ks.push_back(K);
  if (p.Ks.empty()) p.Ks.push_back(0);
  return p;
}

PlotSpec PlotSpec::in_distribution(const Config&) {
  PlotSpec p;
  p.stem = "plot_in_distribution";
  p.summary_key = "plot_in_distribution";
  p.title = "in distribution (fresh training-task instances), frozen weights";
  p.band = "min-max over seeds and training tasks";
  p.Ks = {0};
  return p;
}

void write_plot(const fs::path& out, const std::vector<ArmResult>& results, const Config& cfg,
                Progress& progress, nlohmann::json& summary, const PlotSpec& spec) {
  const std::string gp_name = spec.stem + ".gp";
  std::ostringstream gp;
  gp << "# gnuplot script written by ml2o " << engine_version() << "; rerun: gnuplot " << gp_name << "\n"
     << "set terminal pngcairo size 1100,700 noenhanced\nset logscale y\nset format y '%.0e'\n"
     << "set xlabel 'optimizee step'\nset ylabel 'mean objective (band: " << spec.band << ")'\n"
     << "set key outside right\nset grid\n";
  std::vector<std::string> pngs;
  for (int K : spec.Ks) {
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
    const std::string data = spec.stem + "_data_K" + std::to_string(K) + ".tsv";
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
    const std::string png = spec.stem + "_K" + std::to_string(K) + ".png";
    pngs.push_back(png);
    std::string title = cfg.run.name + ": " + spec.title;
    if (spec.Ks.size() > 1 || K != 0) title += " K = " + std::to_string(K) + " adaptation steps";
    gp << "set output '" << png << "'\nset title " << gnuplot_quoted(title + " (diverged arms omitted)") << "\n";
    if (std::isfinite(lo) && start_hi > 0)  // keep an arm that blows up from flattening the rest
      gp << "set yrange [" << format_double_csv(lo / 2) << ":" << format_double_csv(start_hi * 100) << "]\n";
    gp << "plot ";
    for (size_t i = 0; i < shown.size(); ++i) {
      const int col = 2 + 3 * int(i);
      const bool dashed = shown[i]->source == "adapt";
      const std::string colour = arm_colour(shown[i]->arm);
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
  const bool mlp = spec.stem == "plot" && !results.empty() && !results[0].mlp.empty();
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
       << "set multiplot layout 2,1 title " << gnuplot_quoted(cfg.run.name + ": mlp test task, mean over seeds") << "\n";
    for (int panel = 0; panel < 2; ++panel) {
      if (panel == 0)
        gp << "set logscale y\nset format y '%g'\nset yrange [*:*]\nset ylabel 'full training loss'\n";
      else
        gp << "unset logscale y\nset format y '%g'\nset yrange [0:1]\nset ylabel 'test accuracy'\n";
      gp << "plot ";
      for (size_t i = 0; i < results.size(); ++i) {
        const std::string colour = arm_colour(results[i].arm);
        std::string label = results[i].arm + (results[i].source == "adapt" ? "@adapt" : "");
        if (results[i].K > 0) label += " K=" + std::to_string(results[i].K);
        gp << (i ? ", \\\n  " : "") << "'plot_mlp_data.tsv' using 1:" << 2 + 2 * int(i) + panel
           << " with linespoints lw 2 dt " << (results[i].source == "adapt" ? 2 : 1) << " lc rgb '"
           << colour << "' title '" << label << "'";
      }
      gp << "\n";
    }
    gp << "unset multiplot\n";
    pngs.push_back("plot_mlp.png");
  }
  write_file_atomic((out / gp_name).string(), gp.str());
  draw_with_gnuplot(out, gp.str(), pngs, spec, progress, summary);
}

}  // namespace ml2o
