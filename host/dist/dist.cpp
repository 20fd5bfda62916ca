// The MPI side of distributed runs (include/ml2o/dist.hpp). Built without MPI, every function is
// the single-process identity.
#include "ml2o/dist.hpp"

#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <thread>

#include "ml2o/config.hpp"
#include "ml2o/io.hpp"
#include "ml2o/lopt.hpp"

#ifdef ML2O_HAVE_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace ml2o::dist {

namespace {

int g_rank = 0, g_size = 1;

[[noreturn]] void broken(const std::string& what) {
  std::cerr << "ml2o: rank " << g_rank << " of " << g_size << ": " << what
            << "; a rank died, hangs or failed. Stopping every rank." << std::endl;
  abort_all(1);
}

#ifdef ML2O_HAVE_MPI
bool g_mpi = false;          // MPI_Init was called
uint64_t g_collectives = 0;  // collectives entered by this rank (messages, fault injection)

// ML2O_DIST_FAULT=<rank>:<collective>:<abort|hang>, for the fault tests only: that rank aborts or
// stops answering when it enters its <collective>-th collective (counted from 1).
void maybe_inject_fault() {
  static const char* spec = std::getenv("ML2O_DIST_FAULT");
  if (!spec || !*spec) return;
  int r = -1;
  unsigned long long at = 0;
  char what[16] = {0};
  if (std::sscanf(spec, "%d:%llu:%15s", &r, &at, what) != 3 || r != g_rank || at != g_collectives) return;
  std::cerr << "ml2o: rank " << g_rank << ": ML2O_DIST_FAULT: " << what << " at collective " << at << std::endl;
  if (std::strcmp(what, "hang") == 0)
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  std::abort();
}

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  broken(std::string("MPI error in ") + what + ": " + std::string(msg, size_t(len)));
}

// Polls a nonblocking collective until it completes or the deadline passes. Sleeping between
// polls keeps waiting ranks off the cores the working ranks need (oversubscribed machines).
void wait_for(MPI_Request& req, const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s());
  auto pause = std::chrono::microseconds(20);
  for (;;) {
    int done = 0;
    check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), what);
    if (done) return;
    if (std::chrono::steady_clock::now() > deadline) {
      char buf[200];
      std::snprintf(buf, sizeof buf, "no answer from every rank within %g s in collective #%llu (%s)",
                    timeout_s(), (unsigned long long)g_collectives, what);
      broken(buf);
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(2000));
  }
}

void enter() {
  ++g_collectives;
  maybe_inject_fault();
}
#endif

}  // namespace

bool built_with_mpi() {
#ifdef ML2O_HAVE_MPI
  return true;
#else
  return false;
#endif
}

void init(int& argc, char**& argv) {
#ifdef ML2O_HAVE_MPI
  // Only under a launcher: a plain `ml2o` must not start MPI's singleton machinery.
  const bool launched = std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE") ||
                        std::getenv("PMIX_RANK");
  if (!launched) return;
  int provided = 0;
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    std::cerr << "ml2o: MPI_Init failed" << std::endl;
    std::exit(1);
  }
  g_mpi = true;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
#else
  (void)argc;
  (void)argv;
#endif
}

void finalize() {
#ifdef ML2O_HAVE_MPI
  if (g_mpi) MPI_Finalize();
  g_mpi = false;
#endif
}

void abort_all(int code) {
  std::cerr.flush();
#ifdef ML2O_HAVE_MPI
  if (g_mpi) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

int rank() { return g_rank; }
int size() { return g_size; }

double timeout_s() {
  static const double t = [] {
    const char* s = std::getenv("ML2O_DIST_TIMEOUT");
    if (!s || !*s) return 120.0;
    char* end = nullptr;
    const double v = std::strtod(s, &end);
    if (end == s || *end != '\0' || !(v > 0)) {
      std::cerr << "ml2o: ML2O_DIST_TIMEOUT must be a positive number of seconds, got '" << s << "'" << std::endl;
      std::exit(2);
    }
    return v;
  }();
  return t;
}

std::vector<std::string> allgather(const std::string& mine) {
  if (g_size == 1) return {mine};
#ifdef ML2O_HAVE_MPI
  enter();
  const unsigned long long n = mine.size();
  std::vector<unsigned long long> sizes(g_size);
  MPI_Request req;
  check(MPI_Iallgather(&n, 1, MPI_UNSIGNED_LONG_LONG, sizes.data(), 1, MPI_UNSIGNED_LONG_LONG,
                       MPI_COMM_WORLD, &req), "allgather of sizes");
  wait_for(req, "allgather of sizes");
  std::vector<int> counts(g_size), displs(g_size);
  unsigned long long total = 0;
  for (int r = 0; r < g_size; ++r) {
    if (sizes[r] > (1ull << 30)) broken("a rank sent more than 1 GiB in one allgather");
    counts[r] = int(sizes[r]);
    displs[r] = int(total);
    total += sizes[r];
  }
  if (total > (1ull << 31) - 1) broken("an allgather of more than 2 GiB");
  std::string all(total, '\0');
  check(MPI_Iallgatherv(mine.data(), int(n), MPI_BYTE, all.data(), counts.data(), displs.data(),
                        MPI_BYTE, MPI_COMM_WORLD, &req), "allgatherv");
  wait_for(req, "allgatherv");
  std::vector<std::string> out(g_size);
  for (int r = 0; r < g_size; ++r) out[r] = all.substr(size_t(displs[r]), size_t(counts[r]));
  return out;
#else
  return {mine};
#endif
}

std::string broadcast(const std::string& from_root) {
  if (g_size == 1) return from_root;
#ifdef ML2O_HAVE_MPI
  enter();
  unsigned long long n = g_rank == 0 ? from_root.size() : 0;
  MPI_Request req;
  check(MPI_Ibcast(&n, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD, &req), "broadcast of a size");
  wait_for(req, "broadcast of a size");
  if (n > (1ull << 31) - 1) broken("a broadcast of more than 2 GiB");
  std::string out = g_rank == 0 ? from_root : std::string(n, '\0');
  check(MPI_Ibcast(out.data(), int(n), MPI_BYTE, 0, MPI_COMM_WORLD, &req), "broadcast");
  wait_for(req, "broadcast");
  return out;
#else
  return from_root;
#endif
}

int allreduce_max(int v) {
  if (g_size == 1) return v;
#ifdef ML2O_HAVE_MPI
  enter();
  int out = 0;
  MPI_Request req;
  check(MPI_Iallreduce(&v, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD, &req), "allreduce");
  wait_for(req, "allreduce");
  return out;
#else
  return v;
#endif
}

std::vector<std::string> shared_map(int64_t n, const std::function<std::string(int64_t)>& fn) {
  const Range mine = my_share(n);
  std::string packed;
  for (int64_t i = mine.begin; i < mine.end; ++i) {
    const std::string one = fn(i);
    const uint64_t len = one.size();
    packed.append(reinterpret_cast<const char*>(&len), sizeof len);
    packed += one;
  }
  std::vector<std::string> out;
  out.reserve(size_t(n));
  for (const std::string& part : allgather(packed))
    for (size_t at = 0; at < part.size();) {
      uint64_t len = 0;
      std::memcpy(&len, part.data() + at, sizeof len);
      out.push_back(part.substr(at + sizeof len, len));
      at += sizeof len + len;
    }
  if (int64_t(out.size()) != n) broken("shared_map: the ranks returned " + std::to_string(out.size()) +
                                       " results for " + std::to_string(n) + " items");
  return out;
}

Range share(int64_t n, int r, int ranks) {
  return Range{n * r / ranks, n * (r + 1) / ranks};
}

void on_root(const std::function<void()>& fn) {
  if (g_size == 1) return fn();
  // Status: "" success, else a kind letter (C config, I I/O, E other) and the message.
  std::string status;
  if (root()) {
    std::exception_ptr error;
    try {
      fn();
    } catch (const ConfigError& e) {
      status = std::string("C") + e.what();
      error = std::current_exception();
    } catch (const IoError& e) {
      status = std::string("I") + e.what();
      error = std::current_exception();
    } catch (const std::exception& e) {
      status = std::string("E") + e.what();
      error = std::current_exception();
    }
    broadcast(status);
    if (error) std::rethrow_exception(error);
    return;
  }
  status = broadcast("");
  if (status.empty()) return;
  const std::string msg = status.substr(1) + " (reported by rank 0)";
  if (status[0] == 'C') throw ConfigError(msg);
  if (status[0] == 'I') throw IoError(msg);
  throw std::runtime_error(msg);
}

uint64_t build_id() {
  static const uint64_t id = [] {
    std::ifstream f("/proc/self/exe", std::ios::binary);
    uint64_t h = 0xcbf29ce484222325ull;
    std::vector<char> buf(1 << 20);
    while (f) {
      f.read(buf.data(), std::streamsize(buf.size()));
      h = fnv1a64(buf.data(), size_t(f.gcount()), h);
    }
    return h;
  }();
  return id;
}

void require_same_everywhere(uint64_t settings_hash) {
  if (g_size == 1) return;
  const uint64_t mine[2] = {settings_hash, build_id()};
  const auto all = allgather(std::string(reinterpret_cast<const char*>(mine), sizeof mine));
  uint64_t first[2];
  std::memcpy(first, all[0].data(), sizeof first);
  for (int r = 1; r < g_size; ++r) {
    uint64_t other[2];
    if (all[r].size() != sizeof other) throw ConfigError("rank " + std::to_string(r) + " answered the start check wrongly");
    std::memcpy(other, all[r].data(), sizeof other);
    if (other[1] != first[1])
      throw ConfigError("rank " + std::to_string(r) + " runs another ml2o build than rank 0 (executables "
                        "differ); start every rank with the same binary");
    if (other[0] != first[0])
      throw ConfigError("rank " + std::to_string(r) + " was started with other settings than rank 0 (the "
                        "resolved config or the command differs); start every rank with the same "
                        "command and config");
  }
}

}  // namespace ml2o::dist
