// Files: atomic writes (temporary, flush, rename) and a byte reader for the binary formats.
#pragma once
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace ml2o {

// A bad input file or setting; the message names the file, the key and what is allowed.
struct FormatError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Writing failed (disk full, permissions); the previous file at the path is untouched.
struct IoError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void write_file_atomic(const std::string& path, const std::string& bytes);

// Reads a whole file, refusing one larger than max_bytes (FormatError naming the file and both
// sizes): a regular file is refused from its size before any byte is read, anything else (a pipe,
// a device) after max_bytes + 1 bytes. With a `magic`, the first magic.size() bytes are compared
// before the rest is read, so a file of another kind fails after a few bytes, even an endless one
// such as /dev/zero: "PATH: not an ml2o KIND (wrong magic; expected \"MAGIC\")". Throws
// FormatError when the file cannot be opened or read.
constexpr size_t kNoSizeLimit = ~size_t(0);
std::string read_file(const std::string& path, size_t max_bytes = kNoSizeLimit,
                      const std::string& magic = "", const std::string& kind = "");

// Little-endian appends and bounds-checked reads.
class ByteWriter {
 public:
  template <class T> void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    buf_.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void put_bytes(const void* p, size_t n) {
    if (n) buf_.append(static_cast<const char*>(p), n);
  }
  std::string& bytes() { return buf_; }

 private:
  std::string buf_;
};

class ByteReader {
 public:
  ByteReader(const std::string& bytes, std::string source) : b_(bytes), src_(std::move(source)) {}
  template <class T> T get(const char* what) {
    T v;
    get_bytes(&v, sizeof(T), what);
    return v;
  }
  // Reads a count and checks, before anything is allocated, that `elem_size`-byte elements of that
  // count fit in what is left of the input and in `max_count`.
  uint64_t get_count(const char* what, size_t elem_size, uint64_t max_count) {
    const auto n = get<uint64_t>(what);
    if (n > max_count || (elem_size && n > remaining() / elem_size))
      throw FormatError(src_ + ": " + what + " is " + std::to_string(n) + ", more than " +
                        (n > max_count ? "allowed here (at most " + std::to_string(max_count) + ")"
                                       : "the " + std::to_string(remaining()) +
                                             " bytes left in the file hold"));
    return n;
  }
  void get_bytes(void* out, size_t n, const char* what) {
    if (n > b_.size() - pos_)
      throw FormatError(src_ + ": truncated file: ran out of bytes reading " + what + " at offset " +
                        std::to_string(pos_) + " of " + std::to_string(b_.size()));
    if (n) std::memcpy(out, b_.data() + pos_, n);  // an empty vector's data() may be null
    pos_ += n;
  }
  size_t pos() const { return pos_; }
  size_t remaining() const { return b_.size() - pos_; }
  const std::string& source() const { return src_; }

 private:
  const std::string& b_;
  std::string src_;
  size_t pos_ = 0;
};

static_assert(sizeof(float) == 4 && sizeof(double) == 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ml2o's file formats are little-endian; this build targets a big-endian machine"
#endif

}  // namespace ml2o
