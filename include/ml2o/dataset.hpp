// Classification datasets for the mlp optimizee (docs/mlp.md): the UCI optical-recognition digits
// shipped by Debian's python3-sklearn, and the MNIST IDX format. Every loader checks what it reads
// and throws FormatError naming the path and what is wrong (the CLI maps it to exit 2).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ml2o {

// A labelled table: rows of features (row-major) and labels in 0..classes-1.
struct Dataset {
  std::string source;      // what was read (for messages)
  int64_t rows = 0;
  int features = 0;
  int classes = 0;
  std::vector<float> x;    // [rows, features]
  std::vector<int32_t> y;  // [rows]
};

// The digits file as Debian ships it (python3-sklearn 1.2.1+dfsg-1), and the SHA-256 of its
// decompressed content (`zcat digits.csv.gz | sha256sum`): 1,797 rows of 64 pixel counts (0..16)
// and the label, comma-separated.
constexpr const char* kDigitsPath =
    "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz";
constexpr const char* kDigitsSha256 =
    "6ebb3d2fee246a4e99363262ddf8a00a3c41bee6014c373ed9d9216ba7f651b8";
constexpr int64_t kDigitsRows = 1797;
constexpr int kDigitsFeatures = 64;
constexpr int kDigitsClasses = 10;

// Reads the digits file (gzip or plain CSV) and checks the decompressed content's SHA-256, so a
// different or damaged file is refused with both checksums in the message.
Dataset load_digits(const std::string& path = kDigitsPath);

// Reads an MNIST-style pair of IDX files (raw or gzip-compressed): images idx3-ubyte (magic
// 0x00000803, [count, rows, cols]) and labels idx1-ubyte (0x00000801, [count]); the pixels become
// rows * cols features (0..255), the labels must lie in 0..classes-1.
Dataset load_idx(const std::string& images_path, const std::string& labels_path, int classes = 10);

// Parses CSV text: each line holds `features` numbers then an integer label in 0..classes-1.
Dataset parse_csv_dataset(const std::string& text, const std::string& source, int features,
                          int classes);

// The file's bytes, decompressed when it starts with the gzip magic (1f 8b). Missing, truncated or
// corrupt (bad CRC, bad deflate data, trailing bytes) files throw FormatError.
std::string read_maybe_gzip(const std::string& path);

// Lower-case hex SHA-256 of the bytes (FIPS 180-4).
std::string sha256_hex(const std::string& bytes);

// A deterministic train/test split: the rows are ordered by a counter-based random key drawn from
// (seed, row) and the first round(test_fraction * rows) of that order form the test split (both
// splits keep the rows in file order). Features are then standardised with the training split's
// per-feature mean and standard deviation (population, in double, rounded to float once); a feature
// with standard deviation 0 on the training split becomes 0 in both splits.
struct DataSplit {
  Dataset train, test;
  std::vector<double> mean, stddev;  // [features], of the training split before standardising
};
DataSplit split_dataset(const Dataset& d, double test_fraction, uint64_t seed);
// A fixed split (MNIST's own train and test files, say), standardised as above.
DataSplit standardized_split(Dataset train, Dataset test);

}  // namespace ml2o
