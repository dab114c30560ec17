#pragma once
// The Python that runs the benchmark peers (PyTorch, JAX): $LOOM_PYTHON, set
// by `./build.sh bench-*` to the venv it installs them in; else the venv's
// default place; else python3 from PATH.

#include <cstdlib>
#include <filesystem>
#include <string>

namespace loom::samples {

inline std::string peer_python() {
  if (const char* p = std::getenv("LOOM_PYTHON"); p && *p) return p;
  const std::string venv = std::string(LOOM_SAMPLES_DIR) + "/../build/venv/bin/python";
  if (std::filesystem::exists(venv)) return venv;
  return "python3";
}

}  // namespace loom::samples
