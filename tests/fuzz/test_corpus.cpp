// Every input of the seed corpus (tests/fuzz/corpus/<target>/) through its fuzz
// target: the corpus is a regression suite, run by every build (and under
// ASan/UBSan by `./build.sh test-asan`), with or without libFuzzer.

#include <filesystem>
#include <fstream>

#include "tests/fuzz/targets.hpp"
#include "tests/util.hpp"

using namespace loom;

TEST_SUITE("fuzz/corpus") {
  TEST_CASE("every seed input of every fuzz target runs to completion") {
    for (const fuzz::Target& t : fuzz::kTargets) {
      const std::filesystem::path dir = std::filesystem::path(LOOM_SOURCE_DIR) / "tests/fuzz/corpus" / t.name;
      int inputs = 0;
      for (const auto& e : std::filesystem::directory_iterator(dir)) {
        std::ifstream f(e.path(), std::ios::binary);
        const std::string bytes(std::istreambuf_iterator<char>(f), {});
        CAPTURE(e.path().string());
        t.fn(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());  // aborts on a bug
        ++inputs;
      }
      CAPTURE(t.name);
      CHECK(inputs >= 5);
    }
  }
}
