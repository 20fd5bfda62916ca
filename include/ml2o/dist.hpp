// Distributed runs: `mpirun -np N ml2o run|train ...`. Every rank runs the same program on the
// same replicated state (weights, Adam moments, decisions); the work of every batched unroll is
// split at the CPU reference's chunk boundaries (instances_per_chunk, a function of the task
// only), and the per-chunk partial sums are all-gathered and added in chunk order on every rank.
// The sums are therefore those of one process, bit for bit, for any N (docs/distributed.md).
//
// Without MPI (a build with ML2O_MPI=OFF, or a process not started by an MPI launcher) the
// process is rank 0 of 1 and every collective is the identity.
//
// Collectives must be called by every rank in the same order. Each one is nonblocking and
// polled against a deadline (timeout_s()); a rank that sees no answer in time, or an MPI error,
// prints which collective stalled and stops every rank (MPI_Abort), so a dead or hung rank never
// leaves the others waiting forever.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace ml2o::dist {

// Starts MPI when the process was launched by an MPI launcher; call first thing in main.
void init(int& argc, char**& argv);
// Normal end of a distributed run (MPI_Finalize); a no-op otherwise.
void finalize();
// Stops every rank now with `code` (MPI_Abort); std::exit(code) in a single process.
[[noreturn]] void abort_all(int code);

bool built_with_mpi();
int rank();
int size();
inline bool root() { return rank() == 0; }

// Seconds a rank waits in one collective before declaring the run broken: ML2O_DIST_TIMEOUT
// (a positive number of seconds), default 120.
double timeout_s();

// ---- collectives ---------------------------------------------------------------------------------
// Every rank's bytes, indexed by rank.
std::vector<std::string> allgather(const std::string& mine);
// Rank 0's bytes on every rank (the argument is ignored elsewhere).
std::string broadcast(const std::string& from_root);
// The largest of every rank's value.
int allreduce_max(int v);

// fn(i) for every i in [0, n), each rank computing its share (my_share); every rank receives all
// n results, in order.
std::vector<std::string> shared_map(int64_t n, const std::function<std::string(int64_t)>& fn);

// ---- ownership -----------------------------------------------------------------------------------
// Rank r's contiguous share of n items: [n*r/size, n*(r+1)/size).
struct Range {
  int64_t begin = 0, end = 0;
  int64_t count() const { return end - begin; }
};
Range share(int64_t n, int r, int ranks);
inline Range my_share(int64_t n) { return share(n, rank(), size()); }

// ---- agreement -----------------------------------------------------------------------------------
// Runs fn on rank 0 only. An exception there is rethrown on every rank (ConfigError and IoError
// keep their type, so every rank exits with the same code); without one, every rank returns.
void on_root(const std::function<void()>& fn);

// FNV-1a of this executable's bytes: ranks of different builds differ.
uint64_t build_id();
// Throws ConfigError (exit 2) on every rank when some rank was started with other settings
// (settings_hash: the resolved config and command) or another build than rank 0.
void require_same_everywhere(uint64_t settings_hash);

}  // namespace ml2o::dist
