// Checkpoints: safetensors layout, a full round trip of parameters and
// optimizer state (training resumes bit-exactly), mismatch errors that name
// the variable, damaged files, and atomic writes.

#include <unistd.h>
#include <sstream>

#include <atomic>
#include <filesystem>
#include <fstream>

// util.hpp (and core/philox.hpp in it) before ops/ops.hpp: philox must see the C math functions.
#include "tests/util.hpp"

#include "frontend/checkpoint.hpp"
#include "frontend/io.hpp"
#include "frontend/nn.hpp"
#include "frontend/optim.hpp"

using namespace loom;
using loom::test::contains;
using loom::test::error_of;

namespace fs = std::filesystem;

namespace {

using loom::test::TempDir;

/// A small model with an optimizer: the graph, its step and the feeds of one batch.
struct Trainer {
  Graph g;
  Tensor x, y, loss, step;
  nn::Sequential model;
  std::unique_ptr<optim::Adam> opt;
  explicit Trainer(int64_t hidden = 8)
      : model{nn::Linear(4, hidden), nn::BatchNorm1d(hidden), nn::ReLU(), nn::Linear(hidden, 3)} {
    x = g.placeholder("x", {-1, 4});
    y = g.placeholder("y", {-1}, int64);
    loss = nn::cross_entropy(model(x), y);
    opt = std::make_unique<optim::Adam>(model, optim::AdamOptions{.lr = 0.05});
    step = opt->minimize(loss);
  }
  Feeds feeds() const { return {{x, test::rand({6, 4}, 1)}, {y, NDArray::from<int64_t>({0, 1, 2, 0, 1, 2})}}; }
};

std::string header_of(const std::string& path) {
  std::vector<uint8_t> b = io::read_file(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | b[size_t(i)];
  return std::string(b.begin() + 8, b.begin() + 8 + long(n));
}

void write_bytes(const std::string& path, const std::string& b) {
  std::ofstream f(path, std::ios::binary);
  f << b;
}

std::string with_header(const std::string& json, size_t data_bytes) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((json.size() >> (8 * i)) & 0xff);
  return out + json + std::string(data_bytes, '\0');
}

}  // namespace

TEST_SUITE("frontend/checkpoint") {
  TEST_CASE("safetensors layout: header, dtypes, metadata, escaping") {
    TempDir dir;
    std::vector<std::pair<std::string, NDArray>> ts = {
        {"f32", test::rand({2, 3}, 1)},
        {"f64", test::rand({4}, 2, float64)},
        {"i32", NDArray::from<int32_t>({-1, 2})},
        {"i64", NDArray::from<int64_t>({1ll << 40})},
        {"u8", NDArray::from<uint8_t>({7, 8, 9})},
        {"bool", NDArray::from<bool>({true, false})},
        {"scalar", NDArray::scalar(2.5)},
        {"empty", NDArray::zeros({0, 3})},
        {"we\"ird\\name/\xC3\xA9", NDArray::from<float>({1})},
    };
    const std::string p = dir / "a.safetensors";
    checkpoint::write(p, ts, {{"format", "loom"}, {"note", "line\nbreak"}});
    const std::string h = header_of(p);
    CHECK(contains(h, "\"f32\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"));
    CHECK(contains(h, "\"bool\":{\"dtype\":\"BOOL\",\"shape\":[2]"));
    CHECK(contains(h, "\"scalar\":{\"dtype\":\"F32\",\"shape\":[]"));
    CHECK(contains(h, "\"__metadata__\":{\"format\":\"loom\",\"note\":\"line\\nbreak\"}"));
    CHECK((8 + h.size()) % 8 == 0);
    auto back = checkpoint::read(p);
    CHECK(back.size() == ts.size());
    for (const auto& t : ts) {
      INFO(t.first);  // not a structured binding: clang 14 cannot capture one (INFO's lambda)
      REQUIRE(back.count(t.first));
      CHECK(test::identical(back[t.first], t.second));
    }
    auto meta = checkpoint::read_metadata(p);
    CHECK(meta["note"] == "line\nbreak");
    CHECK(contains(error_of([&] {
                     checkpoint::write(p, {{"a", ts[0].second}, {"a", ts[1].second}});
                   }),
                   "tensor name 'a' is used twice"));
  }

  TEST_CASE("round trip of parameters and optimizer state; training resumes exactly") {
    TempDir dir;
    const std::string p = dir / "model.safetensors";
    Trainer a;
    Session sa(a.g, {.threads = 1, .seed = 1});
    for (int i = 0; i < 3; ++i) sa.run({}, a.feeds(), {a.step});
    checkpoint::save(sa, p, {}, {{"epoch", "3"}});
    // Only the final file remains: the temporary was renamed.
    int files = 0;
    for (auto& entry : fs::directory_iterator(dir.path)) files += entry.is_regular_file();
    CHECK(files == 1);

    Trainer b;
    Session sb(b.g, {.threads = 1, .seed = 2});  // another seed: other initial values
    CHECK_FALSE(test::identical(sa.get(a.model.parameters()[0]), sb.get(b.model.parameters()[0])));
    auto meta = checkpoint::load(sb, p);
    CHECK(meta["epoch"] == "3");
    auto va = a.g.variables(), vb = b.g.variables();
    REQUIRE(va.size() == vb.size());
    for (size_t i = 0; i < va.size(); ++i) {
      INFO(va[i].name());
      CHECK(va[i].name() == vb[i].name());
      CHECK(test::identical(sa.get(va[i]), sb.get(vb[i])));
    }
    CHECK(sb.get(b.opt->step_count()).item() == 3);
    // Names are a PyTorch state_dict's, with the optimizer state and BatchNorm statistics.
    auto names = checkpoint::read(p);
    CHECK(names.count("adam.step"));
    CHECK(names.count("adam.0.weight.m"));
    CHECK(names.count("1.running_var"));
    CHECK(names.at("0.weight").shape() == Shape{8, 4});  // [out, in]
    CHECK(checkpoint::read_metadata(p).at("format") == "pt");
    // The next step is identical in both sessions.
    auto la = sa.run({a.loss}, a.feeds(), {a.step}), lb = sb.run({b.loss}, b.feeds(), {b.step});
    CHECK(test::identical(la[0], lb[0]));
    CHECK(test::identical(sa.get(a.model.parameters()[2]), sb.get(b.model.parameters()[2])));
  }

  TEST_CASE("mismatches name the file and the variable; a failed load changes nothing") {
    TempDir dir;
    const std::string p = dir / "m.safetensors";
    Trainer a;
    Session sa(a.g, {.threads = 1});
    checkpoint::save(sa, p);

    Trainer wide(9);
    Session sw(wide.g, {.threads = 1, .seed = 5});
    NDArray before = sw.get(wide.model.parameters()[0]);
    std::string e = error_of([&] { checkpoint::load(sw, p); });
    CHECK(contains(e, "checkpoint '" + p + "'"));
    CHECK(contains(e, "variable '0/weight' has shape [9,4] in the graph but [8,4] in the file"));
    CHECK(test::identical(sw.get(wide.model.parameters()[0]), before));

    Graph g;
    Tensor w = g.variable("0/weight", {8, 4}, init::zeros(), float64);
    Tensor extra = g.variable("extra", {2}, init::zeros());
    Session s(g, {.threads = 1});
    CHECK(contains(error_of([&] { checkpoint::load(s, p, {w}, {.allow_unexpected = true}); }),
                   "variable '0/weight' is float64 in the graph but F32 in the file"));
    CHECK(contains(error_of([&] { checkpoint::load(s, p, {extra}, {.allow_unexpected = true}); }),
                   "the file has no tensor for variable 'extra'"));
    // A subset of variables, tolerating the rest of the file.
    Graph g2;
    Tensor w2 = g2.variable("0/weight", {8, 4}, init::zeros());
    Session s2(g2, {.threads = 1});
    e = error_of([&] { checkpoint::load(s2, p); });
    CHECK(contains(e, "that match no variable of the graph"));
    CHECK(contains(e, "'0.bias'"));
    checkpoint::load(s2, p, {}, {.allow_unexpected = true});
    CHECK(test::identical(s2.get(w2), sa.get(a.model.parameters()[0])));
    Tensor missing = g2.variable("new", {1}, init::ones());
    checkpoint::load(s2, p, {}, {.allow_missing = true, .allow_unexpected = true});
    CHECK(s2.get(missing).item() == 1);
  }

  TEST_CASE("damaged files raise errors naming the file") {
    TempDir dir;
    const std::string good = dir / "good";
    checkpoint::write(good, {{"a", test::rand({16}, 3)}});
    std::vector<uint8_t> bytes = io::read_file(good);
    auto err = [&](const std::string& name, const std::string& content) {
      const std::string p = dir / name;
      write_bytes(p, content);
      std::string e = error_of([&] { checkpoint::read(p); });
      CHECK(contains(e, p));
      return e;
    };
    const std::string all(bytes.begin(), bytes.end());
    CHECK(contains(err("cut", all.substr(0, all.size() - 10)), "outside the 54 data bytes (truncated file?)"));
    CHECK(contains(err("tiny", "abc"), "shorter than the 8-byte header length"));
    CHECK(contains(err("huge", std::string("\xff\xff\xff\xff\xff\xff\x00\x00", 8) + "{}"), "implausible"));
    CHECK(contains(err("json", with_header("{\"a\":{\"dtype\":\"F32\",", 0)), "malformed safetensors header"));
    CHECK(contains(err("keys", with_header("{\"a\":{\"dtype\":\"F32\"}}", 0)), "needs \"dtype\""));
    CHECK(contains(err("span", with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4)),
                   "needs 8 bytes, its data_offsets span 4"));
    CHECK(contains(err("hole", with_header(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})", 4)),
                   "a hole in the data"));
    CHECK(contains(err("overlap", with_header(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                                              R"("b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})",
                                              3)),
                   "overlapping"));
    CHECK(contains(err("f16", with_header(R"({"h":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}})", 2)),
                   "dtype F16, which loom does not support"));
    CHECK(contains(err("neg", with_header(R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}})", 0)),
                   "bad shape entry"));
    CHECK(contains(err("bool", with_header(R"({"b":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]}})", 0) + "\x02"),
                   "BOOL tensor 'b' holds byte 2"));
    CHECK(contains(error_of([&] { checkpoint::read(dir / "none"); }), "cannot open"));
    CHECK(contains(error_of([&] { checkpoint::read(dir.path.string()); }), "not a regular file"));
  }

  TEST_CASE("empty tensors sharing an offset with the next tensor load (safetensors' own files have them)") {
    TempDir dir;
    // A non-empty tensor listed before an empty one at the same offset; and 40 tensors, every other one empty
    // (as safetensors.torch.save_file writes them), past the size where std::sort stops being an insertion sort.
    std::string json = R"({"b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                       R"("a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})";
    const std::string p = dir / "order";
    write_bytes(p, with_header(json, 2));
    auto t = checkpoint::read(p);
    CHECK(t.at("a").shape() == Shape{0});
    CHECK(t.at("b").shape() == Shape{2});
    std::ostringstream many;
    size_t at = 0;
    for (int i = 0; i < 40; ++i) {
      const size_t n = i % 2 ? 1 : 0;
      many << (i ? "," : "{") << "\"t" << 100 + i << R"(":{"dtype":"U8","shape":[)" << n << R"(],"data_offsets":[)"
           << at << "," << at + n << "]}";
      at += n;
    }
    many << "}";
    json = many.str();
    const std::string q = dir / "many";
    write_bytes(q, with_header(json, at));
    CHECK(checkpoint::read(q).size() == 40);
  }

  TEST_CASE("writes are atomic: a failed write leaves the old file") {
    TempDir dir;
    const std::string p = dir / "c.safetensors";
    checkpoint::write(p, {{"a", NDArray::from<float>({1, 2})}});
    std::string e = error_of([&] {
      checkpoint::write(dir / "no/such/dir/c.safetensors", {{"a", NDArray::from<float>({1})}});
    });
    CHECK(contains(e, "cannot write"));
    CHECK(contains(e, "no/such/dir/c.safetensors"));
    // An invalid tensor list fails before touching the file.
    CHECK(contains(error_of([&] { checkpoint::write(p, {{"", NDArray::from<float>({1})}}); }), "invalid tensor name"));
    // Names and metadata must be UTF-8 (the header is JSON): else no reader could open the file.
    CHECK(contains(error_of([&] {
                     checkpoint::write(p, {{"w\xff", NDArray::from<float>({1})}});
                   }),
                   "tensor name \"w\xef\xbf\xbd\" is not valid UTF-8"));
    CHECK(contains(error_of([&] {
                     checkpoint::write(p, {{"a", NDArray::from<float>({1})}}, {{"note", "caf\xe9"}});
                   }),
                   "metadata value"));
    CHECK(checkpoint::read(p)["a"].to_vector<float>() == std::vector<float>{1, 2});
    int files = 0;
    for (auto& entry : fs::directory_iterator(dir.path)) files += entry.is_regular_file();
    CHECK(files == 1);
  }
}
