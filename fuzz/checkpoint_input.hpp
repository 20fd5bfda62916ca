// The checkpoint fuzz target's input format and property, shared by fuzz_checkpoint.cpp (libFuzzer)
// and the GoogleTest replay of fuzz/corpus/checkpoint/ (tests/test_checkpoint.cpp).
//
// A real checkpoint is ~150 KB (6,641 weights, two Adam moments), too large for a fuzzer to mutate
// usefully, so an input describes a checkpoint as edits of a base one:
//   byte 0: mode. Bit 0: reseal (write a valid checksum over the last 8 bytes after the edits, so
//           the field checks behind the checksum are reached). Bit 1: raw (the rest of the input is
//           the whole file; no base).
//   then, unless raw, edits applied in order to the base checkpoint:
//           u8 op (0 overwrite, 1 insert, 2 erase) | u32 offset (taken modulo the current size + 1)
//           | u8 length | op 0 and 1: `length` bytes of data
// The base is a checkpoint of a small M-L2O training (two tasks, three curriculum stages) stopped
// mid-epoch, so every field is present and non-empty. The property: the bytes either load (and
// then re-serialise to the same bytes) or throw FormatError naming "fuzz.ckpt: ", on one line.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "ml2o/io.hpp"
#include "ml2o/meta.hpp"

namespace ml2o::fuzz {

inline TrainConfig base_train_config() {
  TrainConfig tc;
  TaskSpec t;
  t.family = Family::lasso;
  t.dim = 3;
  t.instances = 4;
  t.seed = 3;
  TaskSpec u = t;
  u.dim = 2;
  u.instances = 5;
  u.seed = 9;
  tc.tasks = {t, u};
  tc.curriculum = {40, 60, 80};
  tc.max_epochs = 6;
  tc.eval_every = 1;
  tc.eval_batches = 1;
  tc.patience = 2;
  return tc;
}

constexpr uint64_t kBaseHash = 0x1234;

struct Base {
  TrainConfig tc = base_train_config();
  OptimizerHyper hyper;
  TrainerState st;    // stopped one unroll into epoch 1 (stage 0 has two unrolls per epoch)
  std::string bytes;  // trainer_to_bytes(st, kBaseHash)
  CheckpointExpect expect() const { return CheckpointExpect{kBaseHash, Method::ml2o, hyper, &tc}; }
};

inline const Base& base() {
  static const Base b = [] {
    Base b;
    auto backend = make_cpu_backend();
    b.st = make_trainer(Method::ml2o, b.hyper, 1);
    TrainHooks hooks;
    hooks.after_step = [](const TrainerState& s) {
      return s.epoch >= 1 && s.unroll_in_epoch == 1 ? StepAction::save_and_stop : StepAction::go_on;
    };
    train(b.tc, Ml2oConfig{}, *backend, b.st, hooks);
    b.bytes = trainer_to_bytes(b.st, kBaseHash);
    return b;
  }();
  return b;
}

inline void reseal(std::string& b) {
  if (b.size() < 8) return;
  const uint64_t sum = fnv1a64(b.data(), b.size() - 8);
  std::memcpy(b.data() + b.size() - 8, &sum, 8);
}

// The checkpoint bytes an input describes.
inline std::string input_to_bytes(const uint8_t* data, size_t size) {
  if (size == 0) return {};
  const uint8_t mode = data[0];
  std::string b;
  if (mode & 2) {
    b.assign(reinterpret_cast<const char*>(data) + 1, size - 1);
  } else {
    b = base().bytes;
    size_t i = 1;
    while (i + 6 <= size) {
      const uint8_t op = data[i] % 3;
      uint32_t off;
      std::memcpy(&off, data + i + 1, 4);
      const size_t len = data[i + 5];
      i += 6;
      const size_t at = off % (b.size() + 1);
      if (op == 2) {
        b.erase(at, len);
        continue;
      }
      const size_t n = std::min(len, size - i);
      const std::string piece(reinterpret_cast<const char*>(data) + i, n);
      i += n;
      if (op == 1) b.insert(at, piece);
      else b.replace(at, std::min(n, b.size() - at), piece);
    }
  }
  if (mode & 1) reseal(b);
  return b;
}

// "" when the input behaves; otherwise what went wrong.
inline std::string check_input(const uint8_t* data, size_t size) {
  const std::string bytes = input_to_bytes(data, size);
  try {
    const TrainerState st = trainer_from_bytes(bytes, "fuzz.ckpt", base().expect());
    if (trainer_to_bytes(st, kBaseHash) != bytes) return "loaded, but re-serialises to other bytes";
  } catch (const FormatError& e) {
    const std::string msg = e.what();
    if (msg.rfind("fuzz.ckpt: ", 0) != 0) return "message does not name the file: " + msg;
    if (msg.find('\n') != std::string::npos) return "message spans lines: " + msg;
  }
  return "";
}

}  // namespace ml2o::fuzz
