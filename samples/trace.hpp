#pragma once
// --trace for the trainers: a Chrome trace (Perfetto, chrome://tracing) of a
// few consecutive training steps, merged from the session's trace of each run
// (Session::trace_json) and laid out on one time line.

#include <chrono>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "core/session.hpp"
#include "frontend/io.hpp"

namespace loom::samples {

class TraceRecorder {
 public:
  /// Records runs first..first+count-1 (counted from 1) of a profiling session.
  TraceRecorder(std::string path, int64_t first = 2, int64_t count = 5)
      : path_(std::move(path)), first_(first), last_(first + count - 1) {
    if (enabled()) io::check_writable(path_);  // refused now, not after the traced steps
  }
  bool enabled() const { return !path_.empty(); }
  bool done() const { return written_; }

  /// Call before each run; true when it is to be recorded.
  bool before_run() {
    ++run_;
    if (enabled() && run_ == first_) origin_ = std::chrono::steady_clock::now();
    start_ = std::chrono::steady_clock::now();
    return enabled() && !written_ && run_ >= first_ && run_ <= last_;
  }
  /// Call after each run: appends its events, and writes the file after the last one.
  void after_run(const Session& s) {
    if (!enabled() || written_ || run_ < first_ || run_ > last_) return;
    const double offset = std::chrono::duration<double, std::micro>(start_ - origin_).count();
    nlohmann::json run = nlohmann::json::parse(s.trace_json());
    for (auto& e : run["traceEvents"]) {
      if (e["ph"] == "M") {  // process and thread names, once each
        const int tid = e.value("tid", -1);
        if (named_.insert(tid).second) events_.push_back(e);
        continue;
      }
      e["ts"] = e["ts"].get<double>() + offset;
      e["args"]["run"] = run_;
      events_.push_back(std::move(e));
    }
    if (run_ == last_) write();
  }
  /// Writes what was recorded (also when training ended before the last traced run).
  void write() {
    if (!enabled() || written_ || events_.empty()) return;
    nlohmann::json doc{{"traceEvents", events_}, {"displayTimeUnit", "ns"}};
    io::write_file_atomically(path_, doc.dump() + "\n");
    written_ = true;
  }

 private:
  std::string path_;
  int64_t first_, last_, run_ = 0;
  bool written_ = false;
  nlohmann::json events_ = nlohmann::json::array();
  std::set<int> named_;  // threads (and -1, the process) with a name event
  std::chrono::steady_clock::time_point origin_, start_;
};

}  // namespace loom::samples
