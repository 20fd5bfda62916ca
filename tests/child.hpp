// Starting the built ml2o binary from tests: always an argument vector (no shell), stdout and
// stderr to a file, optionally in another working directory or under a file-size limit.
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sstream>
#include <string>
#include <vector>

#include "ml2o/io.hpp"

extern char** environ;

namespace ml2o::testing {

struct ChildOptions {
  std::string output_file = "/dev/null";  // stdout and stderr
  std::string cwd;                        // empty: the test's own
  long file_size_limit = -1;              // bytes (RLIMIT_FSIZE); -1: none
};

// Starts ml2o with `args` (argv[1...]); returns the child's pid.
inline pid_t start_ml2o(const std::vector<std::string>& args, const ChildOptions& o = {}) {
  std::vector<char*> argv{const_cast<char*>(ML2O_BINARY)};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  if (o.file_size_limit >= 0) {  // rlimits need fork + exec
    const pid_t pid = ::fork();
    if (pid == 0) {
      const rlimit lim{rlim_t(o.file_size_limit), rlim_t(o.file_size_limit)};
      ::setrlimit(RLIMIT_FSIZE, &lim);
      const int fd = ::open(o.output_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      if (!o.cwd.empty() && ::chdir(o.cwd.c_str()) != 0) ::_exit(126);
      ::execv(ML2O_BINARY, argv.data());
      ::_exit(127);
    }
    return pid;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, o.output_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  if (!o.cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, o.cwd.c_str());
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, ML2O_BINARY, &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

// The exit status, or 128 + the signal that killed it.
inline int wait_ml2o(pid_t pid) {
  int status = 0;
  if (pid <= 0 || ::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Runs ml2o to completion; `output` (optional) receives its stdout and stderr.
inline int run_ml2o(const std::vector<std::string>& args, std::string* output = nullptr,
                    ChildOptions o = {}) {
  std::string tmp;
  if (output && o.output_file == "/dev/null") {
    tmp = "/tmp/ml2o_test_output_" + std::to_string(::getpid());
    o.output_file = tmp;
  }
  const int rc = wait_ml2o(start_ml2o(args, o));
  if (output) *output = read_file(o.output_file);
  if (!tmp.empty()) ::unlink(tmp.c_str());
  return rc;
}

// "run a.toml --out o" -> {"run", "a.toml", "--out", "o"} (for arguments without spaces).
inline std::vector<std::string> words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

}  // namespace ml2o::testing
