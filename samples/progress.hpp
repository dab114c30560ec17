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

/// A one-line progress bar redrawn in place (terminals only): epoch, bar,
/// done/total, loss, accuracy, images/s and the time left.
class Progress {
 public:
  Progress(bool enabled, int64_t epoch, int64_t epochs, int64_t total)
      : on_(enabled), epoch_(epoch), epochs_(epochs), total_(total), start_(Clock::now()) {}
  void update(int64_t done, int64_t images, double loss, double acc) {
    if (!on_) return;
    auto now = Clock::now();
    if (done < total_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    double s = std::chrono::duration<double>(now - start_).count();
    const int width = 24;
    int fill = total_ ? int(width * done / total_) : width;
    std::string bar(size_t(fill), '=');
    if (fill < width) bar += '>', bar += std::string(size_t(width - fill - 1), ' ');
    double rate = s > 0 ? double(images) / s : 0;
    double eta = done > 0 ? s * double(total_ - done) / double(done) : NAN;
    std::fprintf(stdout, "\r\033[2Kepoch %lld/%lld [%s] %lld/%lld  loss %.4f  acc %.4f  %.0f img/s  ETA %s",
                 (long long)epoch_, (long long)epochs_, bar.c_str(), (long long)done, (long long)total_, loss, acc,
                 rate, duration(eta).c_str());
    std::fflush(stdout);
  }
  void clear() {
    if (on_) std::fputs("\r\033[2K", stdout);
  }

 private:
  bool on_;
  int64_t epoch_, epochs_, total_;
  Clock::time_point start_, last_{};
};

}  // namespace loom::samples
