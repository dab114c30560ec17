// Every C++ snippet of README.md compiles: each ```cpp block must appear, line
// for line (indentation aside), in a program under samples/, which the build
// compiles. A README example that is not in a sample fails here.

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/util.hpp"

namespace fs = std::filesystem;

namespace {

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::vector<std::string> lines_of(const fs::path& p) {
  std::ifstream f(p);
  std::vector<std::string> out;
  for (std::string line; std::getline(f, line);) out.push_back(line);
  return out;
}

struct Snippet {
  int line;  // of the opening fence
  std::vector<std::string> lines;
};

std::vector<Snippet> cpp_snippets(const std::vector<std::string>& readme) {
  std::vector<Snippet> out;
  for (size_t i = 0; i < readme.size(); ++i) {
    if (trim(readme[i]) != "```cpp") continue;
    Snippet s{int(i) + 1, {}};
    for (++i; i < readme.size() && trim(readme[i]) != "```"; ++i) s.lines.push_back(trim(readme[i]));
    out.push_back(s);
  }
  return out;
}

/// Whether `needle` (trimmed lines) appears as consecutive trimmed lines of `hay`.
bool contains_lines(const std::vector<std::string>& hay, const std::vector<std::string>& needle) {
  if (needle.empty()) return true;
  for (size_t i = 0; i + needle.size() <= hay.size(); ++i) {
    size_t k = 0;
    while (k < needle.size() && trim(hay[i + k]) == needle[k]) ++k;
    if (k == needle.size()) return true;
  }
  return false;
}

}  // namespace

TEST_SUITE("samples/readme") {
  TEST_CASE("every C++ snippet of the README is verbatim in a sample program") {
    const fs::path root = LOOM_SOURCE_DIR;
    std::vector<std::vector<std::string>> samples;
    for (const auto& e : fs::directory_iterator(root / "samples"))
      if (e.path().extension() == ".cpp") samples.push_back(lines_of(e.path()));
    auto snippets = cpp_snippets(lines_of(root / "README.md"));
    CHECK(snippets.size() >= 3);
    for (const Snippet& s : snippets) {
      bool found = false;
      for (const auto& sample : samples) found = found || contains_lines(sample, s.lines);
      INFO("README.md line ", s.line, ": this ```cpp block is not in any samples/*.cpp; put it in a sample "
           "program so that it compiles (indentation may differ)");
      CHECK(found);
    }
  }
}
