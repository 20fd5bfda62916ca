#include "ml2o/signals.hpp"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>

#include "ml2o/protocol.hpp"

namespace ml2o {

namespace {

std::atomic<int> g_signal{0};
OnInterrupt g_mode = OnInterrupt::finish_step_and_save;
char g_message[2048];  // prepared before the handler can run; the handler only write()s it

void on_signal(int sig) {
  std::signal(sig, SIG_DFL);  // a second one stops at once
  g_signal.store(sig);
  if (g_mode == OnInterrupt::stop_now) {
    const ssize_t ignored = ::write(2, g_message, std::strlen(g_message));
    (void)ignored;
    ::_exit(128 + sig);
  }
  g_interrupt_requested.store(true);
}

}  // namespace

void install_interrupt_handlers(OnInterrupt mode, const std::string& message) {
  g_mode = mode;
  std::strncpy(g_message, message.c_str(), sizeof g_message - 1);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

int interrupt_exit_code() {
  const int sig = g_signal.load();
  return 128 + (sig ? sig : SIGINT);
}

}  // namespace ml2o
