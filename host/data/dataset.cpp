#include "ml2o/dataset.hpp"

#include <zlib.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <stdexcept>

#include "ml2o/io.hpp"
#include "ml2o/rng.hpp"

namespace ml2o {
namespace {

// Refuse to inflate more than this (a corrupt or hostile header cannot exhaust memory); MNIST's
// largest file is 47 MB.
constexpr size_t kMaxInflated = size_t(1) << 31;

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// Inflates a whole gzip member held in memory.
std::string gunzip(const std::string& in, const std::string& path) {
  if (in.size() > UINT_MAX) throw FormatError(path + ": gzip file larger than 4 GiB");
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)  // 16: expect the gzip wrapper
    throw FormatError(path + ": zlib could not start inflating");
  struct End {
    z_stream* z;
    ~End() { inflateEnd(z); }
  } end{&zs};
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  std::string out;
  char buf[1 << 16];
  int ret = Z_OK;
  while (ret == Z_OK) {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof buf;
    ret = inflate(&zs, Z_NO_FLUSH);
    out.append(buf, sizeof buf - zs.avail_out);
    if (out.size() > kMaxInflated)
      throw FormatError(path + ": decompresses to more than 2 GiB; not a dataset ml2o reads");
  }
  if (ret == Z_BUF_ERROR)
    throw FormatError(path + ": truncated gzip file: the compressed stream ends early (" +
                      std::to_string(in.size()) + " bytes)");
  if (ret != Z_STREAM_END)
    throw FormatError(path + ": corrupt gzip file: " + (zs.msg ? zs.msg : "inflate failed"));
  if (zs.avail_in != 0)
    throw FormatError(path + ": " + std::to_string(zs.avail_in) +
                      " trailing bytes after the gzip stream (concatenated gzip files are not "
                      "read)");
  return out;
}

// The next comma-separated token of a line, starting at *pos.
std::string_view next_token(std::string_view line, size_t* pos) {
  const size_t comma = line.find(',', *pos);
  const size_t end = comma == std::string_view::npos ? line.size() : comma;
  std::string_view tok = line.substr(*pos, end - *pos);
  *pos = end + 1;
  while (!tok.empty() && tok.front() == ' ') tok.remove_prefix(1);
  while (!tok.empty() && tok.back() == ' ') tok.remove_suffix(1);
  return tok;
}

// Big-endian 32-bit word at offset (the caller checked the size).
uint32_t be32(const std::string& b, size_t off) {
  auto u = [&](size_t i) { return uint32_t(static_cast<unsigned char>(b[off + i])); };
  return u(0) << 24 | u(1) << 16 | u(2) << 8 | u(3);
}

// Checks an IDX file's magic number and size; returns its dimensions (the data follows them).
std::vector<uint32_t> idx_dims(const std::string& bytes, const std::string& path, uint32_t magic,
                               const char* kind) {
  const int ndims = static_cast<int>(magic & 0xff);
  const size_t header = 4 + 4 * size_t(ndims);
  if (bytes.size() < header)
    throw FormatError(path + ": truncated IDX file: " + std::to_string(bytes.size()) +
                      " bytes, shorter than the " + std::to_string(header) + "-byte header of " +
                      kind);
  if (be32(bytes, 0) != magic)
    throw FormatError(path + ": IDX magic number is " + hex32(be32(bytes, 0)) + ", expected " +
                      hex32(magic) + " (" + kind + ")");
  std::vector<uint32_t> dims(ndims);
  for (int i = 0; i < ndims; ++i) {
    dims[i] = be32(bytes, 4 + 4 * size_t(i));
    if (dims[i] == 0) throw FormatError(path + ": IDX dimension " + std::to_string(i) + " is 0");
  }
  size_t payload = 1;
  const size_t available = bytes.size() - header;
  for (int i = 0; i < ndims; ++i) {
    if (payload > available / dims[i])  // also guards the product against overflow
      throw FormatError(path + ": truncated IDX file: the header's dimensions need more than the " +
                        std::to_string(available) + " bytes of data present");
    payload *= dims[i];
  }
  if (payload != available)
    throw FormatError(path + ": IDX file has " + std::to_string(available - payload) +
                      " bytes after the " + std::to_string(payload) + " bytes its header declares");
  return dims;
}

void check_split_sizes(const Dataset& train, const Dataset& test) {
  if (train.rows < 1 || test.rows < 1)
    throw std::invalid_argument("dataset split: both splits need at least one row");
  if (train.features != test.features || train.classes != test.classes)
    throw std::invalid_argument("dataset split: train (" + train.source + ") and test (" +
                                test.source + ") differ in features or classes");
}

Dataset take_rows(const Dataset& d, const std::vector<int64_t>& rows, const char* which) {
  Dataset out;
  out.source = d.source + " (" + which + ")";
  out.rows = static_cast<int64_t>(rows.size());
  out.features = d.features;
  out.classes = d.classes;
  out.x.reserve(rows.size() * size_t(d.features));
  for (int64_t r : rows) {
    out.x.insert(out.x.end(), d.x.begin() + r * d.features, d.x.begin() + (r + 1) * d.features);
    out.y.push_back(d.y[r]);
  }
  return out;
}

}  // namespace

std::string read_maybe_gzip(const std::string& path) {
  std::string bytes = read_file(path);
  if (bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1f &&
      static_cast<unsigned char>(bytes[1]) == 0x8b)
    return gunzip(bytes, path);
  return bytes;
}

Dataset parse_csv_dataset(const std::string& text, const std::string& source, int features,
                          int classes) {
  Dataset d;
  d.source = source;
  d.features = features;
  d.classes = classes;
  const std::string_view all(text);
  size_t start = 0;
  int64_t line_no = 0;
  while (start < all.size()) {
    const size_t nl = all.find('\n', start);
    std::string_view line = all.substr(start, nl == std::string_view::npos ? all.npos : nl - start);
    start = nl == std::string_view::npos ? all.size() : nl + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const std::string where = source + ": line " + std::to_string(line_no);
    const auto columns = std::count(line.begin(), line.end(), ',') + 1;
    if (columns != features + 1)
      throw FormatError(where + ": " + std::to_string(line.empty() ? 0 : columns) +
                        " comma-separated values, expected " + std::to_string(features + 1) + " (" +
                        std::to_string(features) + " features, then the label)");
    size_t pos = 0;
    for (int j = 0; j < features; ++j) {
      const std::string_view tok = next_token(line, &pos);
      double v = 0.0;
      const auto r = std::from_chars(tok.data(), tok.data() + tok.size(), v);
      const bool whole = !tok.empty() && r.ec == std::errc() && r.ptr == tok.data() + tok.size();
      if (!whole || !std::isfinite(v))
        throw FormatError(where + ", column " + std::to_string(j + 1) + ": '" + std::string(tok) +
                          "' is not a finite number");
      d.x.push_back(static_cast<float>(v));
    }
    const std::string_view tok = next_token(line, &pos);
    int label = -1;
    const auto r = std::from_chars(tok.data(), tok.data() + tok.size(), label);
    if (tok.empty() || r.ec != std::errc() || r.ptr != tok.data() + tok.size() || label < 0 ||
        label >= classes)
      throw FormatError(where + ", column " + std::to_string(features + 1) + ": label '" +
                        std::string(tok) + "' is not an integer in 0.." +
                        std::to_string(classes - 1));
    d.y.push_back(label);
    ++d.rows;
  }
  if (d.rows == 0) throw FormatError(source + ": no data rows");
  return d;
}

Dataset load_digits(const std::string& path) {
  const std::string text = read_maybe_gzip(path);
  const std::string sum = sha256_hex(text);
  if (sum != kDigitsSha256)
    throw FormatError(path + ": not the digits file ml2o was checked against: the SHA-256 of its "
                      "decompressed content is " + sum + ", expected " + kDigitsSha256 +
                      " (Debian python3-sklearn 1.2.1: zcat digits.csv.gz | sha256sum)");
  Dataset d = parse_csv_dataset(text, path, kDigitsFeatures, kDigitsClasses);
  if (d.rows != kDigitsRows)  // unreachable with the checksum above, kept as a statement of shape
    throw FormatError(path + ": " + std::to_string(d.rows) + " rows, expected 1797");
  return d;
}

Dataset load_idx(const std::string& images_path, const std::string& labels_path, int classes) {
  const std::string images = read_maybe_gzip(images_path);
  const std::string labels = read_maybe_gzip(labels_path);
  const auto idims = idx_dims(images, images_path, 0x00000803u, "idx3-ubyte images");
  const auto ldims = idx_dims(labels, labels_path, 0x00000801u, "idx1-ubyte labels");
  if (idims[0] != ldims[0])
    throw FormatError(images_path + " holds " + std::to_string(idims[0]) + " images but " +
                      labels_path + " holds " + std::to_string(ldims[0]) + " labels");
  if (uint64_t(idims[1]) * idims[2] > uint64_t(INT_MAX))
    throw FormatError(images_path + ": images of " + std::to_string(idims[1]) + " x " +
                      std::to_string(idims[2]) + " pixels are too large");
  Dataset d;
  d.source = images_path;
  d.rows = idims[0];
  d.features = static_cast<int>(idims[1] * idims[2]);
  d.classes = classes;
  const size_t n = size_t(d.rows) * size_t(d.features);  // = the payload idx_dims checked
  d.x.resize(n);
  for (size_t i = 0; i < n; ++i) d.x[i] = static_cast<unsigned char>(images[16 + i]);
  d.y.resize(size_t(d.rows));
  for (int64_t i = 0; i < d.rows; ++i) {
    const int label = static_cast<unsigned char>(labels[8 + size_t(i)]);
    if (label >= classes)
      throw FormatError(labels_path + ": label " + std::to_string(label) + " of item " +
                        std::to_string(i) + " is outside 0.." + std::to_string(classes - 1));
    d.y[size_t(i)] = label;
  }
  return d;
}

DataSplit standardized_split(Dataset train, Dataset test) {
  check_split_sizes(train, test);
  DataSplit s;
  const int F = train.features;
  s.mean.assign(F, 0.0);
  s.stddev.assign(F, 0.0);
  for (int64_t r = 0; r < train.rows; ++r)
    for (int j = 0; j < F; ++j) s.mean[j] += train.x[size_t(r) * F + j];
  for (int j = 0; j < F; ++j) s.mean[j] /= double(train.rows);
  for (int64_t r = 0; r < train.rows; ++r)
    for (int j = 0; j < F; ++j) {
      const double c = train.x[size_t(r) * F + j] - s.mean[j];
      s.stddev[j] += c * c;
    }
  for (int j = 0; j < F; ++j) s.stddev[j] = std::sqrt(s.stddev[j] / double(train.rows));
  for (Dataset* d : {&train, &test})
    for (int64_t r = 0; r < d->rows; ++r)
      for (int j = 0; j < F; ++j) {
        float& v = d->x[size_t(r) * F + j];
        v = s.stddev[j] > 0.0 ? static_cast<float>((v - s.mean[j]) / s.stddev[j]) : 0.0f;
      }
  s.train = std::move(train);
  s.test = std::move(test);
  return s;
}

DataSplit split_dataset(const Dataset& d, double test_fraction, uint64_t seed) {
  if (!(test_fraction > 0.0 && test_fraction < 1.0))
    throw std::invalid_argument("dataset split: test fraction must lie in (0, 1)");
  const int64_t n_test = std::llround(test_fraction * double(d.rows));
  if (n_test < 1 || n_test >= d.rows)
    throw std::invalid_argument("dataset split: " + std::to_string(d.rows) + " rows with test "
                                "fraction " + std::to_string(test_fraction) +
                                " leave a split empty");
  std::vector<uint64_t> key(size_t(d.rows));
  for (int64_t r = 0; r < d.rows; ++r) {
    const Philox p = draw_bits(seed, Stream::dataset_split, 0, uint64_t(r));
    key[size_t(r)] = uint64_t(p.out[0]) << 32 | p.out[1];
  }
  std::vector<int64_t> order(size_t(d.rows));
  std::iota(order.begin(), order.end(), int64_t(0));
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return key[size_t(a)] != key[size_t(b)] ? key[size_t(a)] < key[size_t(b)] : a < b;
  });
  std::vector<int64_t> test_rows(order.begin(), order.begin() + n_test);
  std::vector<int64_t> train_rows(order.begin() + n_test, order.end());
  std::sort(test_rows.begin(), test_rows.end());
  std::sort(train_rows.begin(), train_rows.end());
  return standardized_split(take_rows(d, train_rows, "train"), take_rows(d, test_rows, "test"));
}

}  // namespace ml2o
