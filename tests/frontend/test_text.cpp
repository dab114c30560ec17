// Text corpora: Dictionary, the PTB-format Corpus (ids, <eos>, max_lines,
// file names, errors naming files), the course's batchify/get_batch, bptt
// checks, the tokenizer and the fortunes -> PTB conversion.

#include <filesystem>
#include <fstream>

#include "tests/util.hpp"

#include "frontend/text.hpp"

using namespace loom;
using loom::test::contains;
using loom::test::error_of;
using loom::test::TempDir;

namespace {

void write(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

std::string read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

TEST_SUITE("frontend/text") {
  TEST_CASE("Dictionary: ids in order of first appearance") {
    data::Dictionary d;
    CHECK(d.add_word("the") == 0);
    CHECK(d.add_word("cat") == 1);
    CHECK(d.add_word("the") == 0);
    CHECK(d.size() == 2);
    CHECK(d.word(1) == "cat");
    CHECK(d.find("dog") == -1);
    CHECK(contains(error_of([&] { d.id("dog"); }), "unknown word 'dog'"));
    CHECK(contains(error_of([&] { d.word(2); }), "id 2 out of range [0, 2)"));
  }

  TEST_CASE("Corpus reads train/valid/test, appends <eos> per line, honours max_lines") {
    TempDir dir;
    write(dir / "train.txt", " the cat sat\n the dog\n\n");
    write(dir / "valid.txt", "a cat\n");
    write(dir / "test.txt", "the  end");  // no final newline: still a line
    data::Corpus c(dir.path.string());
    // the=0 cat=1 sat=2 <eos>=3 dog=4; the empty third line is one <eos>.
    CHECK(c.train == std::vector<int64_t>{0, 1, 2, 3, 0, 4, 3, 3});
    CHECK(c.valid == std::vector<int64_t>{5, 1, 3});
    CHECK(c.test == std::vector<int64_t>{0, 6, 3});
    CHECK(c.dictionary.size() == 7);
    CHECK(c.dictionary.word(3) == "<eos>");
    data::Corpus one(dir.path.string(), {.max_lines = 1});
    CHECK(one.train == std::vector<int64_t>{0, 1, 2, 3});
    CHECK(one.test.size() == 3);
  }

  TEST_CASE("Corpus accepts ptb.*.txt names; missing and empty files are errors naming them") {
    TempDir dir;
    write(dir / "ptb.train.txt", "a b\n");
    write(dir / "ptb.valid.txt", "b\n");
    std::string e = error_of([&] { data::Corpus c(dir.path.string()); });
    CHECK(contains(e, (dir / "test.txt")));
    CHECK(contains(e, "not found"));
    write(dir / "ptb.test.txt", "  \n\n");
    e = error_of([&] { data::Corpus c(dir.path.string()); });
    CHECK(contains(e, "ptb.test.txt"));
    CHECK(contains(e, "is empty"));
    write(dir / "ptb.test.txt", "a\n");
    CHECK(data::Corpus(dir.path.string()).test.size() == 2);
    CHECK(contains(error_of([] { data::Corpus c("/nonexistent/ptb"); }), "'/nonexistent/ptb' does not exist"));
    std::filesystem::create_directory(dir / "test.txt");
    CHECK(contains(error_of([&] { data::Corpus c(dir.path.string()); }), "not a regular file"));
  }

  TEST_CASE("batchify and get_batch: the course's alphabet example") {
    std::vector<int64_t> ids;
    for (int64_t i = 0; i < 26; ++i) ids.push_back(i);  // a..z
    NDArray b = data::batchify(ids, 4);                 // 6 rows; y, z dropped
    REQUIRE(b.shape() == Shape{6, 4});
    // Columns: a..f, g..l, m..r, s..x.
    CHECK(b.to_vector<int64_t>() == std::vector<int64_t>{0, 6, 12, 18, 1, 7, 13, 19, 2, 8, 14, 20,
                                                           3, 9, 15, 21, 4, 10, 16, 22, 5, 11, 17, 23});
    data::TextBatch t = data::get_batch(b, 0, 2);
    CHECK(t.data.shape() == Shape{2, 4});
    CHECK(t.data.to_vector<int64_t>() == std::vector<int64_t>{0, 6, 12, 18, 1, 7, 13, 19});
    CHECK(t.target.shape() == Shape{8});
    CHECK(t.target.to_vector<int64_t>() == std::vector<int64_t>{1, 7, 13, 19, 2, 8, 14, 20});
    // The last batch is shorter: seq_len = min(bptt, rows - 1 - i).
    data::TextBatch last = data::get_batch(b, 4, 2);
    CHECK(last.data.shape() == Shape{1, 4});
    CHECK(last.target.to_vector<int64_t>() == std::vector<int64_t>{5, 11, 17, 23});
    CHECK(data::batch_starts(b, 2) == std::vector<int64_t>{0, 2, 4});
    CHECK(data::batch_starts(b, 5) == std::vector<int64_t>{0});
    std::string e = error_of([&] { data::batch_starts(b, 6, "valid split"); });
    CHECK(contains(e, "bptt 6 is longer than the valid split"));
    CHECK(contains(e, "6 rows"));
    CHECK(contains(error_of([&] { data::get_batch(b, 5, 2); }), "start row 5 out of range"));
    CHECK(contains(error_of([&] { data::get_batch(b, 0, 0); }), "bptt must be positive"));
    CHECK(contains(error_of([&] { data::batchify({1, 2}, 3); }), "fewer than one column"));
    CHECK(contains(error_of([&] { data::get_batch(NDArray::zeros({3}, int64), 0, 1); }), "int64 [rows, batch]"));
  }

  TEST_CASE("tokenize_text: lower case, punctuation apart, overstrike removed") {
    using V = std::vector<std::string>;
    CHECK(data::tokenize_text("Don't PANIC!!  -- it's 42...") ==
          V{"don't", "panic", "!!", "--", "it's", "42", "..."});
    CHECK(data::tokenize_text("'Tis \"the\" dogs' (bark)") == V{"'", "tis", "\"", "the", "\"", "dogs", "'", "(", "bark", ")"});
    CHECK(data::tokenize_text("_\bb_\bo_\bl_\bd\tX\bXt") == V{"bold", "xt"});
    CHECK(data::tokenize_text("caf\xc3\xa9 na\xc3\xafve") == V{"caf\xc3\xa9", "na\xc3\xafve"});
    CHECK(data::tokenize_text(" \n\r\x01 ").empty());
  }

  TEST_CASE("fortunes_to_ptb: entries split 90/5/5, rare words <unk>, deterministic output") {
    TempDir src, out;
    // 40 entries across two files (sorted by name: "a" then "b"); "rare" appears once.
    std::string a, b;
    for (int k = 0; k < 20; ++k) a += "The cat, the hat.\n%\n";
    for (int k = 0; k < 19; ++k) b += "A HAT!\n%\n";
    b += "a rare hat\n";
    write(src / "b", b);
    write(src / "a", a);
    write(src / "a.dat", "index");
    std::filesystem::create_symlink(src / "a", src / "a.u8");
    data::FortunesStats st = data::fortunes_to_ptb(src.path.string(), out.path.string(), {.min_count = 2});
    CHECK(st.files == 2);
    CHECK(st.train.entries == 36);
    CHECK(st.valid.entries == 2);  // entries 18 and 38
    CHECK(st.test.entries == 2);   // entries 19 and 39
    CHECK(read(out / "valid.txt") == "the cat , the hat .\na hat !\n");
    CHECK(read(out / "test.txt") == "the cat , the hat .\na <unk> hat\n");
    CHECK(st.test.unks == 1);
    CHECK(st.test.tokens == 6 + 1 + 3 + 1);
    // the cat , hat . a ! <unk> <eos>
    CHECK(st.vocab == 9);
    const std::string first = read(out / "train.txt");
    data::fortunes_to_ptb(src.path.string(), out.path.string(), {.min_count = 2});
    CHECK(read(out / "train.txt") == first);
    data::Corpus c(out.path.string());
    CHECK(int64_t(c.train.size()) == st.train.tokens);
    CHECK(contains(error_of([] { data::read_fortunes("/nonexistent"); }), "apt-get install fortunes"));
    // File-system failures are loom::Errors naming the path (error_of fails on any other exception).
    CHECK(contains(error_of([&] { data::fortunes_to_ptb(src.path.string(), src / "a/out"); }),
                   "cannot create the output directory"));
    CHECK(contains(error_of([] { data::Corpus c(std::string(300, 'd')); }), "does not exist or is not a directory"));
    CHECK(contains(error_of([&] { data::ptb_file(src.path.string(), std::string(300, 'd')); }), "not found"));
  }

  TEST_CASE("the real fortunes corpus (when Debian's fortunes package is installed)") {
    if (!std::filesystem::exists(data::kFortunesDir)) {
      MESSAGE("skipped: " << std::string(data::kFortunesDir) << " not installed (apt-get install fortunes)");
      return;
    }
    TempDir out;
    data::FortunesStats st = data::fortunes_to_ptb(data::kFortunesDir, out.path.string());
    CHECK(st.files > 30);
    CHECK(st.train.tokens > 400000);
    CHECK(st.valid.tokens > 20000);
    CHECK(st.vocab > 5000);
    CHECK(double(st.train.entries) / double(st.train.entries + st.valid.entries + st.test.entries) ==
          doctest::Approx(0.9).epsilon(0.01));
    data::Corpus c(out.path.string());
    CHECK(c.dictionary.size() == st.vocab);
  }
}
