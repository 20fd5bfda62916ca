// Progress on stderr: a live line on a terminal, plain periodic lines in a log.
#include "ml2o/progress.hpp"

#include "ml2o/dist.hpp"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>

namespace ml2o {

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

std::string fmt_time(double s) {
  if (!(s >= 0) || !std::isfinite(s)) return "?";
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", int(s) / 3600, (int(s) % 3600) / 60);
  return buf;
}

std::string fmt_g(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// Only rank 0 of a distributed run reports progress.
Progress::Progress(bool quiet) : tty_(::isatty(2)), quiet_(quiet || !dist::root()), stage_start_(now_s()) {}

void Progress::stage(const std::string& name) {
  finish_line();
  stage_ = name;
  stage_start_ = now_s();
  last_print_ = -1e9;
  if (!quiet_) std::cerr << "[ml2o] " << name << std::endl;
}

void Progress::update(const std::string& text, double fraction) {
  if (quiet_) return;
  const double t = now_s();
  const double elapsed = t - stage_start_;
  std::string eta = "";
  if (fraction > 0 && fraction <= 1)
    eta = ", about " + fmt_time(elapsed / fraction - elapsed) + " left";
  const std::string msg = "[" + stage_ + "] " + text + " (" + fmt_time(elapsed) + eta + ")";
  if (tty_) {
    if (t - last_print_ < 0.2) return;
    std::cerr << "\r\033[K" << msg << std::flush;
  } else {
    if (t - last_print_ < 10.0) return;  // plain periodic lines in logs
    std::cerr << msg << std::endl;
  }
  last_print_ = t;
}

void Progress::line(const std::string& text) {
  finish_line();
  if (!quiet_) std::cerr << "[ml2o] " << text << std::endl;
}

void Progress::finish_line() {
  if (tty_ && !quiet_ && last_print_ > -1e9) std::cerr << "\r\033[K" << std::flush;
  last_print_ = -1e9;
}

}  // namespace ml2o
