// remat (rematerialization under a memory budget)
//   reads:       the schedule, storage writers and readers (access), the
//                options memory_budget and remat, OpDef::flops (cost model)
//   establishes: when the arena would exceed memory_budget: copies of forward
//                nodes ("<name>/recompute", same op, attributes, kernel and
//                graph node, so random ops draw the same Philox numbers)
//                inserted into the schedule right before their first late
//                reader; readers after the longest idle stretch of a value
//                read the copy, so the original dies early (an original left
//                without readers is dropped: it moved). Updates of variables
//                a copy reads wait for it (PNode::after). Plan::order, pos,
//                deps and wave_end cover the copies; a serial plan is then
//                reordered for its new lifetimes (reorder_for_memory). The
//                arena is measured by running lifetimes, inplace and
//                placement on a scratch copy of the plan, so the budget is
//                met exactly as the plan reports it. A plan that does not fit is searched again with
//                its copies as ordinary nodes (levels). Throws loom::Error
//                when no plan fits, with the smallest arena reached.
//
// Strategies: Chen et al. 2016 (segments of the activations the backward
// reads, one checkpoint kept per segment, the rest recomputed segment by
// segment; sqrt(n) segments, or the count that fits the budget cheapest) and
// a greedy over the static schedule (at the current peak, recompute the value
// idle across it with the least FLOPs per byte; then drop what is no longer
// needed, costliest first). `automatic` keeps the cheaper plan that fits; its
// first level also refines Chen's checkpoints (one activation kept or
// recomputed at a time, each change measured) and searches the levels from
// each of its first plans, keeping the best at the end; it searches once
// more from the candidates without the costliest activations per byte
// (cheaper_rate), whose recomputation Chen's segments otherwise take along,
// and, for serial plans, both pools again with each candidate reordered both
// ways (reorder_for_memory).

#include <algorithm>
#include <cmath>
#include <map>

#include "core/parallel.hpp"
#include "core/passes/passes.hpp"

namespace loom {

namespace {

double elements(const TensorType& t) { return double(numel(t.shape)); }

/// The cost model: OpDef::flops, else one operation per element read or written.
double node_flops(const Plan& p, const PNode& n) {
  if (!executable(n) || n.kind != NodeKind::kernel) return 0;
  std::vector<TensorType> in, out;
  for (int v : n.in) in.push_back(p.values[size_t(v)].type);
  for (int v : n.out) out.push_back(p.values[size_t(v)].type);
  double f = 0;
  if (n.op && n.op->flops)
    f = n.op->flops(in, out, *n.attrs);
  else
    for (const auto* list : {&in, &out})
      for (const TensorType& t : *list) f += elements(t);
  for (const PEpilogueStep& s : n.epilogue) f += double(s.in.size() + s.out.size()) * elements(out[0]);
  return f;
}

/// The storage written by node n that value v lives in, if v is an arena value of n's (through views).
int root_node(const Plan& p, int v) {
  const PStorage& s = p.storages[size_t(p.values[size_t(v)].storage)];
  return s.kind == StorageKind::arena && s.writers.size() == 1 ? s.writers[0] : -1;
}

/// What the scheduled plan says about each node (positions of the base schedule).
struct Base {
  const Compilation& c;
  const Plan& p;
  std::vector<std::vector<int>> readers;  // per node: positions of the steps reading its outputs, sorted
  std::vector<double> flops;
  std::vector<size_t> bytes;   // arena bytes of the node's outputs
  std::vector<int> var_write;  // per node: the first later position writing a variable it reads
  std::vector<int> cands;      // recomputable nodes by position
  // The plan each candidate is rewritten in: assigned over the last one's, so
  // that its nodes' and storages' vectors keep their allocations (copying the
  // plan afresh was a fifth of a budgeted compile, most of it malloc and free).
  mutable Plan scratch;
  double max_rate;  // candidates cost at most this many FLOPs per byte of output
  bool both_ways;   // serial plans: reorder_for_memory tries the nodes in both directions

  explicit Base(const Compilation& comp, double max_flops_per_byte = INFINITY, bool reorder_both_ways = false);
  bool recomputable(int id) const;
  /// Where readers switch to the copy when the node must not be live at `peak`:
  /// steps and copies from there on read the copy.
  int split_at(int id, int peak) const;
};

Base::Base(const Compilation& comp, double max_flops_per_byte, bool reorder_both_ways)
    : c(comp),
      p(comp.plan),
      readers(p.nodes.size()),
      flops(p.nodes.size(), 0),
      bytes(p.nodes.size(), 0),
      var_write(p.nodes.size(), INT_MAX),
      max_rate(max_flops_per_byte),
      both_ways(reorder_both_ways) {
  for (size_t i = 0; i < p.nodes.size(); ++i) {
    const PNode& n = p.nodes[i];
    flops[i] = node_flops(p, n);
    for (int v : n.out) {
      const PStorage& s = p.storages[size_t(p.values[size_t(v)].storage)];
      if (s.kind == StorageKind::arena) bytes[i] += s.bytes;
      for (int r : s.readers) readers[i].push_back(p.nodes[size_t(r)].pos);
    }
    std::sort(readers[i].begin(), readers[i].end());
    readers[i].erase(std::unique(readers[i].begin(), readers[i].end()), readers[i].end());
    // Variables it reads must keep their value until the copy runs.
    for (int v : n.in) {
      const PStorage& s = p.storages[size_t(p.values[size_t(v)].storage)];
      if (s.kind != StorageKind::variable || n.pos < 0) continue;
      for (int w : s.writers)
        if (p.nodes[size_t(w)].pos > n.pos) var_write[i] = std::min(var_write[i], p.nodes[size_t(w)].pos);
    }
  }
  for (int id : p.order)
    if (recomputable(id)) cands.push_back(id);
}

bool Base::recomputable(int id) const {
  const PNode& n = p.nodes[size_t(id)];
  if (!executable(n) || n.kind != NodeKind::kernel || !n.op || n.writes_var || n.post_commit ||
      n.op->writes_input >= 0 || readers[size_t(id)].empty() || n.out.empty() ||
      flops[size_t(id)] > max_rate * double(bytes[size_t(id)]))
    return false;
  for (int v : n.out) {
    const PStorage& s = p.storages[size_t(p.values[size_t(v)].storage)];
    if (s.kind != StorageKind::arena || s.pinned || s.writers.size() != 1) return false;
  }
  return true;
}

int Base::split_at(int id, int peak) const { return std::max(peak, p.nodes[size_t(id)].pos + 1); }

/// The scheduled plan with a set of nodes recomputed.
struct Rewrite {
  const Base& b;
  const Compilation& c;
  Plan& p;  // base.scratch, a copy of base.p to rewrite
  std::vector<char> in_set;
  std::vector<int> split;                 // per node in the set: readers at or after it read the copy
  std::vector<int> at;                    // per node: position its copy goes before (-1: no copy)
  std::vector<int> copy_of;               // per node: its copy's id (-1: none)
  std::vector<std::vector<int>> out_map;  // per node with a copy: its outputs' copies
  std::map<int, int> view_copy;           // view node -> its copy

  Rewrite(const Base& base, const std::vector<std::pair<int, int>>& set);
  void place_copies(const std::vector<int>& nodes);
  int resolve(int v, int pos);
  void copy_node(int id);
  void drop_unread();
  void order_before_updates();
  void finish();
  int recomputed = 0;
};

Rewrite::Rewrite(const Base& base, const std::vector<std::pair<int, int>>& set)
    : b(base),
      c(base.c),
      p(base.scratch = base.p),
      in_set(p.nodes.size(), 0),
      split(p.nodes.size(), INT_MAX),
      at(p.nodes.size(), -1),
      copy_of(p.nodes.size(), -1),
      out_map(p.nodes.size()) {
  std::vector<int> nodes;
  for (auto [id, t] : set) in_set[size_t(id)] = 1, split[size_t(id)] = t, nodes.push_back(id);
  place_copies(nodes);
  std::vector<int> by_pos;
  for (int id : nodes)
    if (at[size_t(id)] >= 0) by_pos.push_back(id);
  std::sort(by_pos.begin(), by_pos.end(),
            [&](int a, int c) { return b.p.nodes[size_t(a)].pos < b.p.nodes[size_t(c)].pos; });
  for (int id : by_pos) copy_node(id);
  // Late readers read the copies.
  for (int id : b.p.order)
    for (size_t k = 0; k < p.nodes[size_t(id)].in.size(); ++k) {
      if (is_shape_only(p.nodes[size_t(id)], k)) continue;
      const int old = p.nodes[size_t(id)].in[k], v = resolve(old, p.nodes[size_t(id)].pos);
      p.nodes[size_t(id)].in[k] = v;
      for (PEpilogueStep& e : p.nodes[size_t(id)].epilogue) std::replace(e.in.begin(), e.in.end(), old, v);
    }
  finish();
}

/// Where each copy runs: before its earliest consumer at or after the node's split
/// (a late reader, or the copy of a later node that reads it). Copies whose
/// variables would change before they run are left out.
void Rewrite::place_copies(const std::vector<int>& nodes) {
  std::vector<int> desc(nodes);
  std::sort(desc.begin(), desc.end(),
            [&](int a, int c) { return b.p.nodes[size_t(a)].pos > b.p.nodes[size_t(c)].pos; });
  for (bool changed = true; changed;) {
    changed = false;
    std::fill(at.begin(), at.end(), -1);
    for (int id : desc) {
      if (!in_set[size_t(id)]) continue;
      const int t = split[size_t(id)];
      int q = INT_MAX;
      for (int r : b.readers[size_t(id)])
        if (r >= t) q = std::min(q, r);
      for (int m : desc) {  // later copies reading it
        if (at[size_t(m)] < t || m == id) continue;
        for (int v : b.p.nodes[size_t(m)].in)
          if (root_node(b.p, v) == id) q = std::min(q, at[size_t(m)]);
      }
      if (q != INT_MAX && q > b.var_write[size_t(id)]) {
        in_set[size_t(id)] = 0;
        changed = true;
        break;
      }
      at[size_t(id)] = q == INT_MAX ? -1 : q;
    }
  }
}

/// The value a step at base position `pos` reads in place of v.
int Rewrite::resolve(int v, int pos) {
  const int prod = p.values[size_t(v)].producer;
  if (p.nodes[size_t(prod)].kind == NodeKind::view && !p.nodes[size_t(prod)].in.empty()) {
    const int in0 = p.nodes[size_t(prod)].in[0];
    const int src = resolve(in0, pos);
    if (src == in0) return v;
    auto it = view_copy.find(prod);
    if (it == view_copy.end()) {  // the view of the copy: no step, no memory
      PNode n = p.nodes[size_t(prod)];
      n.in[0] = src;
      n.name += "/recompute";
      const int id = int(p.nodes.size());
      for (int& o : n.out) {
        const PValue old = p.values[size_t(o)];
        o = p.add_value(old.type, id);
        p.values[size_t(o)].storage = p.values[size_t(src)].storage;
        p.values[size_t(o)].layout = old.layout;
      }
      it = view_copy.emplace(prod, p.add_node(std::move(n))).first;
    }
    const auto& outs = p.nodes[size_t(prod)].out;
    return p.nodes[size_t(it->second)].out[size_t(std::find(outs.begin(), outs.end(), v) - outs.begin())];
  }
  if (prod >= int(copy_of.size()) || copy_of[size_t(prod)] < 0 || pos < split[size_t(prod)]) return v;
  const auto& outs = p.nodes[size_t(prod)].out;
  return out_map[size_t(prod)][size_t(std::find(outs.begin(), outs.end(), v) - outs.begin())];
}

/// Adds the copy of node id, reading copies of its inputs where they exist by then.
void Rewrite::copy_node(int id) {
  PNode n = p.nodes[size_t(id)];
  for (size_t k = 0; k < n.in.size(); ++k)
    if (!is_shape_only(n, k)) n.in[k] = resolve(n.in[k], at[size_t(id)]);
  const int cid = int(p.nodes.size());
  n.name += "/recompute";
  n.after.clear();
  n.pos = -1;
  for (int& o : n.out) {
    const PValue old = p.values[size_t(o)];
    o = p.add_value(old.type, cid);
    p.values[size_t(o)].storage = p.add_storage(StorageKind::arena, p.storages[size_t(old.storage)].bytes);
    p.values[size_t(o)].layout = old.layout;
  }
  const PNode& orig = p.nodes[size_t(id)];
  auto map_value = [&](int v) {  // an epilogue's operands are the node's inputs and outputs
    auto o = std::find(orig.out.begin(), orig.out.end(), v);
    if (o != orig.out.end()) return n.out[size_t(o - orig.out.begin())];
    auto i = std::find(orig.in.begin(), orig.in.end(), v);
    return i != orig.in.end() ? n.in[size_t(i - orig.in.begin())] : v;
  };
  for (PEpilogueStep& s : n.epilogue) {
    for (int& v : s.in) v = map_value(v);
    for (int& v : s.out) v = map_value(v);
  }
  if (n.workspace >= 0) n.workspace = p.add_storage(StorageKind::arena, p.storages[size_t(n.workspace)].bytes);
  out_map[size_t(id)] = n.out;
  copy_of[size_t(id)] = cid;
  p.add_node(std::move(n));
}

/// Originals and views nobody reads any more are dropped (a node read only late
/// moved rather than ran twice); the copies join the order before the step they feed.
void Rewrite::drop_unread() {
  std::vector<int> refs(p.nodes.size(), 0);
  std::vector<int> pinned_node(p.nodes.size(), 0);
  for (int v : p.fetch_values) pinned_node[size_t(p.values[size_t(v)].producer)] = 1;
  for (int t : c.targets) pinned_node[size_t(t)] = 1;
  for (const PNode& n : p.nodes) {
    if (!n.alive) continue;
    for (int v : n.in) ++refs[size_t(p.values[size_t(v)].producer)];
    if (n.kind != NodeKind::noop)
      for (int a : n.after) ++refs[size_t(a)];
  }
  std::vector<int> work;
  auto droppable = [&](int id) {
    const PNode& n = p.nodes[size_t(id)];
    return n.alive && !refs[size_t(id)] && !pinned_node[size_t(id)] &&
           (n.kind == NodeKind::view || (id < int(copy_of.size()) && copy_of[size_t(id)] >= 0));
  };
  for (size_t id = 0; id < copy_of.size(); ++id)
    if (droppable(int(id))) work.push_back(int(id));
  for (auto [view, copy] : view_copy)
    if (droppable(view)) work.push_back(view);
  while (!work.empty()) {
    const int id = work.back();
    work.pop_back();
    if (!droppable(id)) continue;
    p.nodes[size_t(id)].alive = false;
    for (int v : p.nodes[size_t(id)].in) {
      const int prod = p.values[size_t(v)].producer;
      if (--refs[size_t(prod)] == 0) work.push_back(prod);
    }
  }
  for (PNode& n : p.nodes)
    if (n.kind == NodeKind::noop) std::erase_if(n.after, [&](int a) { return !p.nodes[size_t(a)].alive; });
}

/// Updates of the variables a copy reads wait for it (control edges), so any
/// order of the rewritten plan lets the copy see the values the original saw.
void Rewrite::order_before_updates() {
  for (size_t id = 0; id < copy_of.size(); ++id) {
    const int cid = copy_of[id];
    if (cid < 0 || !p.nodes[size_t(cid)].alive) continue;
    for (int v : p.nodes[size_t(cid)].in) {
      const PStorage& s = p.storages[size_t(p.values[size_t(v)].storage)];
      if (s.kind != StorageKind::variable) continue;
      for (int w : s.writers)
        if (b.p.nodes[size_t(w)].pos > b.p.nodes[id].pos) p.nodes[size_t(w)].after.push_back(cid);
    }
  }
}

void Rewrite::finish() {
  drop_unread();
  order_before_updates();
  std::vector<std::pair<std::pair<int, int>, int>> inserted;  // ((before position, base position), copy)
  for (size_t id = 0; id < copy_of.size(); ++id)
    if (copy_of[id] >= 0) inserted.push_back({{at[id], b.p.nodes[id].pos}, copy_of[id]});
  std::sort(inserted.begin(), inserted.end());
  std::vector<int> order, wave;  // wave: the base position whose wave each step joins
  size_t k = 0;
  for (size_t pos = 0; pos < b.p.order.size(); ++pos) {
    for (; k < inserted.size() && inserted[k].first.first == int(pos); ++k)
      order.push_back(inserted[k].second), wave.push_back(int(pos));
    if (p.nodes[size_t(b.p.order[pos])].alive) order.push_back(b.p.order[pos]), wave.push_back(int(pos));
  }
  recomputed = int(inserted.size());
  Compilation sc(c.req, p);
  access(sc);
  set_order(p, std::move(order));
  if (b.p.wave_end.empty()) return reorder_for_memory(p, b.both_ways);  // serial: an order for the new lifetimes
  // A step joins the wave of the base step it comes before; waves stay contiguous.
  p.wave_end.assign(p.order.size(), 0);
  for (size_t i = p.order.size(); i-- > 0;) {
    const bool same = i + 1 < p.order.size() && b.p.wave_end[size_t(wave[i])] == b.p.wave_end[size_t(wave[i + 1])];
    p.wave_end[i] = same ? p.wave_end[i + 1] : int(i);
  }
}

using Set = std::vector<std::pair<int, int>>;  // (node, split)

/// A set recomputed, measured: the arena as placement reports it, the FLOPs
/// added, and where the live bytes peak (in the new and the base schedule).
struct Trial {
  Set set;
  size_t arena = SIZE_MAX;
  double flops = 0;
  int recomputed = 0;
  int peak_base = 0;
  std::vector<char> live_at_peak;  // per base node: an output live across the peak, not accessed there
};

bool inplace_enabled(const SessionOptions& o) {
  for (const Pass& pass : plan_passes())
    if (pass.name == "inplace") return pass_enabled(pass, o);
  return false;
}

/// Position of the most bytes live (first such) over the arena storages' lifetimes.
int peak_position(const Plan& p) {
  std::vector<int64_t> delta(p.order.size() + 2, 0);
  for (const PStorage& s : p.storages) {
    if (s.kind != StorageKind::arena || s.merged || s.writers.empty()) continue;
    delta[size_t(s.first)] += int64_t(s.bytes);
    delta[size_t(std::min<int>(s.last, int(p.order.size()))) + 1] -= int64_t(s.bytes);
  }
  int64_t cur = 0, best = -1;
  int at = 0;
  for (size_t i = 0; i < p.order.size(); ++i)
    if ((cur += delta[i]) > best) best = cur, at = int(i);
  return at;
}

/// The arena of plan p (scheduled) as placement reports it; p gets lifetimes and merges.
size_t arena_of(const Compilation& c, Plan& p) {
  Compilation sc(c.req, p);
  lifetimes(sc);
  if (inplace_enabled(c.opt)) inplace(sc);
  placement(sc);
  return p.stats.arena_bytes;
}

/// The plan rewritten with `set` recomputed (and, when serial, reordered), measured.
Trial evaluate(const Base& b, Set set) {
  Trial t;
  Rewrite rw(b, set);
  std::erase_if(set, [&](const auto& e) { return !rw.in_set[size_t(e.first)]; });
  t.set = std::move(set);
  for (size_t id = 0; id < rw.copy_of.size(); ++id) {
    if (rw.copy_of[id] < 0) continue;
    t.flops += b.flops[id] - (rw.p.nodes[id].alive ? 0 : b.flops[id]);
  }
  t.recomputed = rw.recomputed;
  t.arena = arena_of(b.c, rw.p);
  const int peak = peak_position(rw.p);
  t.peak_base = int(b.p.order.size());
  for (size_t i = size_t(peak); i < rw.p.order.size(); ++i)
    if (rw.p.order[i] < int(b.p.nodes.size())) {
      t.peak_base = b.p.nodes[size_t(rw.p.order[i])].pos;
      break;
    }
  t.live_at_peak.assign(b.p.nodes.size(), 0);
  for (int id : b.cands) {
    if (!rw.p.nodes[size_t(id)].alive) continue;
    for (int v : rw.p.nodes[size_t(id)].out) {
      const PStorage& s = rw.p.storages[size_t(rw.p.values[size_t(v)].storage)];
      if (s.first < peak && s.last > peak) t.live_at_peak[size_t(id)] = 1;
    }
  }
  return t;
}

bool fits(const Trial& t, size_t budget) { return t.arena <= budget; }
bool better(const Trial& a, const Trial& b, size_t budget) {  // fits cheaper, else smaller
  if (fits(a, budget) != fits(b, budget)) return fits(a, budget);
  return fits(a, budget) ? a.flops < b.flops || (a.flops == b.flops && a.arena < b.arena) : a.arena < b.arena;
}

/// Drops nodes from a fitting set, costliest first, while it still fits.
Trial prune(const Base& b, Trial t, size_t budget, size_t max_evals) {
  if (!fits(t, budget)) return t;
  Set order = t.set;
  std::sort(order.begin(), order.end(),
            [&](const auto& x, const auto& y) { return b.flops[size_t(x.first)] > b.flops[size_t(y.first)]; });
  size_t tries = 0;
  for (const auto& e : order) {
    if (++tries > std::min<size_t>(64, max_evals)) break;
    Set fewer = t.set;
    std::erase(fewer, e);
    Trial u = evaluate(b, fewer);
    if (fits(u, budget) && u.flops <= t.flops) t = std::move(u);
  }
  return t;
}

/// How many candidate sets a search may measure: each measurement re-plans a
/// copy of the plan (linear in its size), so that a budgeted compile stays
/// near-linear.
size_t eval_limit(const Base& b) { return std::max<size_t>(60, 400000 / std::max<size_t>(b.p.nodes.size(), 1)); }

/// At the peak, of the few candidates live across it with the fewest FLOPs per
/// byte, recompute the one that lowers the arena most per FLOP (the first, when
/// none lowers it yet); repeat until the plan fits, then prune.
Trial greedy(const Base& b, const Trial& base, size_t budget) {
  const size_t max_evals = eval_limit(b);
  Trial t = base, best = base;
  std::vector<char> chosen(b.p.nodes.size(), 0);
  std::vector<std::pair<double, int>> eligible;
  for (size_t evals = 0; evals < max_evals && !fits(t, budget);) {
    eligible.clear();
    for (int id : b.cands)
      if (!chosen[size_t(id)] && t.live_at_peak[size_t(id)] && b.p.nodes[size_t(id)].pos < t.peak_base &&
          b.bytes[size_t(id)])
        eligible.push_back({b.flops[size_t(id)] / double(b.bytes[size_t(id)]), id});
    if (eligible.empty()) break;
    std::sort(eligible.begin(), eligible.end());
    eligible.resize(std::min<size_t>(eligible.size(), 6));
    Trial next;
    double rate = 0;
    for (auto [score, id] : eligible) {
      Set set = t.set;
      set.push_back({id, b.split_at(id, t.peak_base)});
      Trial u = evaluate(b, std::move(set));
      ++evals;
      const double gain = u.arena < t.arena ? double(t.arena - u.arena) / (u.flops - t.flops + 1) : 0;
      if (next.set.empty() || gain > rate) next = std::move(u), rate = gain;
    }
    for (const auto& [id, split] : next.set) chosen[size_t(id)] = 1;
    t = std::move(next);
    if (better(t, best, budget)) best = t;
  }
  return prune(b, std::move(best), budget, max_evals / 4);
}

/// The activations live across the peak of `base` (before it), by position.
std::vector<int> peak_activations(const Base& b, const Trial& base) {
  std::vector<int> acts;
  for (int id : b.cands)
    if (base.live_at_peak[size_t(id)] && b.p.nodes[size_t(id)].pos < base.peak_base) acts.push_back(id);
  return acts;
}

/// Chen et al.: of the activations live across the peak, those not `kept` are
/// recomputed, with everything since the first of them, from the kept ones.
Trial chen_kept(const Base& b, const Trial& base, const std::vector<int>& acts, const std::vector<char>& kept) {
  if (acts.empty()) return base;
  Set set;
  for (int id : b.cands)
    if (!kept[size_t(id)] && b.p.nodes[size_t(id)].pos < base.peak_base &&
        b.p.nodes[size_t(id)].pos >= b.p.nodes[size_t(acts.front())].pos)
      set.push_back({id, b.split_at(id, base.peak_base)});
  return evaluate(b, std::move(set));
}

/// Chen's k segments: each keeps its last activation.
std::vector<char> segments(const Base& b, const std::vector<int>& acts, int k) {
  std::vector<char> kept(b.p.nodes.size(), 0);
  if (acts.empty() || k <= 0) return kept;
  const size_t per = (acts.size() + size_t(k) - 1) / size_t(k);
  for (size_t i = per - 1; i < acts.size(); i += per) kept[size_t(acts[i])] = 1;
  kept[size_t(acts.back())] = 1;
  return kept;
}

int sqrt_segments(const std::vector<int>& acts) {
  return std::max(1, int(std::lround(std::sqrt(double(acts.size())))));
}

/// Chen's sqrt(n) rule.
Trial chen_sqrt(const Base& b, const Trial& base) {
  const std::vector<int> acts = peak_activations(b, base);
  return chen_kept(b, base, acts, segments(b, acts, sqrt_segments(acts)));
}

/// Chen's rule for a budget: of the segment counts, the plan that fits
/// cheapest (else the smallest); `kept` gets its checkpoints.
Trial chen_sweep(const Base& b, const Trial& base, const std::vector<int>& acts, size_t budget,
                 std::vector<char>& kept) {
  kept = segments(b, acts, sqrt_segments(acts));
  Trial best = chen_kept(b, base, acts, kept);
  for (int k = 1; k <= int(acts.size()); k = std::max(k + 1, k * 5 / 4)) {
    std::vector<char> ks = segments(b, acts, k);
    Trial t = chen_kept(b, base, acts, ks);
    if (better(t, best, budget)) best = std::move(t), kept = std::move(ks);
  }
  return best;
}

/// Chen's plan `best` with its checkpoints moved one at a time (an activation
/// kept or not) while that fits cheaper, or comes closer to fitting: uneven
/// segments, measured rather than guessed from the bytes.
Trial chen_refine(const Base& b, const Trial& base, const std::vector<int>& acts, std::vector<char> kept, Trial best,
                  size_t budget) {
  const size_t max_evals = eval_limit(b) / 2;
  size_t evals = 0;
  for (bool improved = true; improved && evals < max_evals;) {
    improved = false;
    for (int id : acts) {
      if (evals++ >= max_evals) break;
      kept[size_t(id)] ^= 1;
      Trial t = chen_kept(b, base, acts, kept);
      if (!better(t, best, budget)) {
        kept[size_t(id)] ^= 1;  // moved back
        continue;
      }
      best = std::move(t);
      improved = true;
    }
  }
  return best;
}

RematPlan to_plan(Trial t, std::string strategy) {
  RematPlan r;
  for (auto [id, split] : t.set) r.nodes.push_back(id);
  r.arena = t.arena;
  r.flops = t.flops;
  r.strategy = t.set.empty() ? "" : std::move(strategy);
  return r;
}

using Found = std::pair<Trial, std::string>;  // a plan and its strategy's name

/// What `strategy` finds for `budget` from `base` (nothing recomputed): for
/// auto, Chen's plan and the greedy's, each pruned, and with `refine` Chen's
/// refined (where that changed it). Chen's comes first: it wins ties.
std::vector<Found> candidates(const Base& b, const Trial& base, size_t budget, Remat strategy, bool refine) {
  if (fits(base, budget)) return {{base, ""}};
  if (strategy == Remat::chen) return {{chen_sqrt(b, base), "chen"}};
  if (strategy == Remat::greedy) return {{greedy(b, base, budget), "greedy"}};
  const size_t prune_evals = eval_limit(b) / 4;
  const std::vector<int> acts = peak_activations(b, base);
  std::vector<char> kept;
  Trial c = chen_sweep(b, base, acts, budget, kept);
  Trial r = refine ? chen_refine(b, base, acts, kept, c, budget) : Trial{};
  const bool refined = refine && r.set != c.set;
  std::vector<Found> found{{prune(b, std::move(c), budget, prune_evals), "chen"}, {greedy(b, base, budget), "greedy"}};
  if (refined) found.push_back({prune(b, std::move(r), budget, prune_evals), "chen"});
  return found;
}

/// The best of the candidates (Chen's not refined).
Found search(const Base& b, const Trial& base, size_t budget, Remat strategy) {
  std::vector<Found> found = candidates(b, base, budget, strategy, false);
  size_t best = 0;
  for (size_t i = 1; i < found.size(); ++i)
    if (better(found[i].first, found[best].first, budget)) best = i;
  return std::move(found[best]);
}

/// The FLOPs per byte of auto's second pool of candidates: half the costliest
/// activation's (live across the peak of `base`). Chen's segments recompute
/// everything after their checkpoint, a costly layer included (mlpresnet's
/// first Linear, 196 FLOPs per byte of output, the others 25 at most); the
/// searches from the pool without it keep that layer's output instead.
double cheaper_rate(const Base& b, const Trial& base) {
  double top = 0;
  for (int id : peak_activations(b, base)) top = std::max(top, b.flops[size_t(id)] / double(b.bytes[size_t(id)]));
  return top / 2;
}

/// The plan rewritten with `t`'s copies, searched again while it does not fit:
/// there the copies are ordinary nodes, so one still live across the new peak
/// can be recomputed in turn (a value computed a third time), as long as each
/// level lowers the arena. Returns the last level's trial, with the FLOPs and
/// copies of all levels.
Trial deepen(const Compilation& c, const Base& b, Trial t, size_t budget, Plan& out) {
  constexpr int kLevels = 8;
  out = Rewrite(b, t.set).p;
  for (int level = 2; level <= kLevels && !fits(t, budget); ++level) {
    Compilation deeper(c.req, out);
    deeper.targets = c.targets;  // node ids stay: rewrites only append nodes and drop unread ones
    const Base next(deeper, b.max_rate, b.both_ways);
    Trial u = search(next, evaluate(next, {}), budget, c.opt.remat).first;
    if (u.arena >= t.arena) break;
    u.flops += t.flops, u.recomputed += t.recomputed;
    out = Rewrite(next, u.set).p;
    t = std::move(u);
  }
  return t;
}

/// Bytes node n needs at once in any plan: the arena storages it reads and
/// writes and its workspace, less (with in-place reuse) an output the inplace
/// pass could put over an input of its size (output 0 of an in-place op; an
/// in-place epilogue step's output over another of the node's outputs).
size_t working_set(const Plan& p, const PNode& n, bool in_place) {
  std::vector<int> seen;
  size_t bytes = 0;
  auto add = [&](int s) {
    if (s < 0 || p.storages[size_t(s)].kind != StorageKind::arena || std::ranges::find(seen, s) != seen.end()) return;
    seen.push_back(s);
    bytes += p.storages[size_t(s)].bytes;
  };
  for (size_t k = 0; k < n.in.size(); ++k)
    if (!is_shape_only(n, k)) add(p.values[size_t(n.in[k])].storage);
  const size_t in_storages = seen.size();
  for (int v : n.out) add(p.values[size_t(v)].storage);
  const size_t out_storages = seen.size();
  add(n.workspace);
  auto storage_bytes = [&](int v) { return p.storages[size_t(p.values[size_t(v)].storage)].bytes; };
  auto credit = [&](int out, auto first, auto last) {  // out may take over one of [first, last) of its size
    const int so = p.values[size_t(out)].storage;
    if (std::ranges::find(seen, so) - seen.begin() < int64_t(in_storages)) return;  // already counted as an input
    if (std::any_of(first, last, [&](int s) { return s != so && p.storages[size_t(s)].bytes == storage_bytes(out); }))
      bytes -= storage_bytes(out);
  };
  if (!in_place) return bytes;
  if (n.op && n.op->inplace && !n.out.empty()) credit(n.out[0], seen.begin(), seen.begin() + int64_t(in_storages));
  for (const PEpilogueStep& s : n.epilogue)
    if (s.op->inplace && s.out.size() == 1)
      credit(s.out[0], seen.begin() + int64_t(in_storages), seen.begin() + int64_t(out_storages));
  return bytes;
}

/// The best plan from one pool of candidates: each first plan the strategy
/// finds, searched again (levels); the first of equals wins.
struct Searched {
  Trial t;
  Plan plan;
  std::string strategy;
};

Searched search_pool(const Compilation& c, const Base& pool, size_t budget) {
  Searched best;
  for (auto& [first, strategy] : candidates(pool, evaluate(pool, {}), budget, c.opt.remat, true)) {
    Plan p;
    Trial u = deepen(c, pool, std::move(first), budget, p);
    if (best.t.arena == SIZE_MAX || better(u, best.t, budget))
      best.t = std::move(u), best.plan = std::move(p), best.strategy = strategy;
  }
  return best;
}

}  // namespace

RematFloor remat_floor(const Plan& p, const SessionOptions& o) {
  const bool in_place = inplace_enabled(o) && o.memory != MemoryStrategy::naive;
  RematFloor f;
  size_t pinned = 0;
  for (const PStorage& s : p.storages)
    if (s.kind == StorageKind::arena && s.pinned && !s.merged) pinned += s.bytes;
  f.bytes = pinned;
  f.what = "the fetched values";
  for (int id : p.order) {
    const PNode& n = p.nodes[size_t(id)];
    if (n.kind != NodeKind::kernel) continue;
    if (const size_t b = working_set(p, n, in_place); b > f.bytes) {
      f.bytes = b;
      f.what = "node '" + n.name + "'" + (n.op ? " (" + std::string(n.op->name) + ")" : "");
    }
  }
  return f;
}

std::string_view remat_name(Remat r) {
  switch (r) {
    case Remat::off:
      return "off";
    case Remat::automatic:
      return "auto";
    case Remat::chen:
      return "chen";
    case Remat::greedy:
      return "greedy";
  }
  return "?";
}

std::vector<int> remat_candidates(const Compilation& c) { return Base(c).cands; }

RematPlan remat_evaluate(const Compilation& c, std::vector<int> nodes) {
  Base b(c);
  const Trial base = evaluate(b, {});
  Set set;
  for (int id : nodes) set.push_back({id, b.split_at(id, base.peak_base)});
  return to_plan(evaluate(b, std::move(set)), "given");
}

RematPlan remat_exact(const Compilation& c, size_t budget) {
  Base b(c);
  const Trial base = evaluate(b, {});
  std::vector<int> before;  // only nodes before the peak can leave it
  for (int id : b.cands)
    if (b.p.nodes[size_t(id)].pos < base.peak_base) before.push_back(id);
  LOOM_CHECK(before.size() <= 20, "remat_exact: ", before.size(), " candidates (at most 20)");
  Trial best = base;
  for (uint32_t mask = 1; mask < (1u << before.size()); ++mask) {
    Set set;
    for (size_t i = 0; i < before.size(); ++i)
      if (mask >> i & 1) set.push_back({before[i], b.split_at(before[i], base.peak_base)});
    Trial t = evaluate(b, std::move(set));
    if (better(t, best, budget)) best = std::move(t);
  }
  return to_plan(std::move(best), "exact");
}

RematPlan remat_search(const Compilation& c, size_t budget, Remat strategy) {
  Base b(c);
  auto [t, name] = search(b, evaluate(b, {}), budget, strategy);
  return to_plan(std::move(t), name);
}

void remat(Compilation& c) {
  const size_t budget = c.opt.memory_budget;
  if (!budget) return;
  Base b(c);
  PlanStats& st = c.plan.stats;
  Plan as_is = c.plan;
  const size_t without = st.arena_without_remat = arena_of(c, as_is);
  for (double f : b.flops) st.plan_flops += f;
  const RematFloor floor = remat_floor(c.plan, c.opt);
  st.remat_floor = floor.bytes;
  st.remat_floor_at = floor.what;
  if (without <= budget) return;
  LOOM_CHECK(c.opt.remat != Remat::off, "the plan's arena of ", without, " bytes exceeds memory_budget (", budget,
             " bytes); set remat = Remat::automatic to recompute activations instead of keeping them");
  // The searches start from the plan rewritten with nothing recomputed: a serial one reordered.
  // Each first plan is searched again (levels) and the best at the end kept:
  // the one that fits cheapest at the first level need not lead furthest.
  const Trial base = evaluate(b, {});
  // auto searches again from a pool without the costliest activations
  // (cheaper_rate), and both pools once more with serial plans reordered
  // both ways (the searches are greedy: which order each candidate gets
  // steers them, and neither way leads furthest on every model). Two searches
  // run at once where the session has a second thread; earlier searches' plans
  // win ties, as in a serial run.
  std::vector<Searched> pools(1);
  if (c.opt.remat == Remat::automatic) {
    const double rate = cheaper_rate(b, base);
    pools.resize(b.p.wave_end.empty() ? 4 : 2);
    run_both([&] { pools[1] = search_pool(c, Base(c, rate), budget); }, [&] { pools[0] = search_pool(c, b, budget); });
    if (pools.size() == 4)
      run_both([&] { pools[3] = search_pool(c, Base(c, rate, true), budget); },
               [&] { pools[2] = search_pool(c, Base(c, INFINITY, true), budget); });
  } else {
    pools[0] = search_pool(c, b, budget);
  }
  Searched* found = &pools[0];
  for (Searched& s : pools)
    if (s.t.arena != SIZE_MAX && better(s.t, found->t, budget)) found = &s;
  Searched& best = *found;
  const Trial& t = best.t;
  const std::string& name = best.strategy;
  Plan& plan = best.plan;
  LOOM_CHECK(fits(t, budget), "memory_budget of ", budget, " bytes cannot be met: the smallest arena reached by ",
             remat_name(c.opt.remat), " recomputation is ", std::min({t.arena, base.arena, without}), " bytes (",
             without, " without); no plan can go below ", st.remat_floor, " bytes, what ", st.remat_floor_at,
             " needs at once");
  c.plan = std::move(plan);
  st.remat_strategy = name;
  st.recomputed = t.recomputed;
  st.recompute_flops = t.flops;
}

}  // namespace loom
