// loom_ops: lists every registered op (devices with a kernel, dtypes,
// differentiable or not); with --check runs each op's forward reference check
// and numeric gradient check live and prints the largest error per op.

#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>
#include <map>
#include <set>

#include "core/kernel.hpp"
#include "ops/check.hpp"

namespace po = boost::program_options;
using namespace loom;

int main(int argc, char** argv) {
  po::options_description desc("loom_ops: the op registry");
  desc.add_options()("help,h", "show this help")("check", "run forward and gradient checks for every op")(
      "op", po::value<std::string>(), "only this op");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "loom_ops: " << e.what() << "\n" << desc;
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc;
    return 0;
  }
  const bool check = vm.count("check");
  const std::string only = vm.count("op") ? vm["op"].as<std::string>() : "";

  std::map<std::string, std::map<DeviceKind, std::vector<DType>>> kernels;
  for (const KernelEntry& k : registered_kernels()) kernels[k.op][k.device] = k.dtypes;
  auto dtypes_str = [](const std::vector<DType>& ts) {
    std::string s;
    for (DType t : ts) {
      if (!s.empty()) s += ',';
      s += dtype_name(t);
    }
    return s;
  };

  std::printf("%-16s %-10s %-6s %-44s %s\n", "op", "devices", "grad", "dtypes (cpu)", check ? "check" : "");
  int failed = 0, count = 0;
  for (const OpDef* op : registered_ops()) {
    if (!only.empty() && op->name != only) continue;
    ++count;
    const auto& ks = kernels[op->name];
    std::string devices = op->no_kernel ? "session" : op->view ? "view" : "";
    for (const auto& [d, ts] : ks) {
      if (!devices.empty()) devices += ',';
      devices += d == DeviceKind::cpu ? "cpu" : "cuda";
    }
    if (op->view && ks.empty()) devices = "view(any)";
    std::string dts = ks.count(DeviceKind::cpu) ? dtypes_str(ks.at(DeviceKind::cpu)) : op->view ? "any" : "-";
    std::string result;
    if (check && op->examples) {
      double fwd = 0, grad = 0;
      bool ok = true, grad_run = false;
      std::string why;
      for (const OpExample& ex : op->examples(17)) {
        for (DType t : {float32, float64}) {
          CheckResult r = check_forward(*op, ex, t);
          fwd = std::max(fwd, r.max_error);
          if (!r.ok) ok = false, why = ex.label + ": " + r.detail;
        }
        if (op->grad && ex.check_grad) {
          CheckResult r = check_gradient(*op, ex);
          grad_run = true;
          grad = std::max(grad, r.max_error);
          if (!r.ok) ok = false, why = ex.label + ": " + r.detail;
        }
      }
      char buf[160];
      if (grad_run) std::snprintf(buf, sizeof buf, "fwd %.1e  grad %.1e", fwd, grad);
      else std::snprintf(buf, sizeof buf, "fwd %.1e", fwd);
      result = std::string(ok ? "ok   " : "FAIL ") + buf + (ok ? "" : "  (" + why + ")");
      failed += !ok;
    } else if (check) {
      result = "(tested by the session suite)";
    }
    std::printf("%-16s %-10s %-6s %-44s %s\n", op->name.c_str(), devices.c_str(), op->grad ? "yes" : "no",
                dts.c_str(), result.c_str());
  }
  if (!only.empty() && count == 0) {
    std::cerr << "loom_ops: no op named '" << only << "'\n";
    return 2;
  }
  if (check) std::printf("\n%d ops, %d failed\n", count, failed);
  return failed ? 1 : 0;
}
