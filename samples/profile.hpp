#pragma once
// --profile for the trainers: the most expensive graph nodes of a session,
// and the time by op, summed over all its runs (SessionOptions::profile).

#include <algorithm>
#include <cstdlib>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "core/session.hpp"
#include "samples/progress.hpp"

namespace loom::samples {

/// The `top` most expensive nodes (all of them with LOOM_PROFILE_ALL set),
/// then every op's total time and call count.
inline void print_profile(const Session& s, std::ostream& out, size_t top = 25) {
  const SessionStats st = s.stats();
  double total = 0;
  for (const NodeTime& t : st.node_times) total += t.total_us;
  out << "profile: " << st.runs << " runs, " << st.plans_compiled << " plans; node times summed over all runs:\n";
  const size_t shown = std::getenv("LOOM_PROFILE_ALL") ? st.node_times.size() : top;
  for (size_t i = 0; i < st.node_times.size() && i < shown; ++i) {
    const NodeTime& t = st.node_times[i];
    out << fmt("%8.1f ms ", t.total_us / 1e3) << fmt("%5.1f%%  ", 100 * t.total_us / total) << t.op << "  " << t.name
        << "\n";
  }
  std::map<std::string, std::pair<double, int64_t>> by_op;
  for (const NodeTime& t : st.node_times) by_op[t.op].first += t.total_us, by_op[t.op].second += t.calls;
  std::vector<std::pair<std::string, std::pair<double, int64_t>>> ops(by_op.begin(), by_op.end());
  std::sort(ops.begin(), ops.end(), [](const auto& x, const auto& y) { return x.second.first > y.second.first; });
  out << "by op:\n";
  for (const auto& [op, tc] : ops)
    out << fmt("%8.1f ms ", tc.first / 1e3) << fmt("%5.1f%%  ", 100 * tc.first / total) << op << " (" << tc.second
        << " calls)\n";
}

}  // namespace loom::samples
