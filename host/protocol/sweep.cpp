// `ml2o sweep`: the protocol once per meta-training seed, and the aggregate across those seeds
// (summary.json with mean and spread per metric, curves.csv, plot.png with bands across seeds).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "ml2o/io.hpp"
#include "ml2o/protocol.hpp"
#include "outputs.hpp"
#include "plot.hpp"

namespace fs = std::filesystem;

namespace ml2o {

namespace {

// Mean, std (n - 1), min and max of a metric over the seeds where it is defined (not null).
nlohmann::json spread(const std::vector<nlohmann::json>& per_seed) {
  std::vector<double> v;
  for (const auto& x : per_seed)
    if (x.is_number()) v.push_back(x.get<double>());
  nlohmann::json out = {{"per_seed", per_seed}, {"n", v.size()}};
  if (v.empty()) {
    out["mean"] = out["std"] = out["min"] = out["max"] = nullptr;
    return out;
  }
  double mean = 0;
  for (double x : v) mean += x / double(v.size());
  double sq = 0;
  for (double x : v) sq += (x - mean) * (x - mean);
  out["mean"] = mean;
  out["std"] = v.size() > 1 ? std::sqrt(sq / double(v.size() - 1)) : 0.0;
  out["min"] = *std::min_element(v.begin(), v.end());
  out["max"] = *std::max_element(v.begin(), v.end());
  return out;
}

const nlohmann::json* find_arm(const nlohmann::json& arms, const nlohmann::json& like) {
  for (const auto& a : arms)
    if (a["arm"] == like["arm"] && a["K"] == like["K"] && a["source"] == like["source"]) return &a;
  return nullptr;
}

// One section ("arms" of each run's summary, or of its "in_distribution"), arm by arm in the order
// of the first run.
nlohmann::json aggregate_arms(const std::vector<const nlohmann::json*>& sections) {
  static const char* kScalars[] = {"final_mean", "start_mean", "steps_to_10x_below_start",
                                   "steps_to_100x_below_start", "skipped_adaptation_steps"};
  nlohmann::json out = nlohmann::json::array();
  for (const auto& first : *sections.front()) {
    std::vector<const nlohmann::json*> per_seed;
    for (const nlohmann::json* sec : sections) {
      const nlohmann::json* a = find_arm(*sec, first);
      if (!a)
        throw std::logic_error("sweep: arm " + first["arm"].get<std::string>() +
                               " is missing from one meta-training seed's results");
      per_seed.push_back(a);
    }
    nlohmann::json agg = {{"arm", first["arm"]}, {"K", first["K"]}, {"source", first["source"]},
                          {"seeds", first["seeds"]}};
    nlohmann::json notes = nlohmann::json::array();
    for (const auto* a : per_seed) notes.push_back((*a)["note"]);
    agg["notes"] = notes;
    for (const char* key : kScalars) {
      std::vector<nlohmann::json> vals;
      for (const auto* a : per_seed) vals.push_back((*a)[key]);
      agg[key] = spread(vals);
    }
    for (const char* step : {"10", "100", "1000"}) {
      std::vector<nlohmann::json> vals;
      for (const auto* a : per_seed) vals.push_back((*a)["objective_at_step"][step]);
      agg["objective_at_step"][step] = spread(vals);
    }
    out.push_back(agg);
  }
  return out;
}

// Per arm, one curve per meta-training seed: the mean over that run's evaluation seeds.
std::vector<ArmResult> per_seed_means(const std::vector<const std::vector<ArmResult>*>& runs) {
  std::vector<ArmResult> out;
  for (const ArmResult& first : *runs.front()) {
    ArmResult agg{first.arm, first.source, "", first.K, {}, 0, {}};
    for (const auto* run : runs)
      for (const ArmResult& r : *run) {
        if (r.arm != first.arm || r.K != first.K || r.source != first.source) continue;
        std::vector<double> mean(r.curves.empty() ? 0 : r.curves[0].size(), 0.0);
        for (const auto& c : r.curves)
          for (size_t t = 0; t < mean.size(); ++t) mean[t] += c[t] / double(r.curves.size());
        agg.curves.push_back(std::move(mean));
        agg.skipped += r.skipped;
      }
    out.push_back(std::move(agg));
  }
  return out;
}

std::string seed_curves_csv(const std::vector<ArmResult>& means, const std::vector<uint64_t>& seeds) {
  std::ostringstream csv;
  csv << "arm,K,source,train_seed,step,objective\n";
  for (const auto& r : means)
    for (size_t i = 0; i < r.curves.size(); ++i)
      for (size_t t = 0; t < r.curves[i].size(); ++t)
        csv << r.arm << ',' << r.K << ',' << r.source << ',' << seeds[i] << ',' << t << ','
            << format_double_csv(r.curves[i][t]) << '\n';
  return csv.str();
}

std::string fmt_spread(const nlohmann::json& m) {
  if (m["mean"].is_null()) return "-";
  return fmt_g(m["mean"].get<double>()) + " +- " + fmt_g(m["std"].get<double>());
}

std::string sweep_table(const nlohmann::json& arms) {
  std::ostringstream table;
  table << "arm                 K   source  final (mean +- std over train seeds)   @100\n";
  for (const auto& a : arms) {
    char line[240];
    std::snprintf(line, sizeof line, "%-19s %-3d %-7s %-38s %s\n", a["arm"].get<std::string>().c_str(),
                  a["K"].get<int>(), a["source"].get<std::string>().c_str(),
                  fmt_spread(a["final_mean"]).c_str(), fmt_spread(a["objective_at_step"]["100"]).c_str());
    table << line;
  }
  return table.str();
}

}  // namespace

nlohmann::json aggregate_train_seeds(const std::vector<uint64_t>& train_seeds,
                                     const std::vector<ProtocolResult>& runs) {
  if (runs.empty() || runs.size() != train_seeds.size())
    throw std::logic_error("aggregate_train_seeds: one result per meta-training seed");
  nlohmann::json agg;
  agg["train_seeds"] = train_seeds;
  std::vector<const nlohmann::json*> arms, in_dist;
  for (const auto& r : runs) {
    arms.push_back(&r.summary.at("arms"));
    if (r.summary.contains("in_distribution") && r.summary["in_distribution"].contains("arms"))
      in_dist.push_back(&r.summary["in_distribution"]["arms"]);
  }
  agg["arms"] = aggregate_arms(arms);
  if (in_dist.size() == runs.size()) agg["in_distribution"] = {{"arms", aggregate_arms(in_dist)}};
  return agg;
}

void run_sweep(const Config& cfg, const std::vector<uint64_t>& train_seeds, const RunOptions& opts) {
  if (train_seeds.empty()) throw ConfigError("--train-seeds: give at least one meta-training seed");
  for (size_t i = 0; i < train_seeds.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (train_seeds[i] == train_seeds[j])
        throw ConfigError("--train-seeds: seed " + std::to_string(train_seeds[i]) + " is given twice");
  const fs::path out(opts.out_dir);
  const fs::path saved_cfg = out / "config.toml";
  if (fs::exists(out) && !fs::is_directory(out)) throw IoError(out.string() + " exists and is not a directory");
  if (fs::exists(out) && !fs::is_empty(out) && !opts.resume)
    throw ConfigError(out.string() + " is not empty; resume a sweep there with --resume, or choose "
                      "another --out (nothing was changed)");
  if (fs::exists(saved_cfg)) {
    Config prev = parse_config(read_file(saved_cfg.string()), saved_cfg.string());
    ConfigOverrides base = opts.overrides;
    base.train_seed.reset();
    base.apply(prev);
    if (config_hash(prev) != config_hash(cfg))
      throw ConfigError(cfg.path + ": differs from the config this sweep was started with (" +
                        saved_cfg.string() + "); --resume needs the same settings");
  }
  fs::create_directories(out);
  if (!fs::exists(saved_cfg)) write_file_atomic(saved_cfg.string(), read_file(cfg.path));

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<ProtocolResult> runs;
  for (size_t i = 0; i < train_seeds.size(); ++i) {
    const uint64_t seed = train_seeds[i];
    RunOptions o = opts;
    o.out_dir = (out / ("train-seed-" + std::to_string(seed))).string();
    o.overrides.train_seed = seed;
    Config c = cfg;
    o.overrides.apply(c);
    std::fprintf(stderr, "[ml2o] sweep: meta-training seed %llu (%zu of %zu) into %s\n",
                 static_cast<unsigned long long>(seed), i + 1, train_seeds.size(), o.out_dir.c_str());
    runs.push_back(run_protocol(c, o));
  }

  nlohmann::json summary = aggregate_train_seeds(train_seeds, runs);
  summary["engine"] = runs.front().summary["engine"];
  summary["backend"] = runs.front().summary["backend"];
  summary["config"] = cfg.json;
  summary["config"]["train"].erase("seed");  // varies: train_seeds
  nlohmann::json dirs = nlohmann::json::array();
  for (uint64_t s : train_seeds) dirs.push_back("train-seed-" + std::to_string(s));
  summary["runs"] = dirs;
  summary["what"] = "per arm and metric: the value of each meta-training seed's run (per_seed, in "
                    "the order of train_seeds), their mean, std (n - 1), min and max over the n "
                    "seeds where it is defined";

  Progress progress;
  std::vector<const std::vector<ArmResult>*> arm_runs, in_runs;
  for (const auto& r : runs) {
    arm_runs.push_back(&r.arms);
    in_runs.push_back(&r.in_distribution);
  }
  const std::vector<ArmResult> means = per_seed_means(arm_runs);
  write_file_atomic((out / "curves.csv").string(), seed_curves_csv(means, train_seeds));
  PlotSpec plot = PlotSpec::out_of_distribution(cfg);
  plot.band = "min-max over meta-training seeds";
  write_plot(out, means, cfg, progress, summary, plot);
  if (summary.contains("in_distribution")) {
    const std::vector<ArmResult> in_means = per_seed_means(in_runs);
    write_file_atomic((out / "curves_in_distribution.csv").string(), seed_curves_csv(in_means, train_seeds));
    PlotSpec in_plot = PlotSpec::in_distribution(cfg);
    in_plot.band = "min-max over meta-training seeds";
    write_plot(out, in_means, cfg, progress, summary, in_plot);
  }
  summary["wall_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  write_file_atomic((out / "summary.json").string(), summary.dump(2) + "\n");
  progress.line("sweep over " + std::to_string(train_seeds.size()) + " meta-training seeds in " +
                out.string() + " (summary.json, curves.csv, plot.png)\n" + sweep_table(summary["arms"]));
}

}  // namespace ml2o
