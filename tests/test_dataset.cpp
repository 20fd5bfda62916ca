// Dataset loaders (dataset.hpp): SHA-256 against published vectors, the real digits file that
// scripts/setup.sh installs, IDX round trips, every bad-file case (each must throw FormatError
// naming the path and the fault), and the seeded, standardised train/test split.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "ml2o/dataset.hpp"
#include "ml2o/io.hpp"

namespace ml2o {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/ml2o_dataset_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name, const std::string& bytes) const {
    const fs::path p = path / name;
    std::ofstream(p, std::ios::binary) << bytes;
    return p.string();
  }
};

std::string gzip(const std::string& raw) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&zs, raw.size()) + 32, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  zs.avail_in = static_cast<uInt>(raw.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// Expects FormatError whose message contains every fragment.
template <class F> void expect_format_error(F&& f, std::vector<std::string> fragments) {
  try {
    f();
    ADD_FAILURE() << "no FormatError; expected one mentioning '" << fragments.front() << "'";
  } catch (const FormatError& e) {
    for (const auto& frag : fragments)
      EXPECT_NE(std::string(e.what()).find(frag), std::string::npos)
          << "message '" << e.what() << "' lacks '" << frag << "'";
  }
}

// ---- SHA-256 ------------------------------------------------------------------------------------

TEST(Dataset, Sha256MatchesPublishedVectors) {
  // FIPS 180-4 / NIST examples.
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // The padding's edge cases (one or two final blocks): bytes 0, 1, ..., n-1; from sha256sum.
  const std::pair<int, const char*> edges[] = {
      {55, "463eb28e72f82e0a96c0a4cc53690c571281131f672aa229e0d45ae59b598b59"},
      {56, "da2ae4d6b36748f2a318f23e7ab1dfdf45acdc9d049bd80e59de82a60895f562"},
      {63, "29af2686fd53374a36b0846694cc342177e428d1647515f078784d69cdb9e488"},
      {64, "fdeab9acf3710362bd2658cdc9a29e8f9c757fcf9811603a8c447cd1d9151108"},
      {65, "4bfd2c8b6f1eec7a2afeb48b934ee4b2694182027e6d0fc075074f2fabb31781"},
      {119, "da18797ed7c3a777f0847f429724a2d8cd5138e6ed2895c3fa1a6d39d18f7ec6"},
      {120, "f52b23db1fbb6ded89ef42a23ce0c8922c45f25c50b568a93bf1c075420bbb7c"}};
  for (const auto& [n, want] : edges) {
    std::string s(n, '\0');
    for (int i = 0; i < n; ++i) s[i] = static_cast<char>(i);
    EXPECT_EQ(sha256_hex(s), want) << n << " bytes";
  }
}

// ---- the digits file ----------------------------------------------------------------------------

TEST(Dataset, DigitsFileLoads) {
  ASSERT_TRUE(fs::exists(kDigitsPath)) << kDigitsPath << " missing: run scripts/setup.sh";
  const Dataset d = load_digits();
  EXPECT_EQ(d.rows, 1797);
  EXPECT_EQ(d.features, 64);
  EXPECT_EQ(d.classes, 10);
  ASSERT_EQ(d.x.size(), size_t(1797 * 64));
  ASSERT_EQ(d.y.size(), size_t(1797));
  EXPECT_EQ(*std::min_element(d.x.begin(), d.x.end()), 0.0f);
  EXPECT_EQ(*std::max_element(d.x.begin(), d.x.end()), 16.0f);
  // Per-class counts, counted independently with awk on the decompressed file.
  std::vector<int> count(10, 0);
  for (int32_t y : d.y) ++count[y];
  const std::vector<int> want = {178, 182, 177, 183, 181, 182, 181, 179, 174, 180};
  EXPECT_EQ(count, want);
  // The first row of the file, "0,0,5,13,9,1,0,0,...,0" with label 0.
  EXPECT_EQ(d.y[0], 0);
  const float first8[] = {0, 0, 5, 13, 9, 1, 0, 0};
  for (int j = 0; j < 8; ++j) EXPECT_EQ(d.x[j], first8[j]) << j;
}

TEST(Dataset, DigitsChecksumGuardsTheContent) {
  const std::string text = read_maybe_gzip(kDigitsPath);
  EXPECT_EQ(sha256_hex(text), kDigitsSha256);
  TempDir tmp;
  // The same content uncompressed, or recompressed, loads.
  EXPECT_EQ(load_digits(tmp.file("plain.csv", text)).rows, 1797);
  EXPECT_EQ(load_digits(tmp.file("again.csv.gz", gzip(text))).rows, 1797);
  // One pixel changed (still a valid CSV): refused, both checksums in the message.
  std::string changed = text;
  changed[4] = changed[4] == '5' ? '6' : '5';
  const std::string path = tmp.file("changed.csv.gz", gzip(changed));
  expect_format_error([&] { load_digits(path); }, {path, "SHA-256", kDigitsSha256});
}

TEST(Dataset, MissingFileNamesThePath) {
  const std::string path = "/nonexistent/ml2o/digits.csv.gz";
  expect_format_error([&] { load_digits(path); }, {path, "cannot open"});
  expect_format_error([&] { load_idx(path, path); }, {path, "cannot open"});
}

TEST(Dataset, CorruptGzipIsRefused) {
  const std::string gz = read_file(kDigitsPath);
  ASSERT_GT(gz.size(), 1000u);
  TempDir tmp;
  const std::string cut = tmp.file("cut.gz", gz.substr(0, gz.size() / 2));
  expect_format_error([&] { read_maybe_gzip(cut); }, {cut, "truncated gzip"});
  const std::string no_trailer = tmp.file("no_trailer.gz", gz.substr(0, gz.size() - 4));
  expect_format_error([&] { read_maybe_gzip(no_trailer); }, {no_trailer, "truncated gzip"});
  std::string bad_crc = gz;
  bad_crc[gz.size() - 6] ^= 0x5a;  // inside the CRC-32 of the trailer
  const std::string crc = tmp.file("crc.gz", bad_crc);
  expect_format_error([&] { read_maybe_gzip(crc); }, {crc, "corrupt gzip", "incorrect data check"});
  std::string garbled = gz;
  for (size_t i = 100; i < 140; ++i) garbled[i] = static_cast<char>(0xff);
  const std::string g = tmp.file("garbled.gz", garbled);
  expect_format_error([&] { read_maybe_gzip(g); }, {g, "corrupt gzip"});
  const std::string trailing = tmp.file("trailing.gz", gz + "xyz");
  expect_format_error([&] { read_maybe_gzip(trailing); }, {trailing, "3 trailing bytes"});
  const std::string header_only = tmp.file("header.gz", gz.substr(0, 5));
  expect_format_error([&] { read_maybe_gzip(header_only); }, {header_only, "gzip"});
}

// ---- CSV ----------------------------------------------------------------------------------------

TEST(Dataset, CsvParsesValuesAndLabels) {
  const Dataset d = parse_csv_dataset("1,2.5,0\r\n-3,4e1,2\n", "t.csv", 2, 3);
  EXPECT_EQ(d.rows, 2);
  EXPECT_EQ(d.x, (std::vector<float>{1.0f, 2.5f, -3.0f, 40.0f}));
  EXPECT_EQ(d.y, (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(parse_csv_dataset("1,2,1", "t.csv", 2, 3).rows, 1);  // no final newline
}

TEST(Dataset, BadCsvRowsAreRefused) {
  const struct {
    const char* text;
    std::vector<std::string> fragments;
  } cases[] = {
      {"1,2,0\n1,2\n", {"t.csv: line 2", "2 comma-separated values, expected 3"}},
      {"1,2,0,4\n", {"line 1", "4 comma-separated values"}},
      {"1,2,0\n\n1,2,0\n", {"line 2", "0 comma-separated values"}},
      {"1,x,0\n", {"line 1, column 2", "'x' is not a finite number"}},
      {"1,,0\n", {"column 2", "'' is not a finite number"}},
      {"1,2.5.1,0\n", {"'2.5.1' is not a finite number"}},
      {"1,inf,0\n", {"'inf' is not a finite number"}},
      {"1,2,3\n", {"column 3", "label '3' is not an integer in 0..2"}},
      {"1,2,-1\n", {"label '-1'"}},
      {"1,2,1.5\n", {"label '1.5'"}},
      {"", {"t.csv: no data rows"}},
  };
  for (const auto& c : cases)
    expect_format_error([&] { parse_csv_dataset(c.text, "t.csv", 2, 3); }, c.fragments);
}

// ---- IDX ----------------------------------------------------------------------------------------

std::string be32(uint32_t v) {
  return {char(v >> 24), char(v >> 16 & 0xff), char(v >> 8 & 0xff), char(v & 0xff)};
}
std::string idx_images(uint32_t count, uint32_t rows, uint32_t cols, uint32_t magic = 0x803) {
  std::string s = be32(magic) + be32(count) + be32(rows) + be32(cols);
  for (uint32_t i = 0; i < count * rows * cols; ++i) s += char((i * 37 + 11) % 256);
  return s;
}
std::string idx_labels(const std::vector<int>& labels, uint32_t magic = 0x801) {
  std::string s = be32(magic) + be32(uint32_t(labels.size()));
  for (int l : labels) s += char(l);
  return s;
}

TEST(Dataset, IdxRoundTrip) {
  TempDir tmp;
  const std::vector<int> labels = {3, 0, 9, 9, 1};
  const std::string img = idx_images(5, 3, 2), lab = idx_labels(labels);
  for (bool compressed : {false, true}) {
    const std::string ip = tmp.file("img", compressed ? gzip(img) : img);
    const std::string lp = tmp.file("lab", compressed ? gzip(lab) : lab);
    const Dataset d = load_idx(ip, lp);
    EXPECT_EQ(d.rows, 5);
    EXPECT_EQ(d.features, 6);
    EXPECT_EQ(d.classes, 10);
    ASSERT_EQ(d.x.size(), 30u);
    for (uint32_t i = 0; i < 30; ++i) EXPECT_EQ(d.x[i], float((i * 37 + 11) % 256)) << i;
    EXPECT_EQ(std::vector<int>(d.y.begin(), d.y.end()), labels);
  }
}

TEST(Dataset, BadIdxFilesAreRefused) {
  TempDir tmp;
  const std::string img = idx_images(4, 2, 2), lab = idx_labels({1, 2, 3, 4});
  const std::string good_img = tmp.file("good_img", img), good_lab = tmp.file("good_lab", lab);
  auto check_images = [&](const std::string& name, const std::string& bytes,
                          std::vector<std::string> fragments) {
    const std::string p = tmp.file(name, bytes);
    fragments.insert(fragments.begin(), p);
    expect_format_error([&] { load_idx(p, good_lab); }, fragments);
  };
  auto check_labels = [&](const std::string& name, const std::string& bytes,
                          std::vector<std::string> fragments) {
    const std::string p = tmp.file(name, bytes);
    fragments.insert(fragments.begin(), p);
    expect_format_error([&] { load_idx(good_img, p); }, fragments);
  };
  check_images("swapped_magic", idx_images(4, 2, 2, 0x801), {"magic number is 0x00000801",
                                                             "expected 0x00000803"});
  check_images("float_magic", idx_images(4, 2, 2, 0x0d03), {"magic number is 0x00000d03"});
  check_images("short_header", img.substr(0, 10), {"truncated IDX", "header"});
  check_images("cut_pixels", img.substr(0, img.size() - 1), {"truncated IDX"});
  check_images("extra_pixels", img + "ab", {"2 bytes after the 16 bytes"});
  check_images("zero_rows", be32(0x803) + be32(4) + be32(0) + be32(2), {"dimension 1 is 0"});
  check_images("huge_count", be32(0x803) + be32(0xffffffffu) + be32(0xffffffffu) + be32(2),
               {"truncated IDX"});
  check_images("count_mismatch", idx_images(3, 2, 2), {"holds 3 images", "4 labels"});
  check_labels("label_magic", idx_labels({1, 2, 3, 4}, 0x803), {"expected 0x00000801"});
  check_labels("cut_labels", lab.substr(0, lab.size() - 1), {"truncated IDX"});
  check_labels("label_range", idx_labels({1, 2, 10, 4}), {"label 10 of item 2", "0..9"});
  const std::string gz = gzip(lab);
  check_labels("cut_gzip", gz.substr(0, gz.size() - 3), {"truncated gzip"});
  // A label valid for 10 classes but not for 3.
  expect_format_error([&] { load_idx(good_img, good_lab, 3); }, {"label 3 of item 2", "0..2"});
}

// ---- split and standardisation ------------------------------------------------------------------

// rows x 3 features: the row index, a constant, and a label-dependent value.
Dataset indexed_dataset(int rows) {
  Dataset d;
  d.source = "indexed";
  d.rows = rows;
  d.features = 3;
  d.classes = 4;
  for (int r = 0; r < rows; ++r) {
    d.x.insert(d.x.end(), {float(r), 7.0f, float(r % 4) * 2.0f});
    d.y.push_back(r % 4);
  }
  return d;
}

// The original row of a standardised row (feature 0 was the row index).
int64_t original_row(const DataSplit& s, const Dataset& part, int64_t r) {
  return std::llround(part.x[size_t(r) * 3] * s.stddev[0] + s.mean[0]);
}

TEST(Dataset, SplitIsSeededDisjointAndStandardised) {
  const Dataset d = indexed_dataset(200);
  const DataSplit s = split_dataset(d, 0.25, 42);
  ASSERT_EQ(s.test.rows, 50);
  ASSERT_EQ(s.train.rows, 150);
  std::set<int64_t> seen;
  std::vector<int64_t> test_rows;
  for (const Dataset* part : {&s.train, &s.test})
    for (int64_t r = 0; r < part->rows; ++r) {
      const int64_t orig = original_row(s, *part, r);
      EXPECT_TRUE(seen.insert(orig).second) << "row " << orig << " in both splits";
      EXPECT_EQ(part->y[r], orig % 4) << "label moved with its row";
      if (r > 0) EXPECT_GT(orig, original_row(s, *part, r - 1)) << "file order kept";
      if (part == &s.test) test_rows.push_back(orig);
    }
  EXPECT_EQ(seen.size(), 200u);
  // Training split: mean 0, std 1 per varying feature; the constant feature is 0 everywhere.
  for (int j : {0, 2}) {
    double m = 0, v = 0;
    for (int64_t r = 0; r < s.train.rows; ++r) m += s.train.x[size_t(r) * 3 + j];
    m /= double(s.train.rows);
    for (int64_t r = 0; r < s.train.rows; ++r) v += std::pow(s.train.x[size_t(r) * 3 + j] - m, 2);
    EXPECT_NEAR(m, 0.0, 1e-6) << j;
    EXPECT_NEAR(std::sqrt(v / double(s.train.rows)), 1.0, 1e-6) << j;
  }
  EXPECT_EQ(s.stddev[1], 0.0);
  for (const Dataset* part : {&s.train, &s.test})
    for (int64_t r = 0; r < part->rows; ++r) EXPECT_EQ(part->x[size_t(r) * 3 + 1], 0.0f);
  // Same seed: the same split, bit for bit; another seed: another test set.
  const DataSplit again = split_dataset(d, 0.25, 42);
  EXPECT_EQ(again.test.x, s.test.x);
  EXPECT_EQ(again.train.x, s.train.x);
  const DataSplit other = split_dataset(d, 0.25, 43);
  std::vector<int64_t> other_rows;
  for (int64_t r = 0; r < other.test.rows; ++r)
    other_rows.push_back(original_row(other, other.test, r));
  EXPECT_NE(other_rows, test_rows);
}

TEST(Dataset, BadSplitsAreRefused) {
  const Dataset d = indexed_dataset(10);
  for (double f : {0.0, 1.0, -0.1, 0.01, 0.99, std::nan("")})
    EXPECT_THROW(split_dataset(d, f, 1), std::invalid_argument) << f;
  EXPECT_EQ(split_dataset(d, 0.1, 1).test.rows, 1);
}

TEST(Dataset, FixedSplitUsesTrainingStatistics) {
  Dataset train = indexed_dataset(4), test = indexed_dataset(2);
  test.x[0] = 100.0f;
  const DataSplit s = standardized_split(train, test);
  // Feature 0 on the training split: 0,1,2,3 -> mean 1.5, population std sqrt(1.25).
  EXPECT_DOUBLE_EQ(s.mean[0], 1.5);
  EXPECT_DOUBLE_EQ(s.stddev[0], std::sqrt(1.25));
  EXPECT_FLOAT_EQ(s.test.x[0], float((100.0 - 1.5) / std::sqrt(1.25)));
  Dataset wide = indexed_dataset(2);
  wide.features = 2;
  EXPECT_THROW(standardized_split(train, wide), std::invalid_argument);
}

}  // namespace
}  // namespace ml2o
