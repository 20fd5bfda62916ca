// SIGINT and SIGTERM, the same in every long command (see docs/reliability.md).
#pragma once
#include <string>

namespace ml2o {

// How a command reacts to the first SIGINT or SIGTERM.
enum class OnInterrupt {
  // Set g_interrupt_requested: the command finishes its current step, saves what resumes, and
  // throws Interrupted (run, train).
  finish_step_and_save,
  // Print `message` and exit at once with 128 + signal: for commands that have nothing to save
  // (adapt, eval, baseline) and publish their output only when complete.
  stop_now,
};

// Installs the handlers; a second signal of the same kind ends the process at once.
void install_interrupt_handlers(OnInterrupt mode, const std::string& message);
// 130 after SIGINT, 143 after SIGTERM (128 + the signal received; 130 when none was).
int interrupt_exit_code();

}  // namespace ml2o
