// The output claim: checks, lock and temporary-file cleanup for every command's --out.
#include "ml2o/output_claim.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "ml2o/config.hpp"
#include "ml2o/io.hpp"

namespace fs = std::filesystem;

namespace ml2o {

bool is_temporary_name(const std::string& name, long* pid) {
  const size_t p = name.rfind(".tmp.");
  if (p == std::string::npos || p == 0 || p + 5 >= name.size()) return false;
  const std::string digits = name.substr(p + 5);
  if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) return false;
  if (pid) *pid = std::stol(digits);
  return true;
}

namespace {

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

void require_path_given(const std::string& path) {
  if (path.empty())
    throw ConfigError("--out '': an empty path names no location; give a directory (. for the "
                      "current one, which must then be empty or hold this command's output)");
}

// Regular files named *.tmp.<pid> under `dir`; only_pid >= 0 keeps that process's.
void remove_temporaries(const fs::path& dir, long only_pid) {
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    long pid = -1;
    if (it->is_regular_file(ec) && is_temporary_name(it->path().filename().string(), &pid) &&
        (only_pid < 0 || pid == only_pid))
      fs::remove(it->path(), ec);
  }
}

// Entries of `dir` other than the lock file and temporary files.
bool holds_other_entries(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name != OutputClaim::kLockName && !is_temporary_name(name)) return true;
  }
  return false;
}

std::string read_lock_owner(int fd) {
  char buf[128];
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  std::string s(buf, n > 0 ? size_t(n) : 0);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  return s;
}

void write_lock_owner(int fd, const std::string& command, const fs::path& lock) {
  const std::string text = command + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, text.data(), text.size(), 0) != ssize_t(text.size()))
    throw IoError("cannot write " + lock.string() + ": " + std::strerror(errno));
}

}  // namespace

OutputClaim OutputClaim::directory(const std::string& path_s, const std::string& command, bool resumable,
                                   bool resume) {
  require_path_given(path_s);
  const fs::path dir(path_s);
  const fs::path lock = dir / kLockName;
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (fs::exists(st) && !fs::is_directory(st))
    throw ConfigError("--out " + quoted(dir) + " exists and is not a directory (a file or device); "
                      "ml2o writes only into a new directory, an empty one, or its own earlier output");
  bool created_dir = false;
  if (!fs::exists(st)) {
    created_dir = fs::create_directories(dir);
  } else if (!fs::exists(lock) && holds_other_entries(dir)) {
    throw ConfigError("--out " + quoted(dir) + " is not empty and holds no ml2o output; choose a "
                      "new or empty directory (nothing was changed)");
  }
  const bool lock_was_there = fs::exists(lock);
  const int fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw IoError("cannot create " + lock.string() + ": " + std::strerror(errno));
  OutputClaim claim(dir, true, fd);  // closes the lock on every error below
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int e = errno;
    if (e == EWOULDBLOCK)
      throw ConfigError("--out " + quoted(dir) + " is in use by another ml2o process; wait for it to "
                        "finish or choose another directory (nothing was changed)");
    throw IoError("cannot lock " + lock.string() + ": " + std::strerror(e));
  }
  claim.locked_ = true;
  claim.created_dir_ = created_dir;
  claim.created_lock_ = !lock_was_there;
  const std::string owner = read_lock_owner(fd);
  if (holds_other_entries(dir)) {
    // An earlier output: only this command's own, with --resume, continues it.
    if (owner.empty())
      throw ConfigError("--out " + quoted(dir) + " is not empty and holds no ml2o output; choose a "
                        "new or empty directory (nothing was changed)");
    if (owner != command)
      throw ConfigError("--out " + quoted(dir) + " holds the output of 'ml2o " + owner +
                        "'; choose another directory for 'ml2o " + command + "' (nothing was changed)");
    if (!resumable)
      throw ConfigError("--out " + quoted(dir) + " already holds the results of an earlier 'ml2o " +
                        command + "'; choose another directory (nothing was changed)");
    if (!resume)
      throw ConfigError("--out " + quoted(dir) + " already holds a run of 'ml2o " + command +
                        "'; resume it with --resume, or choose another directory (nothing was changed)");
    claim.continues_ = true;
  }
  if (owner != command) write_lock_owner(fd, command, lock);
  // The lock is held: any temporary file here was left by an earlier, killed ml2o process.
  remove_temporaries(dir, -1);
  return claim;
}

OutputClaim OutputClaim::file(const std::string& path_s) {
  require_path_given(path_s);
  const fs::path file(path_s);
  struct stat sb;
  if (::lstat(file.c_str(), &sb) == 0)
    throw ConfigError("--out " + quoted(file) + " exists; ml2o never replaces a file (not even its own "
                      "input): choose a new path (nothing was changed)");
  const fs::path dir = file.has_parent_path() ? file.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw ConfigError("--out " + quoted(file) + ": the directory " + quoted(dir) + " does not exist");
  if (file.filename().empty() || file.filename() == "." || file.filename() == "..")
    throw ConfigError("--out " + quoted(file) + ": names a directory, not a file");
  // Temporary files of this name left by killed processes (the pid is gone).
  const std::string prefix = file.filename().string() + ".tmp.";
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    long pid = -1;
    if (name.rfind(prefix, 0) == 0 && is_temporary_name(name, &pid) && pid != ::getpid() &&
        ::kill(pid_t(pid), 0) != 0 && errno == ESRCH)
      fs::remove(e.path(), ec);
  }
  return OutputClaim(file, false, -1);
}

void OutputClaim::publish(const std::string& bytes) const {
  const std::string tmp = path_.string() + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw IoError("cannot write " + tmp + ": " + std::strerror(errno));
  size_t done = 0;
  int err = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = n < 0 ? errno : EIO;
      break;
    }
    done += size_t(n);
  }
  if (!err && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && !err) err = errno;
  if (err) {
    ::unlink(tmp.c_str());
    throw IoError("cannot write " + path_.string() + " (" + std::to_string(bytes.size()) +
                  " bytes): " + std::strerror(err) + "; nothing was written");
  }
  // A hard link fails with EEXIST instead of replacing a file created meanwhile.
  if (::link(tmp.c_str(), path_.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    if (e == EEXIST)
      throw ConfigError("--out " + quoted(path_) + " appeared while ml2o was working; it was not "
                        "replaced (nothing was written)");
    throw IoError("cannot create " + path_.string() + ": " + std::strerror(e));
  }
  ::unlink(tmp.c_str());
}

OutputClaim::OutputClaim(OutputClaim&& o) noexcept
    : path_(std::move(o.path_)), is_dir_(o.is_dir_), lock_fd_(o.lock_fd_), locked_(o.locked_),
      continues_(o.continues_), created_dir_(o.created_dir_), created_lock_(o.created_lock_) {
  o.lock_fd_ = -1;
  o.is_dir_ = false;
}

OutputClaim::~OutputClaim() {
  if (lock_fd_ < 0) return;
  try {
    if (is_dir_ && locked_) {
      remove_temporaries(path_, ::getpid());
      // Failed before writing anything (e.g. no CUDA device): leave no trace. Only while the lock
      // is held, so another process's lock file is never removed.
      if (created_lock_ && !holds_other_entries(path_)) {
        ::unlink((path_ / kLockName).c_str());
        if (created_dir_) ::rmdir(path_.c_str());
      }
    }
  } catch (...) {
  }
  ::close(lock_fd_);  // releases the flock
}

}  // namespace ml2o
