// ProgressBar: one line on stderr that redraws itself as work advances,
// only when stderr is a terminal (a script or a log gets nothing).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "ovbd/control/size.h"

namespace ovbd::tool {

class ProgressBar {
 public:
  // `label` is padded to label_width; with show_total the total's size
  // follows the percentage.
  explicit ProgressBar(std::string label, int label_width = 10, bool show_total = false)
      : label_(std::move(label)), width_(label_width), show_total_(show_total), on_(isatty(2)) {}
  ~ProgressBar() {
    if (on_ && shown_) std::fprintf(stderr, "\n");
  }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Redraws only when the whole percentage changed.
  void operator()(uint64_t done, uint64_t total) {
    if (!on_ || total == 0) return;
    const int pct = static_cast<int>(done * 100 / total);
    if (pct == last_) return;
    last_ = pct;
    shown_ = true;
    const int bar = pct / 4;
    std::fprintf(stderr, "\r%-*s [%.*s%*s] %3d%%%s%s", width_, label_.c_str(), bar,
                 "#########################", 25 - bar, "", pct, show_total_ ? " " : "",
                 show_total_ ? FormatSize(total).c_str() : "");
    std::fflush(stderr);
  }

 private:
  const std::string label_;
  const int width_;
  const bool show_total_;
  const bool on_;
  bool shown_ = false;
  int last_ = -1;
};

}  // namespace ovbd::tool
