// plot.png: log-scale objective against step, mean over seeds with a min-max band, one picture per
// K, drawn by gnuplot from plot.gp and plot_data_K<k>.tsv (which stay for re-plotting).
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

// A gnuplot single-quoted string: a quote inside is doubled.
std::string gnuplot_quoted(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("''") : std::string(1, c);
  return q + "'";
}

// Runs gnuplot on `script` in `out` without a shell. The pictures are drawn under temporary names
// and renamed only when gnuplot succeeded, so a failure (missing gnuplot, full disk) leaves no
// cut-off plot.png; gnuplot's messages go to gnuplot.err, written whole or not at all.
void draw_with_gnuplot(const fs::path& out, const std::string& script, const std::vector<std::string>& pngs,
                       Progress& progress, nlohmann::json& summary) {
  const std::string tmp_suffix = ".tmp." + std::to_string(::getpid());
  std::string run_script = script;
  for (const std::string& png : pngs)
    for (size_t p = 0; (p = run_script.find("set output '" + png + "'", p)) != std::string::npos; ++p)
      run_script.insert(p + 12 + png.size(), tmp_suffix);
  const std::string run_gp = "plot.gp" + tmp_suffix;
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
      write_file_atomic((out / "plot.png").string(), read_file((out / pngs[0]).string()));
      fs::remove(out / "gnuplot.err");
      summary["plot"] = "plot.png";
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
  progress.line("warning: no plot: " + why + ". The plot data and plot.gp are written; run 'gnuplot "
                "plot.gp' in " + out.string() + " to draw it");
  summary["plot"] = nullptr;
}

}  // namespace

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
    gp << "set output '" << png << "'\nset title "
       << gnuplot_quoted(cfg.run.name + ": " + family_name(cfg.eval.task.family) + " test, K = " +
                         std::to_string(K) + " adaptation steps (diverged arms omitted)")
       << "\n";
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
  write_file_atomic((out / "plot.gp").string(), gp.str());
  draw_with_gnuplot(out, gp.str(), pngs, progress, summary);
}

}  // namespace ml2o
