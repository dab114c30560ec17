#include "core/fused_program.hpp"

#include <algorithm>

namespace loom::fused {

Attrs encode(const Program& p) {
  std::string ops;
  std::vector<int64_t> args, bools;
  for (const Instr& i : p.instrs) {
    ops += (ops.empty() ? "" : ";") + i.op;
    args.insert(args.end(), i.arg, i.arg + 3);
    bools.push_back(i.to_bool);
  }
  Attrs a{{"ops", ops}, {"args", args}, {"bools", bools}};
  if (!p.outs.empty()) a.set("outs", p.outs);
  return a;
}

Program decode(const Attrs& attrs, size_t leaves) {
  Program p;
  const std::string& ops = attrs.get<std::string>("ops");
  for (size_t at = 0; at <= ops.size();) {
    const size_t end = std::min(ops.find(';', at), ops.size());
    p.instrs.push_back({ops.substr(at, end - at)});
    at = end + 1;
  }
  const auto& args = attrs.ints("args");
  const auto& bools = attrs.ints("bools");
  LOOM_ASSERT(!p.instrs.empty() && args.size() == 3 * p.instrs.size() && bools.size() == p.instrs.size(),
              "malformed fused program");
  for (size_t k = 0; k < p.instrs.size(); ++k) {
    Instr& in = p.instrs[k];
    in.to_bool = bools[k] != 0;
    for (size_t j = 0; j < 3; ++j) in.arg[j] = args[3 * k + j];
    for (int j = 0; j < in.arity(); ++j) {
      const int64_t r = in.arg[j];
      LOOM_ASSERT(r >= 0 ? size_t(r) < leaves : instr_of(r) < int64_t(k), "fused: bad operand ", r, " in ", in.op);
    }
  }
  p.outs = attrs.get_or<std::vector<int64_t>>("outs", {});
  for (int64_t o : p.outs) LOOM_ASSERT(o >= 0 && size_t(o) < p.instrs.size(), "fused: bad output instruction ", o);
  return p;
}

}  // namespace loom::fused
