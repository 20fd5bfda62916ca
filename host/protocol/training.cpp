// One training stage of a run: creates or resumes <out>/checkpoints/<method>.ckpt, trains, and
// writes <out>/<method>.params.
#include <algorithm>
#include <cmath>
#include <filesystem>

#include "ml2o/io.hpp"
#include "ml2o/progress.hpp"
#include "ml2o/protocol.hpp"

namespace fs = std::filesystem;

namespace ml2o {

namespace {

// Training that never took a step (every meta-step non-finite, then early stopping or max_epochs)
// diverged, even when the consecutive-skip limit never fired.
void require_some_step_taken(const TrainerState& st, Method method) {
  if (st.skipped_steps == 0 || st.loss_history.empty()) return;
  for (double l : st.loss_history)
    if (!std::isnan(l)) return;
  throw DivergenceError(std::string("meta-training (") + method_name(method) + ") diverged: all " +
                        std::to_string(st.skipped_steps) + " meta-steps had a non-finite meta-loss or "
                        "gradient and were skipped; lower train.lr");
}

}  // namespace

TrainerState run_training(const Config& cfg, Backend& backend, Method method,
                          const RunOptions& opts, Progress& progress, const LearnedOptimizer* init) {
  const fs::path out(opts.out_dir);
  fs::create_directories(out / "checkpoints");
  const std::string ckpt = (out / "checkpoints" / (std::string(method_name(method)) + ".ckpt")).string();
  const uint64_t hash = config_hash(cfg) ^ uint64_t(method);
  TrainerState st;
  if (opts.resume && fs::exists(ckpt)) {
    st = trainer_from_bytes(read_file(ckpt), ckpt, hash);
    progress.line(std::string("resuming ") + method_name(method) + " training at epoch " +
                  std::to_string(st.epoch) + " from " + ckpt);
  } else {
    st = make_trainer(method, cfg.optimizer, init_weights_seed(cfg.run.seed, cfg.train.seed));
    if (init) {
      if (init->hyper.arch != cfg.optimizer.arch)
        throw ConfigError(std::string("--init: params are ") + arch_name(init->hyper.arch) +
                          " but the config's optimizer.arch is " + arch_name(cfg.optimizer.arch));
      st.opt = *init;
    }
  }
  progress.stage(std::string("train ") + method_name(method));
  double last_ckpt = now_s();
  auto save = [&](const TrainerState& s) {
    write_file_atomic(ckpt, trainer_to_bytes(s, hash));
    last_ckpt = now_s();
  };
  TrainHooks hooks;
  hooks.progress = [&](const TrainerState& s, const std::string& status) {
    const double frac = double(s.epoch) / std::max(1, cfg.train.max_epochs);
    std::string text = "epoch " + std::to_string(s.epoch) + "/" + std::to_string(cfg.train.max_epochs) +
                       " stage " + std::to_string(s.stage) + " (" +
                       std::to_string(cfg.train.curriculum[s.stage]) + " steps)";
    if (!s.loss_history.empty()) text += " meta-loss " + fmt_g(s.loss_history.back());
    text += " evals " + std::to_string(s.eval_history.size());
    if (!s.eval_history.empty()) text += " last " + fmt_g(s.eval_history.back());
    if (s.skipped_steps) text += " skipped " + std::to_string(s.skipped_steps);
    if (!status.empty()) text += " [" + status + "]";
    progress.update(text, frac);
  };
  hooks.after_step = [&](const TrainerState&) {
    if (g_interrupt_requested.load()) return StepAction::save_and_stop;
    return now_s() - last_ckpt >= opts.checkpoint_every_s ? StepAction::save : StepAction::go_on;
  };
  hooks.save = save;
  const bool done = train(cfg.train, cfg.ml2o, backend, st, hooks);
  if (!done) {
    progress.finish_line();
    throw Interrupted("interrupted during " + std::string(method_name(method)) +
                      " training; checkpoint written to " + ckpt);
  }
  save(st);
  require_some_step_taken(st, method);
  save_params((out / (std::string(method_name(method)) + ".params")).string(), st.opt);
  progress.line(std::string(method_name(method)) + " training finished: " + std::to_string(st.epoch) +
                " epochs, stage " + std::to_string(st.stage) + ", " +
                std::to_string(st.eval_history.size()) + " evaluations, " +
                std::to_string(st.skipped_steps) + " skipped steps");
  return st;
}

}  // namespace ml2o
