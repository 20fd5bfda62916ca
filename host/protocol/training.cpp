// One training stage of a run: creates or resumes <out>/checkpoints/<method>.ckpt, trains, and
// writes <out>/<method>.params. In a distributed run rank 0 alone reads and writes files: it
// sends the checkpoint to the others, and every rank agrees on when to save (dist.hpp).
#include <algorithm>
#include <cmath>
#include <filesystem>

#include "ml2o/dist.hpp"
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
  const std::string ckpt = (out / "checkpoints" / (std::string(method_name(method)) + ".ckpt")).string();
  const uint64_t hash = config_hash(cfg) ^ uint64_t(method);
  const CheckpointExpect expect{hash, method, cfg.optimizer, &cfg.train};
  std::string saved;  // "+" and the checkpoint's bytes when resuming one, else empty
  dist::on_root([&] {
    fs::create_directories(out / "checkpoints");
    if (opts.resume && fs::exists(ckpt)) saved = "+" + read_checkpoint_bytes(ckpt, expect);
  });
  saved = dist::broadcast(saved);
  TrainerState st;
  if (!saved.empty()) {
    st = trainer_from_bytes(saved.substr(1), ckpt, expect);
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
  st.opt.hyper.output_scale = cfg.optimizer.output_scale;  // not in params files: the config's
  progress.stage(std::string("train ") + method_name(method));
  double last_ckpt = now_s();
  auto save = [&](const TrainerState& s) {
    if (dist::root()) write_file_atomic(ckpt, trainer_to_bytes(s, hash));
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
  // Saving reads the trajectories from every rank, so every rank takes the same action: rank 0's
  // clock decides when to save, and an interrupt on any rank stops all.
  hooks.after_step = [&](const TrainerState&) {
    StepAction a = StepAction::go_on;
    if (g_interrupt_requested.load()) a = StepAction::save_and_stop;
    else if (dist::root() && now_s() - last_ckpt >= opts.checkpoint_every_s) a = StepAction::save;
    return StepAction(dist::allreduce_max(int(a)));
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
  if (dist::root()) save_params((out / (std::string(method_name(method)) + ".params")).string(), st.opt);
  progress.line(std::string(method_name(method)) + " training finished: " + std::to_string(st.epoch) +
                " epochs, stage " + std::to_string(st.stage) + ", " +
                std::to_string(st.eval_history.size()) + " evaluations, " +
                std::to_string(st.skipped_steps) + " skipped steps");
  return st;
}

}  // namespace ml2o
