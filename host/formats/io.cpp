#include "ml2o/io.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <unistd.h>

namespace ml2o {

void write_file_atomic(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw IoError("cannot write " + tmp + ": " + std::strerror(errno));
  int err = 0;
  if (std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fflush(f) != 0 ||
      ::fsync(fileno(f)) != 0)
    err = errno ? errno : EIO;
  if (std::fclose(f) != 0 && !err) err = errno ? errno : EIO;
  if (err) {
    std::remove(tmp.c_str());
    throw IoError("cannot write " + path + " (" + std::to_string(bytes.size()) +
                  " bytes): " + std::strerror(err) + "; the previous file is unchanged");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw IoError("cannot rename " + tmp + " to " + path + ": " + std::strerror(e));
  }
}

namespace {
// Appends up to n bytes from fd to out; returns how many were read (fewer only at end of file).
size_t read_some(int fd, std::string& out, size_t n, const std::string& path) {
  size_t got = 0;
  char buf[65536];
  while (got < n) {
    const ssize_t r = ::read(fd, buf, std::min(sizeof buf, n - got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw FormatError(path + ": read error: " + std::strerror(errno));
    if (r == 0) break;
    out.append(buf, size_t(r));
    got += size_t(r);
  }
  return got;
}

std::string too_large(const std::string& path, const std::string& size, size_t max_bytes,
                      const std::string& kind) {
  return path + ": " + size + " bytes, more than " + (kind.empty() ? std::string("allowed") : "an ml2o " + kind + " can hold here") +
         " (at most " + std::to_string(max_bytes) + " bytes)";
}
}  // namespace

std::string read_file(const std::string& path, size_t max_bytes, const std::string& magic,
                      const std::string& kind) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw FormatError(path + ": cannot open file: " + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw FormatError(path + ": cannot stat file: " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) throw FormatError(path + ": is a directory, not a file");
  const bool regular = S_ISREG(st.st_mode);
  if (regular && uint64_t(st.st_size) > max_bytes)
    throw FormatError(too_large(path, std::to_string(st.st_size), max_bytes, kind));
  std::string bytes;
  if (regular) bytes.reserve(size_t(st.st_size));
  if (!magic.empty()) {
    read_some(fd, bytes, magic.size(), path);
    if (bytes.compare(0, bytes.size(), magic, 0, bytes.size()) != 0)
      throw FormatError(path + ": not an ml2o " + kind + " (wrong magic; expected \"" + magic + "\")");
  }
  // A regular file is read to its size as it was opened; anything else to max_bytes + 1.
  const size_t want = regular ? size_t(st.st_size) : (max_bytes == kNoSizeLimit ? max_bytes : max_bytes + 1);
  if (bytes.size() < want) read_some(fd, bytes, want - bytes.size(), path);
  if (bytes.size() > max_bytes)
    throw FormatError(too_large(path, "more than " + std::to_string(max_bytes), max_bytes, kind));
  return bytes;
}

}  // namespace ml2o
