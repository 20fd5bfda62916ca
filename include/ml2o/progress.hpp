// Progress on stderr: a live line on a terminal, periodic plain lines otherwise; and the small
// formatting helpers progress lines and tables share.
#pragma once
#include <string>

namespace ml2o {

double now_s();                   // monotonic seconds
std::string fmt_time(double s);   // "42s", "3m05s", "2h10m"
std::string fmt_g(double v);      // %.4g

class Progress {
 public:
  explicit Progress(bool quiet = false);
  void stage(const std::string& name);
  void update(const std::string& text, double fraction_done);  // fraction in [0, 1] or < 0
  void line(const std::string& text);  // always printed
  void finish_line();

 private:
  bool tty_, quiet_;
  std::string stage_;
  double stage_start_, last_print_ = -1e9;
};

}  // namespace ml2o
