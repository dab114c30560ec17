#pragma once
/// The program of a fused node: element-wise instructions over the node's
/// inputs (leaves), as the fusion pass writes it into the node's attributes
/// and the fused kernels (CPU, CUDA) and the fused op's reference read it.
/// The encoding lives here only.
///
/// Attributes: "ops" (op names joined by ';'), "args" (3 operand references
/// per instruction: r >= 0 is leaf r, r < 0 the result of instruction -r-1,
/// kNoArg unused), "bools" (1 where an instruction yields bool, else the
/// value dtype: that of the first floating leaf), "outs" (the instructions
/// whose results are outputs 1, 2, ...; output 0 is the last instruction).

#include <cstdint>
#include <string>
#include <vector>

#include "core/attrs.hpp"

namespace loom::fused {

inline constexpr int64_t kNoArg = -1000000;

struct Instr {
  std::string op;
  bool to_bool = false;
  int64_t arg[3] = {kNoArg, kNoArg, kNoArg};
  /// Operands used (the leading args that are not kNoArg).
  int arity() const { return arg[0] == kNoArg ? 0 : arg[1] == kNoArg ? 1 : arg[2] == kNoArg ? 2 : 3; }
};

/// An operand reference to the result of instruction k.
inline int64_t result_of(int64_t k) { return -(k + 1); }
/// The instruction a reference r < 0 names.
inline int64_t instr_of(int64_t r) { return -r - 1; }

struct Program {
  std::vector<Instr> instrs;  // in dependency order; the last one is output 0
  std::vector<int64_t> outs;  // instructions whose results are outputs 1, 2, ...
};

/// The attributes of a fused node running `p`.
Attrs encode(const Program& p);
/// The program in a fused node's attributes; checks that every reference
/// points to an earlier instruction or a leaf below `leaves` (a malformed
/// program is a loom bug).
Program decode(const Attrs& attrs, size_t leaves);

}  // namespace loom::fused
