// Graphviz DOT export of a compiled plan: one box per alive node with its
// name, op, schedule position, device and output types with arena offsets;
// solid edges for data, dotted ones for ordering. Node names and labels are
// escaped, so any name (quotes, backslashes, tabs, newlines, bytes that are
// not UTF-8) gives valid DOT.

#include <sstream>

#include "core/plan.hpp"

namespace loom {

namespace {

/// Length of the valid UTF-8 sequence starting at s[i], or 0.
size_t utf8_length(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return 0;
  return n;
}

/// Text for inside a double-quoted DOT label: quotes and backslashes escaped,
/// control characters and invalid UTF-8 bytes shown as \xNN.
std::string dot_escape(std::string_view s) {
  std::string r;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = utf8_length(s, i);
    if (c == '"' || c == '\\') {
      r += '\\';
      r += char(c);
    } else if (n == 0 || c < 0x20 || c == 0x7f) {
      static const char* hex = "0123456789abcdef";
      r += "\\\\x";
      r += hex[c >> 4];
      r += hex[c & 0xf];
      i += n == 0 ? 1 : n;
      continue;
    } else {
      r.append(s.substr(i, n));
    }
    i += n;
  }
  return r;
}

std::string value_label(const Plan& p, int v) {
  const PValue& val = p.values[size_t(v)];
  const PStorage& s = p.storages[size_t(val.storage)];
  std::ostringstream l;
  l << dtype_name(val.type.dtype) << shape_str(val.type.shape);
  if (s.kind == StorageKind::arena) l << " @" << s.offset + size_t(val.layout.offset) * dtype_size(val.type.dtype);
  else
    l << (s.kind == StorageKind::variable ? " var"
          : s.kind == StorageKind::feed   ? " feed"
          : s.kind == StorageKind::streamed ? " streamed"
                                          : " const");
  return l.str();
}

}  // namespace

std::string Plan::dot() const {
  std::ostringstream os;
  os << "digraph plan {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n";
  for (size_t i = 0; i < nodes.size(); ++i) {
    const PNode& n = nodes[i];
    if (!n.alive) continue;
    const char* style = n.kind == NodeKind::view ? ", style=dashed" : n.kind == NodeKind::source ? ", style=rounded" : "";
    os << "  n" << i << " [label=\"" << dot_escape(n.name) << "\\n" << dot_escape(n.op ? n.op->name : "barrier");
    for (const PEpilogueStep& e : n.epilogue) os << "+" << dot_escape(e.op->name);
    if (n.pos >= 0) os << " #" << n.pos;
    os << " (" << dot_escape(device.str()) << ")";
    for (int v : n.out) os << "\\n" << value_label(*this, v);
    os << "\"" << style << "];\n";
    for (int v : n.in)  // (a value read for its shape only may come from a node fusion absorbed)
      if (nodes[size_t(values[size_t(v)].producer)].alive) os << "  n" << values[size_t(v)].producer << " -> n" << i << ";\n";
    for (int a : n.after) os << "  n" << a << " -> n" << i << " [style=dotted];\n";
  }
  os << "}\n";
  return os.str();
}

}  // namespace loom
