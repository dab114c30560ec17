// libFuzzer entry point: built once per target with -DLOOM_FUZZ_TARGET=<function>
// (tests/CMakeLists.txt, LOOM_FUZZ=ON; `./build.sh fuzz` runs them).

#include "tests/fuzz/targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { return LOOM_FUZZ_TARGET(data, size); }
