// Checkpoints that carry a valid checksum but contents that no run of the config could have written:
// every one is refused with a FormatError naming the file and the field, never a crash (this suite
// runs under ASan + UBSan in scripts/test.sh). The cases are generated from a real checkpoint of a
// small training run, by changing one field (of the state, or of the bytes) and resealing the
// checksum. Also: bounded reads, and the replay of the fuzz corpus (fuzz/corpus/checkpoint).
#include <gtest/gtest.h>

#include <climits>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>

#include "../fuzz/checkpoint_input.hpp"
#include "ml2o/io.hpp"
#include "ml2o/meta.hpp"

namespace fs = std::filesystem;

namespace ml2o {
namespace {

// The base checkpoint of the fuzz target: a small M-L2O training stopped mid-epoch.
struct Fixture {
  const TrainConfig& tc = fuzz::base().tc;
  const OptimizerHyper& hyper = fuzz::base().hyper;
  const TrainerState& st = fuzz::base().st;
  CheckpointExpect expect() const { return fuzz::base().expect(); }
};
const Fixture& fixture() {
  static const Fixture f;
  return f;
}
constexpr uint64_t kHash = fuzz::kBaseHash;
TrainConfig small_train() { return fuzz::base_train_config(); }

using fuzz::reseal;

// Where each field of a checkpoint of `st` lies (the layout of trainer_to_bytes).
struct Layout {
  size_t version = 8, hash = 12, params_len = 20, method, adam_m, adam_v, adam_t, epoch, stage, unroll,
         ntraj;
  std::vector<size_t> traj_x, traj_coord, traj_k;
  size_t best_score, has_best, best_weights, ewi, improved, finished, skipped, consecutive,
      eval_history, loss_history, loss_sum, loss_count, checksum;
};

Layout layout_of(const TrainerState& st) {
  Layout L;
  size_t o = 28 + params_to_bytes(st.opt).size();
  auto at = [&](size_t n) {
    const size_t here = o;
    o += n;
    return here;
  };
  L.method = at(4);
  L.adam_m = at(8 + st.adam.m.size() * 8);
  L.adam_v = at(8 + st.adam.v.size() * 8);
  L.adam_t = at(8);
  L.epoch = at(8);
  L.stage = at(4);
  L.unroll = at(8);
  L.ntraj = at(8);
  for (const auto& t : st.trajs) {
    L.traj_x.push_back(at(8 + t.x.size() * 4));
    L.traj_coord.push_back(at(8 + t.coord.size() * sizeof(CoordState<float>)));
    L.traj_k.push_back(at(8));
  }
  L.best_score = at(8);
  L.has_best = at(1);
  L.best_weights = at(8 + st.best_weights.size() * 4);
  L.ewi = at(4);
  L.improved = at(1);
  L.finished = at(1);
  L.skipped = at(8);
  L.consecutive = at(4);
  L.eval_history = at(8 + st.eval_history.size() * 8);
  L.loss_history = at(8 + st.loss_history.size() * 8);
  L.loss_sum = at(8);
  L.loss_count = at(8);
  L.checksum = at(8);
  return L;
}

struct Case {
  std::string name;
  std::string bytes;   // sealed with a valid checksum
  std::string expect;  // a fragment of the message
};

// Every generated case: state-level changes (re-serialised, so the lengths agree with the data)
// and byte-level changes of counts, lengths and ids (resealed).
std::vector<Case> malformed_checkpoints() {
  const Fixture& f = fixture();
  const TrainerState& good = f.st;
  const TrainConfig& tc = f.tc;
  const size_t P = good.opt.weights.size();
  const int64_t n_unrolls = tc.curriculum[good.stage] / tc.unroll;
  std::vector<Case> cases;
  auto state = [&](const std::string& name, const std::string& expect,
                   const std::function<void(TrainerState&)>& change) {
    TrainerState s = good;
    change(s);
    cases.push_back({"state: " + name, trainer_to_bytes(s, kHash), expect});
  };
  const std::string good_bytes = trainer_to_bytes(good, kHash);
  const Layout L = layout_of(good);
  auto bytes = [&](const std::string& name, const std::string& expect, size_t offset, auto value) {
    std::string b = good_bytes;
    std::memcpy(b.data() + offset, &value, sizeof value);
    reseal(b);
    cases.push_back({"bytes: " + name, b, expect});
  };

  // Trajectories: count, sizes and step counters (the count 0 or short was a SIGSEGV).
  state("no trajectories mid-epoch", "0 trajectories at unroll 1", [](TrainerState& s) { s.trajs.clear(); });
  state("one trajectory short", "1 trajectories at unroll 1", [](TrainerState& s) { s.trajs.pop_back(); });
  state("one trajectory too many", "trajectory count is 3", [](TrainerState& s) { s.trajs.push_back(s.trajs[0]); });
  state("trajectories swapped", "trajectory x has 10 elements, expected 12",
        [](TrainerState& s) { std::swap(s.trajs[0], s.trajs[1]); });
  for (size_t i = 0; i < 2; ++i) {
    const size_t n = good.trajs[i].x.size();
    const std::string ti = "trajectory " + std::to_string(i);
    for (size_t m : {size_t(0), size_t(1), n - 1, n + 1, 2 * n}) {
      state(ti + " x of " + std::to_string(m), "trajectory x has " + std::to_string(m) + " elements",
            [&](TrainerState& s) { s.trajs[i].x.resize(m); });
      state(ti + " state of " + std::to_string(m), "trajectory state has " + std::to_string(m) + " elements",
            [&](TrainerState& s) { s.trajs[i].coord.resize(m); });
    }
    for (int64_t k : {int64_t(0), int64_t(-1), int64_t(2 + tc.unroll), INT64_MAX, INT64_MIN})
      state(ti + " at step " + std::to_string(k), ti + " is at step",
            [&](TrainerState& s) { s.trajs[i].k = k; });
  }
  // Adam (a wrong moment length was an abort).
  for (size_t m : {size_t(1), size_t(5), P - 1, P + 1}) {
    state("Adam m of " + std::to_string(m), "Adam m has " + std::to_string(m) + " elements",
          [&](TrainerState& s) { s.adam.m.resize(m); });
    state("Adam v of " + std::to_string(m), "Adam v has " + std::to_string(m) + " elements",
          [&](TrainerState& s) { s.adam.v.resize(m); });
  }
  state("Adam m empty, v full", "Adam moments of 0 and", [](TrainerState& s) { s.adam.m.clear(); });
  state("Adam moments empty after steps", "Adam moments of 0 and 0", [](TrainerState& s) {
    s.adam.m.clear();
    s.adam.v.clear();
  });
  for (int64_t t : {int64_t(-1), int64_t(1000), INT64_MAX, INT64_MIN})
    state("Adam t = " + std::to_string(t), "Adam step count", [&](TrainerState& s) { s.adam.t = t; });
  state("Adam m NaN", "non-finite or negative Adam moments", [](TrainerState& s) { s.adam.m[7] = NAN; });
  state("Adam v negative", "non-finite or negative Adam moments", [](TrainerState& s) { s.adam.v[0] = -1; });
  state("Adam v infinite", "non-finite or negative Adam moments", [&](TrainerState& s) { s.adam.v[P - 1] = INFINITY; });
  // Counters (stage = 99 was an out-of-bounds read).
  for (int stage : {99, -1, 3, INT_MAX, INT_MIN})
    state("stage " + std::to_string(stage), "stage " + std::to_string(stage) + " outside",
          [&](TrainerState& s) { s.stage = stage; });
  for (int64_t e : {int64_t(-1), int64_t(7), int64_t(1) << 40, INT64_MIN})
    state("epoch " + std::to_string(e), "epoch " + std::to_string(e) + " outside",
          [&](TrainerState& s) { s.epoch = e; });
  for (int64_t u : {int64_t(-1), n_unrolls + 1, INT64_MAX})
    state("unroll " + std::to_string(u), "unroll " + std::to_string(u) + " of the epoch outside",
          [&](TrainerState& s) { s.unroll_in_epoch = u; });
  state("unroll 0 with trajectories", "2 trajectories at unroll 0", [](TrainerState& s) { s.unroll_in_epoch = 0; });
  // Best weights and scores.
  for (size_t m : {size_t(0), size_t(1), P - 1, P + 1})
    state("best weights of " + std::to_string(m),
          m == 0 ? "0 best weights with has_best = 1" : "best weights has " + std::to_string(m) + " elements",
          [&](TrainerState& s) { s.best_weights.resize(m); });
  state("best weights without has_best", "progress recorded before the first evaluation",
        [](TrainerState& s) { s.has_best = false; s.best_weights.clear(); });
  state("has_best false, best weights kept", "best weights with has_best = 0", [](TrainerState& s) { s.has_best = false; });
  state("best weight NaN", "non-finite best weights", [](TrainerState& s) { s.best_weights[3] = NAN; });
  state("best weight infinite", "non-finite best weights", [](TrainerState& s) { s.best_weights[0] = -INFINITY; });
  state("best score NaN", "best score is NaN", [](TrainerState& s) { s.best_score = NAN; });
  for (int e : {-1, 3, INT_MAX, INT_MIN})
    state("evals without improvement " + std::to_string(e), "evaluations without improvement",
          [&](TrainerState& s) { s.evals_without_improvement = e; });
  for (int64_t k : {int64_t(-1), INT64_MIN})
    state("skipped " + std::to_string(k), "skipped-step counters", [&](TrainerState& s) { s.skipped_steps = k; });
  for (int c : {-1, 1, 11, INT_MAX})
    state("consecutive skipped " + std::to_string(c), "skipped-step counters",
          [&](TrainerState& s) { s.consecutive_skipped = c; });
  // Histories.
  state("an evaluation too many", "evaluations at epoch 1", [](TrainerState& s) { s.eval_history.push_back(1); });
  state("an evaluation missing", "evaluations at epoch 1", [](TrainerState& s) { s.eval_history.pop_back(); });
  state("no evaluations", "0 evaluations", [](TrainerState& s) { s.eval_history.clear(); });
  state("evaluation NaN", "NaN evaluation score", [](TrainerState& s) { s.eval_history[0] = NAN; });
  state("far too many evaluations", "eval history is 100", [](TrainerState& s) { s.eval_history.assign(100, 1.0); });
  state("an epoch loss too many", "2 epoch losses at epoch 1", [](TrainerState& s) { s.loss_history.push_back(1); });
  state("no epoch losses", "0 epoch losses at epoch 1", [](TrainerState& s) { s.loss_history.clear(); });
  state("far too many epoch losses", "loss history is 50", [](TrainerState& s) { s.loss_history.assign(50, 1.0); });
  for (int64_t c : {int64_t(-1), int64_t(2), INT64_MAX})
    state("epoch loss count " + std::to_string(c), "epoch loss over", [&](TrainerState& s) { s.epoch_loss_count = c; });
  state("epoch loss sum NaN", "epoch loss over 1", [](TrainerState& s) { s.epoch_loss_sum = NAN; });
  state("epoch loss sum without unrolls", "epoch loss over 0", [](TrainerState& s) {
    s.epoch_loss_count = 0;
    s.epoch_loss_sum = 1.5;
  });
  // The embedded params against the config's optimizer, and the method.
  state("params of the other arch", "embedded params are dmlstm", [](TrainerState& s) {
    s.opt.hyper.arch = Arch::dmlstm;
    s.opt.weights.assign(param_count(Arch::dmlstm), 0.01f);
  });
  state("params with another dm_p", "embedded params have dm_p = 7", [](TrainerState& s) { s.opt.hyper.dm_p = 7; });
  state("method l2o", "method id 0, expected 1 (ml2o)", [](TrainerState& s) { s.method = Method::l2o; });

  // Byte-level: header fields, counts and lengths that disagree with the data behind them.
  bytes("version 2", "checkpoint version 2 is not supported", L.version, uint32_t(2));
  bytes("version 0", "checkpoint version 0 is not supported", L.version, uint32_t(0));
  bytes("another config hash", "different config", L.hash, uint64_t(kHash + 1));
  const uint64_t plen = params_to_bytes(good.opt).size();
  for (uint64_t v : {uint64_t(0), uint64_t(8), plen - 1, plen + 1, uint64_t(1) << 62, ~uint64_t(0)})
    bytes("params length " + std::to_string(v), v > plen + 1 ? "params length is" : "", L.params_len, v);
  for (uint32_t m : {2u, 7u, 0xffffffffu})
    bytes("method id " + std::to_string(m), "method id " + std::to_string(m), L.method, m);
  for (uint64_t v : {uint64_t(1), P - 1, P + 1, uint64_t(1) << 61, ~uint64_t(0)}) {
    bytes("Adam m length " + std::to_string(v), "Adam m", L.adam_m, v);
    bytes("Adam v length " + std::to_string(v), "Adam v", L.adam_v, v);
    bytes("best weights length " + std::to_string(v), "best weights", L.best_weights, v);
  }
  for (int32_t v : {99, -1, 3})
    bytes("stage " + std::to_string(v), "stage " + std::to_string(v) + " outside", L.stage, v);
  for (uint64_t v : {uint64_t(0), uint64_t(1), uint64_t(3), uint64_t(4096), ~uint64_t(0)})
    bytes("trajectory count " + std::to_string(v), "", L.ntraj, v);
  for (size_t i = 0; i < 2; ++i)
    for (uint64_t v : {uint64_t(0), uint64_t(1) << 40, ~uint64_t(0) / 4}) {
      bytes("trajectory " + std::to_string(i) + " x length " + std::to_string(v), "trajectory x", L.traj_x[i], v);
      bytes("trajectory " + std::to_string(i) + " state length " + std::to_string(v), "trajectory state",
            L.traj_coord[i], v);
    }
  for (uint8_t v : {uint8_t(2), uint8_t(255)}) {
    bytes("has_best " + std::to_string(v), "has best is " + std::to_string(v), L.has_best, v);
    bytes("improved " + std::to_string(v), "improved in stage is", L.improved, v);
    bytes("finished " + std::to_string(v), "finished is", L.finished, v);
  }
  for (uint64_t v : {uint64_t(0), uint64_t(4), uint64_t(1) << 33, ~uint64_t(0)}) {
    bytes("eval history length " + std::to_string(v), "", L.eval_history, v);
    bytes("loss history length " + std::to_string(v), "", L.loss_history, v);
  }
  // Bytes added or removed before the checksum.
  {
    std::string b = good_bytes;
    b.insert(L.checksum, 8, '\0');
    reseal(b);
    cases.push_back({"bytes: 8 trailing bytes", b, "8 trailing bytes before the checksum"});
    b = good_bytes;
    b.erase(L.loss_count, 8);
    reseal(b);
    cases.push_back({"bytes: last field missing", b, "ran out of bytes reading epoch loss count"});
    b = good_bytes;
    b.erase(L.adam_m + 8, 8);
    reseal(b);
    cases.push_back({"bytes: one Adam value missing", b, ""});
  }
  return cases;
}

TEST(Checkpoint, FixtureIsValidAndMidEpoch) {
  const Fixture& f = fixture();
  ASSERT_GT(f.st.unroll_in_epoch, 0);
  ASSERT_EQ(f.st.trajs.size(), 2u);
  ASSERT_FALSE(f.st.adam.m.empty());
  ASSERT_EQ(f.st.epoch, 1);
  const std::string bytes = trainer_to_bytes(f.st, kHash);
  const TrainerState back = trainer_from_bytes(bytes, "ck.ckpt", f.expect());
  EXPECT_EQ(trainer_to_bytes(back, kHash), bytes);
  EXPECT_LE(bytes.size(), checkpoint_max_bytes(f.tc, f.hyper));
}

TEST(Checkpoint, MalformedWithValidChecksumAreRefused) {
  const Fixture& f = fixture();
  const std::vector<Case> cases = malformed_checkpoints();
  for (const Case& c : cases) {
    std::string msg;
    try {
      (void)trainer_from_bytes(c.bytes, "ck.ckpt", f.expect());
      ADD_FAILURE() << c.name << ": accepted";
      continue;
    } catch (const FormatError& e) {
      msg = e.what();
    }
    // The checksum was valid: the refusal must come from a field, not from the checksum.
    EXPECT_EQ(msg.find("checksum mismatch: the checkpoint"), std::string::npos) << c.name << ": " << msg;
    EXPECT_EQ(msg.rfind("ck.ckpt: ", 0), 0u) << c.name << ": " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << c.name << ": " << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.name << ": expected '" << c.expect << "' in: " << msg;
  }
  std::printf("[ checkpoint ] %zu malformed checkpoints with valid checksums refused\n", cases.size());
  EXPECT_GE(cases.size(), 100u);
}

// Every checkpoint a training run saves passes the checks (they are the trainer's invariants).
TEST(Checkpoint, EverySavedStateIsAccepted) {
  for (Method method : {Method::l2o, Method::ml2o}) {
    TrainConfig tc = small_train();
    tc.max_epochs = 3;
    const OptimizerHyper hyper;
    auto backend = make_cpu_backend();
    TrainerState st = make_trainer(method, hyper, 2);
    int saves = 0;
    TrainHooks hooks;
    hooks.after_step = [](const TrainerState&) { return StepAction::save; };
    hooks.save = [&](const TrainerState& s) {
      ++saves;
      const TrainerState back =
          trainer_from_bytes(trainer_to_bytes(s, 5), "ck", CheckpointExpect{5, method, hyper, &tc});
      EXPECT_EQ(back.epoch, s.epoch);
    };
    ASSERT_TRUE(train(tc, Ml2oConfig{}, *backend, st, hooks));
    EXPECT_NO_THROW(trainer_from_bytes(trainer_to_bytes(st, 5), "ck", CheckpointExpect{5, method, hyper, &tc}));
    EXPECT_GT(saves, 5);
  }
}

// A file is read no further than its kind allows: the magic first, then at most the size the
// config's checkpoint (or the largest params file) can have.
TEST(Checkpoint, ReadsAreBoundedByTheFileAndTheConfig) {
  const Fixture& f = fixture();
  std::string msg;
  try {
    (void)load_checkpoint("/dev/zero", f.expect());
  } catch (const FormatError& e) {
    msg = e.what();
  }
  EXPECT_EQ(msg, "/dev/zero: not an ml2o checkpoint (wrong magic; expected \"ML2OCKP1\")");
  msg.clear();
  try {
    (void)load_params("/dev/zero");
  } catch (const FormatError& e) {
    msg = e.what();
  }
  EXPECT_EQ(msg, "/dev/zero: not an ml2o params file (wrong magic; expected \"ML2OPRM1\")");

  const fs::path dir = fs::temp_directory_path() / ("ml2o_ckpt_bound_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string big = (dir / "big.ckpt").string();
  const size_t max = checkpoint_max_bytes(f.tc, f.hyper);
  write_file_atomic(big, "ML2OCKP1" + std::string(max - 7, '\0'));
  msg.clear();
  try {
    (void)load_checkpoint(big, f.expect());
  } catch (const FormatError& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find(big + ": " + std::to_string(max + 1) + " bytes, more than an ml2o checkpoint can hold here"),
            std::string::npos)
      << msg;
  const std::string good = (dir / "good.ckpt").string();
  write_file_atomic(good, trainer_to_bytes(f.st, kHash));
  EXPECT_EQ(load_checkpoint(good, f.expect()).unroll_in_epoch, f.st.unroll_in_epoch);
  const std::string params = (dir / "big.params").string();
  write_file_atomic(params, "ML2OPRM1" + std::string(max_params_bytes(), '\0'));
  msg.clear();
  try {
    (void)load_params(params);
  } catch (const FormatError& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("more than an ml2o params file can hold"), std::string::npos) << msg;
  fs::remove_all(dir);
}

// ---- the fuzz corpus ------------------------------------------------------------------------------

// An input of fuzz/checkpoint_input.hpp: edits of the base checkpoint.
struct Edit {
  uint8_t op;  // 0 overwrite, 1 insert, 2 erase
  uint32_t offset;
  std::string data;  // erase: data.size() bytes
};
template <class T> std::string le(T v) { return std::string(reinterpret_cast<const char*>(&v), sizeof v); }
std::string edits_input(uint8_t mode, const std::vector<Edit>& edits) {
  std::string in(1, char(mode));
  for (const Edit& e : edits) {
    in += char(e.op);
    in += le(e.offset);
    in += char(uint8_t(e.data.size()));
    if (e.op != 2) in += e.data;
  }
  return in;
}

// The committed seed corpus: the base, one edit of every field, bytes added and removed, and raw
// files (empty, cut headers, wrong magic). Regenerate with ML2O_WRITE_FUZZ_CORPUS=1.
std::vector<std::pair<std::string, std::string>> corpus_inputs() {
  const Layout L = layout_of(fuzz::base().st);
  const uint32_t end = uint32_t(fuzz::base().bytes.size());
  std::vector<std::pair<std::string, std::string>> c;
  auto set = [&](const std::string& name, size_t off, const std::string& v) {
    c.emplace_back(name, edits_input(1, {{0, uint32_t(off), v}}));
  };
  c.emplace_back("base", edits_input(1, {}));
  c.emplace_back("base_byte_flipped_unsealed", edits_input(0, {{0, 100, "\xff"}}));
  set("version_2", L.version, le<uint32_t>(2));
  set("config_hash_other", L.hash, le<uint64_t>(fuzz::kBaseHash + 1));
  set("params_length_0", L.params_len, le<uint64_t>(0));
  set("params_length_huge", L.params_len, le<uint64_t>(uint64_t(1) << 62));
  set("params_arch_dmlstm", L.params_len + 8 + 8 + 4, le<uint32_t>(1));
  set("method_2", L.method, le<uint32_t>(2));
  set("adam_m_length_5", L.adam_m, le<uint64_t>(5));
  set("adam_v_length_huge", L.adam_v, le<uint64_t>(~uint64_t(0)));
  set("adam_t_negative", L.adam_t, le<int64_t>(-1));
  set("epoch_99", L.epoch, le<int64_t>(99));
  set("stage_99", L.stage, le<int32_t>(99));
  set("unroll_negative", L.unroll, le<int64_t>(-1));
  set("trajectory_count_0", L.ntraj, le<uint64_t>(0));
  set("trajectory_count_1", L.ntraj, le<uint64_t>(1));
  set("trajectory_count_3", L.ntraj, le<uint64_t>(3));
  set("trajectory0_x_length_0", L.traj_x[0], le<uint64_t>(0));
  set("trajectory1_state_length_1", L.traj_coord[1], le<uint64_t>(1));
  set("trajectory0_k_0", L.traj_k[0], le<int64_t>(0));
  set("best_score_nan", L.best_score, le<double>(NAN));
  set("has_best_2", L.has_best, std::string(1, '\2'));
  set("best_weights_length_0", L.best_weights, le<uint64_t>(0));
  set("evals_without_improvement_99", L.ewi, le<int32_t>(99));
  set("improved_7", L.improved, std::string(1, '\7'));
  set("finished_2", L.finished, std::string(1, '\2'));
  set("skipped_negative", L.skipped, le<int64_t>(-1));
  set("consecutive_skipped_99", L.consecutive, le<int32_t>(99));
  set("eval_history_length_0", L.eval_history, le<uint64_t>(0));
  set("eval_history_length_1000", L.eval_history, le<uint64_t>(1000));
  set("loss_history_length_99", L.loss_history, le<uint64_t>(99));
  set("loss_sum_nan", L.loss_sum, le<double>(NAN));
  set("loss_count_negative", L.loss_count, le<int64_t>(-1));
  c.emplace_back("eight_bytes_before_checksum", edits_input(1, {{1, end - 8, std::string(8, '\0')}}));
  c.emplace_back("loss_count_erased", edits_input(1, {{2, uint32_t(L.loss_count), std::string(8, '\0')}}));
  c.emplace_back("cut_after_trajectories", edits_input(1, {{2, uint32_t(L.best_score), std::string(255, '\0')}}));
  const std::string magic = "ML2OCKP1";
  c.emplace_back("raw_empty", std::string(1, '\2'));
  c.emplace_back("raw_magic_only", "\2" + magic);
  c.emplace_back("raw_header_only", "\3" + magic + le<uint32_t>(1) + le<uint64_t>(fuzz::kBaseHash) + le<uint64_t>(0));
  c.emplace_back("raw_wrong_magic", "\3ML2OPRM1" + le<uint32_t>(1) + std::string(16, '\0'));
  c.emplace_back("raw_version_9", "\3" + magic + le<uint32_t>(9) + std::string(16, '\0'));
  return c;
}

TEST(Checkpoint, FuzzCorpusReplays) {
  const fs::path dir = fs::path(ML2O_SOURCE_DIR) / "fuzz" / "corpus" / "checkpoint";
  if (std::getenv("ML2O_WRITE_FUZZ_CORPUS")) {
    fs::create_directories(dir);
    for (const auto& [name, in] : corpus_inputs()) write_file_atomic((dir / name).string(), in);
  }
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  size_t n = 0, loaded = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string in = read_file(e.path().string());
    const auto* data = reinterpret_cast<const uint8_t*>(in.data());
    EXPECT_EQ(fuzz::check_input(data, in.size()), "") << e.path();
    try {
      (void)trainer_from_bytes(fuzz::input_to_bytes(data, in.size()), "fuzz.ckpt", fuzz::base().expect());
      ++loaded;
    } catch (const FormatError&) {
    }
    ++n;
  }
  std::printf("[ checkpoint ] fuzz corpus: %zu inputs replayed, %zu load\n", n, loaded);
  EXPECT_GE(n, 40u);
  EXPECT_EQ(loaded, 1u);  // the base itself; every edit in the seed corpus is refused
  // The committed corpus is what corpus_inputs() generates (a changed format shows up here).
  for (const auto& [name, in] : corpus_inputs()) {
    ASSERT_TRUE(fs::exists(dir / name)) << name << ": regenerate with ML2O_WRITE_FUZZ_CORPUS=1";
  }
}

}  // namespace
}  // namespace ml2o
