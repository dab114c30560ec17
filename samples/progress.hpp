#pragma once
// What the trainers share: number formatting and a progress bar redrawn in
// place on a terminal.

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace loom::samples {

using Clock = std::chrono::steady_clock;

inline std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

inline std::string duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 60) return fmt("%.0fs", s);
  return std::to_string(int64_t(s) / 60) + "m" + fmt("%02.0fs", std::fmod(s, 60.0));
}

/// Columns of the terminal on stdout (0 when it is not a terminal).
inline int terminal_width() {
  winsize w{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &w) != 0) return 0;
  return w.ws_col;
}

/// What a progress line shows besides loss and bar: the metric after the
/// loss ("acc 0.8512") and the unit counted for the rate ("img/s").
struct ProgressLabels {
  const char* metric = "acc";
  const char* metric_format = "%.4f";
  const char* unit = "img";
};

/// A one-line progress bar redrawn in place (terminals only): epoch, bar,
/// done/total, loss, a metric (accuracy, perplexity), items/s and the time left. The line always
/// fits the terminal's current width, so it never wraps (a wrapped line could
/// not be redrawn and would leave stale lines behind).
class Progress {
 public:
  Progress(bool enabled, int64_t epoch, int64_t epochs, int64_t total, ProgressLabels labels = {})
      : on_(enabled), epoch_(epoch), epochs_(epochs), total_(total), labels_(labels), start_(Clock::now()) {}
  /// `items` counted since the start (images, tokens) give the rate.
  void update(int64_t done, int64_t items, double loss, double metric) {
    if (!on_) return;
    auto now = Clock::now();
    if (done < total_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    double s = std::chrono::duration<double>(now - start_).count();
    double rate = s > 0 ? double(items) / s : 0;
    double eta = done > 0 ? s * double(total_ - done) / double(done) : NAN;
    std::string line = render(terminal_width(), done, loss, metric, rate, eta);
    std::fprintf(stdout, "\r\033[2K%s", line.c_str());
    std::fflush(stdout);
  }
  void clear() {
    if (on_) std::fputs("\r\033[2K", stdout);
  }

  /// The line for a terminal of `width` columns (0: unknown, 80 assumed),
  /// at most width - 1 characters: the bar shrinks first, then the fields
  /// at the end are dropped.
  std::string render(int width, int64_t done, double loss, double metric, double rate, double eta) const {
    const int limit = (width > 0 ? width : 80) - 1;
    const std::string head = "epoch " + std::to_string(epoch_) + "/" + std::to_string(epochs_);
    std::vector<std::string> fields = {std::to_string(done) + "/" + std::to_string(total_), "loss " + fmt("%.4f", loss),
                                       std::string(labels_.metric) + " " + fmt(labels_.metric_format, metric),
                                       fmt("%.0f ", rate) + labels_.unit + "/s", "ETA " + duration(eta)};
    auto join = [&](size_t n, int bar) {
      std::string out = head;
      if (bar > 0) {
        int fill = total_ ? int(int64_t(bar) * done / total_) : bar;
        std::string b(size_t(fill), '=');
        if (fill < bar) b += '>', b += std::string(size_t(bar - fill - 1), ' ');
        out += " [" + b + "]";
      }
      for (size_t i = 0; i < n; ++i) out += (i ? "  " : " ") + fields[i];
      return out;
    };
    for (size_t n = fields.size();; --n) {
      const int room = limit - int(join(n, 0).size()) - 3;  // " [" and "]"
      if (room >= 10 || n == 0) {
        std::string out = join(n, std::clamp(room, 0, 24));
        if (int(out.size()) > limit) out.resize(size_t(std::max(limit, 0)));
        return out;
      }
    }
  }

 private:
  bool on_;
  int64_t epoch_, epochs_, total_;
  ProgressLabels labels_;
  Clock::time_point start_, last_{};
};

}  // namespace loom::samples
