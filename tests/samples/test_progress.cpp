// The trainers' progress bar (samples/progress.hpp) fits any terminal width:
// a line as wide as the terminal wraps, and a wrapped line leaves stale lines.

#include "samples/progress.hpp"
#include "tests/util.hpp"

using loom::samples::Progress;
using loom::test::contains;

TEST_SUITE("samples/progress") {
  TEST_CASE("the line never reaches the terminal's width; fields go when the bar cannot shrink") {
    Progress bar(true, 3, 10, 469);
    for (int width : {0, 1, 8, 20, 40, 60, 80, 120, 300}) {
      INFO("width ", width);
      std::string line = bar.render(width, 200, 0.4321, 0.8765, 81234.0, 12.0);
      CHECK(int(line.size()) <= (width > 0 ? width : 80) - 1);
      if (width >= 20) CHECK(contains(line, "epoch 3/10"));
    }
    std::string wide = bar.render(300, 200, 0.4321, 0.8765, 81234.0, 12.0);
    CHECK(contains(wide, "[==========>"));  // 24 * 200 / 469 = 10 cells done
    CHECK(contains(wide, "loss 0.4321"));
    CHECK(contains(wide, "ETA 12s"));
    std::string narrow = bar.render(60, 200, 0.4321, 0.8765, 81234.0, 12.0);
    CHECK(contains(narrow, "200/469"));
    CHECK_FALSE(contains(narrow, "ETA"));  // the last fields go first
  }
}
