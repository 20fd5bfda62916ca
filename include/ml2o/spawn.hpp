// Child programs (gnuplot) started with an argument vector, never through a shell, so no user
// string (an output path, a run name) is ever interpreted.
#pragma once
#include <string>
#include <vector>

namespace ml2o {

struct ProgramResult {
  bool started = false;   // false: the program could not be started (start_error says why)
  std::string start_error;
  bool exited = false;    // true: exit_code is valid; false: killed by signal `signal`
  int exit_code = -1;
  int signal = 0;
  std::string stderr_text;  // everything the program wrote to stderr
  bool ok() const { return started && exited && exit_code == 0; }
};

// Runs argv[0] (looked up on PATH when it has no '/') with the given arguments in directory `cwd`
// (empty: the current one), stdin and stdout from/to /dev/null, and waits for it.
ProgramResult run_program(const std::vector<std::string>& argv, const std::string& cwd);

}  // namespace ml2o
