// Where a command writes, claimed before anything is written: the one set of rules every command
// (run, train, adapt, eval, baseline) follows for --out. See docs/reliability.md.
//
// A directory (run, train, eval, baseline) is accepted when it is new, empty, holds nothing but
// ml2o's lock file and temporary files, or, with --resume, holds an earlier output of the same
// command (run, or train of the same method). Anything else is refused with ConfigError (exit 2)
// and left as it was: a file or device node, a directory with other files, another command's output,
// an earlier output without --resume, an empty path. The claim holds an flock on <dir>/.ml2o.lock
// until it is destroyed, so a second ml2o process on the same directory is refused ("in use by
// another ml2o process"), and it removes the temporary files (*.tmp.<pid>) of earlier, killed
// commands on claiming and its own on release.
//
// A file (adapt's params) must not exist at all (nothing is ever replaced, not even an input), its
// directory must exist, and publish() never replaces a file that appeared meanwhile.
#pragma once
#include <filesystem>
#include <string>

namespace ml2o {

class OutputClaim {
 public:
  // `command` names the command whose output this is ("run", "train ml2o", "eval", ...);
  // `resumable`: the command can continue its own earlier output when `resume` is set.
  static OutputClaim directory(const std::string& path, const std::string& command, bool resumable,
                               bool resume);
  static OutputClaim file(const std::string& path);

  OutputClaim(OutputClaim&& other) noexcept;
  OutputClaim& operator=(OutputClaim&&) = delete;
  OutputClaim(const OutputClaim&) = delete;
  ~OutputClaim();  // a directory it created and left empty (but for the lock) is removed

  const std::filesystem::path& path() const { return path_; }
  // The directory held an earlier output of this command (and resume was asked for).
  bool continues_earlier_output() const { return continues_; }
  // File claims: writes `bytes` to the claimed path (temporary file, fsync, rename without
  // replacing). Throws IoError when writing fails, ConfigError when the path appeared meanwhile.
  void publish(const std::string& bytes) const;

  static constexpr const char* kLockName = ".ml2o.lock";

 private:
  OutputClaim(std::filesystem::path path, bool is_dir, int lock_fd)
      : path_(std::move(path)), is_dir_(is_dir), lock_fd_(lock_fd) {}
  std::filesystem::path path_;
  bool is_dir_ = false;
  int lock_fd_ = -1;
  bool locked_ = false;
  bool continues_ = false;
  bool created_dir_ = false, created_lock_ = false;  // removed again if nothing else was written
};

// True for the names of ml2o's temporary files: <name>.tmp.<pid>.
bool is_temporary_name(const std::string& filename, long* pid = nullptr);

}  // namespace ml2o
