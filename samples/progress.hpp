#pragma once
// What the trainers share: number formatting and a progress bar redrawn in
// place on a terminal.

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

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

/// What a progress line shows besides loss and bar: the metric after the
/// loss ("acc 0.8512") and the unit counted for the rate ("img/s").
struct ProgressLabels {
  const char* metric = "acc";
  const char* metric_format = "%.4f";
  const char* unit = "img";
};

/// A one-line progress bar redrawn in place (terminals only): epoch, bar,
/// done/total, loss, a metric (accuracy, perplexity), items/s and the time left.
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
    const int width = 24;
    int fill = total_ ? int(width * done / total_) : width;
    std::string bar(size_t(fill), '=');
    if (fill < width) bar += '>', bar += std::string(size_t(width - fill - 1), ' ');
    double rate = s > 0 ? double(items) / s : 0;
    double eta = done > 0 ? s * double(total_ - done) / double(done) : NAN;
    std::fprintf(stdout, "\r\033[2Kepoch %lld/%lld [%s] %lld/%lld  loss %.4f  %s %s  %.0f %s/s  ETA %s",
                 (long long)epoch_, (long long)epochs_, bar.c_str(), (long long)done, (long long)total_, loss,
                 labels_.metric, fmt(labels_.metric_format, metric).c_str(), rate, labels_.unit, duration(eta).c_str());
    std::fflush(stdout);
  }
  void clear() {
    if (on_) std::fputs("\r\033[2K", stdout);
  }

 private:
  bool on_;
  int64_t epoch_, epochs_, total_;
  ProgressLabels labels_;
  Clock::time_point start_, last_{};
};

}  // namespace loom::samples
