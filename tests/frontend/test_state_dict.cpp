// Checkpoints in PyTorch's names and layouts: a model's state_dict, training
// checkpoints (weights + optimizer state beside them), and loom 0.1 files
// ("/" names, Linear weights [in, out]) that still load.

#include <filesystem>
#include <memory>

#include "frontend/checkpoint.hpp"
#include "frontend/nn.hpp"
#include "frontend/optim.hpp"
#include "tests/util.hpp"

using namespace loom;
using loom::test::contains;
using loom::test::error_of;
using loom::test::TempDir;

namespace {

/// An MLP with BatchNorm and Adam, as train_mnist builds its models.
struct Net {
  Graph g;
  Tensor x, y, loss, step;
  nn::Sequential model{nn::Linear(4, 6), nn::BatchNorm1d(6), nn::ReLU(), nn::Linear(6, 3)};
  std::unique_ptr<optim::Adam> opt;
  explicit Net(const std::string& scope = "") {
    x = g.placeholder("x", {-1, 4});
    y = g.placeholder("y", {-1}, int64);
    Tensor logits;
    if (scope.empty()) {
      logits = model(x);
    } else {
      auto s = g.scope(scope);
      logits = model(x);
    }
    loss = nn::cross_entropy(logits, y);
    opt = std::make_unique<optim::Adam>(model, optim::AdamOptions{.lr = 0.05});
    step = opt->minimize(loss);
  }
  Feeds feeds() const { return {{x, test::rand({5, 4}, 3)}, {y, NDArray::from<int64_t>({0, 1, 2, 1, 0})}}; }
};

std::vector<std::string> keys_of(const std::map<std::string, NDArray>& m) {
  std::vector<std::string> out;
  for (const auto& [k, v] : m) out.push_back(k);
  return out;
}

}  // namespace

TEST_SUITE("frontend/state_dict") {
  TEST_CASE("state_dict_name joins graph scopes with dots") {
    CHECK(checkpoint::state_dict_name("2/0/fn/weight") == "2.0.fn.weight");
    CHECK(checkpoint::state_dict_name("w") == "w");
    CHECK(checkpoint::optimizer_path("run/m.safetensors") == "run/m.optim.safetensors");
    CHECK(checkpoint::optimizer_path("m.bin") == "m.bin.optim.safetensors");
  }

  TEST_CASE("a model's file is its PyTorch state_dict, whatever scope it was built in") {
    TempDir dir;
    Net a("encoder");
    Session sa(a.g, {.threads = 1, .seed = 1});
    sa.run({}, a.feeds(), {a.step});
    checkpoint::save(sa, a.model, dir / "m.safetensors");
    auto file = checkpoint::read(dir / "m.safetensors");
    // PyTorch's nn.Sequential(Linear(4, 6), BatchNorm1d(6), ReLU(), Linear(6, 3)).state_dict() keys:
    CHECK(keys_of(file) == std::vector<std::string>{"0.bias", "0.weight", "1.bias", "1.num_batches_tracked",
                                                    "1.running_mean", "1.running_var", "1.weight", "3.bias",
                                                    "3.weight"});
    CHECK(file.at("0.weight").shape() == Shape{6, 4});
    CHECK(file.at("1.num_batches_tracked").dtype() == int64);
    CHECK(file.at("1.num_batches_tracked").item() == 1);
    CHECK(checkpoint::read_metadata(dir / "m.safetensors").at("format") == "pt");

    // Into the same model built without a scope: names are relative to the model.
    Net b;
    Session sb(b.g, {.threads = 1, .seed = 2});
    checkpoint::load(sb, b.model, dir / "m.safetensors");
    for (size_t i = 0; i < a.model.state_dict().size(); ++i)
      CHECK(test::identical(sa.get(a.model.state_dict()[i].second), sb.get(b.model.state_dict()[i].second)));
    // The optimizer state is not part of the model's file.
    CHECK_FALSE(file.count("adam.step"));
  }

  TEST_CASE("training checkpoints: the state_dict, and the optimizer state beside it") {
    TempDir dir;
    const std::string p = dir / "m.safetensors";
    Net a;
    Session sa(a.g, {.threads = 1, .seed = 1});
    for (int i = 0; i < 3; ++i) sa.run({}, a.feeds(), {a.step});
    checkpoint::save_training(sa, a.model, p, {{"epoch", "3"}});
    auto weights = checkpoint::read(p), state = checkpoint::read(checkpoint::optimizer_path(p));
    CHECK(weights.size() == a.model.state_dict().size());
    CHECK(state.count("adam.step"));
    CHECK(state.count("adam.0.weight.m"));
    CHECK(state.at("adam.0.weight.m").shape() == Shape{6, 4});
    CHECK_FALSE(state.count("0.weight"));

    Net b;
    Session sb(b.g, {.threads = 1, .seed = 7});
    auto meta = checkpoint::load_training(sb, b.model, p);
    CHECK(meta.at("epoch") == "3");
    auto va = a.g.variables(), vb = b.g.variables();
    REQUIRE(va.size() == vb.size());
    for (size_t i = 0; i < va.size(); ++i) CHECK(test::identical(sa.get(va[i]), sb.get(vb[i])));
    // Training resumes exactly.
    CHECK(test::identical(sa.run({a.loss}, a.feeds(), {a.step})[0], sb.run({b.loss}, b.feeds(), {b.step})[0]));

    // Files from two different saves are refused, and nothing changes.
    Net c;
    Session sc(c.g, {.threads = 1, .seed = 9});
    checkpoint::save_training(sc, c.model, dir / "other.safetensors", {{"epoch", "4"}});
    std::filesystem::copy_file(checkpoint::optimizer_path(dir / "other.safetensors"), checkpoint::optimizer_path(p),
                               std::filesystem::copy_options::overwrite_existing);
    NDArray before = sc.get(c.model.parameters()[0]);
    std::string e = error_of([&] { checkpoint::load_training(sc, c.model, p); });
    CHECK(contains(e, "has epoch 3 but"));
    CHECK(contains(e, "different saves"));
    CHECK(test::identical(sc.get(c.model.parameters()[0]), before));
    // Without the optimizer file: a hint to load the weights alone.
    std::filesystem::remove(checkpoint::optimizer_path(p));
    CHECK(contains(error_of([&] { checkpoint::load_training(sc, c.model, p); }), "--load-weights"));
    // A key in the optimizer file only is a mismatch too.
    const std::string q = dir / "q.safetensors";
    checkpoint::save_training(sc, c.model, q, {});
    std::filesystem::copy_file(checkpoint::optimizer_path(dir / "other.safetensors"), checkpoint::optimizer_path(q),
                               std::filesystem::copy_options::overwrite_existing);
    e = error_of([&] { checkpoint::load_training(sc, c.model, q); });
    CHECK(contains(e, "has epoch 4 but"));
    CHECK(contains(e, "has none: the two files come from different saves"));
    // A name whose optimizer file's name is too long for the file system: a loom::Error, not a filesystem_error.
    const std::string longer = dir / std::string(240, 'm');
    checkpoint::save(sc, c.model, longer);
    CHECK(contains(error_of([&] { checkpoint::load_training(sc, c.model, longer); }), "does not exist"));
  }

  TEST_CASE("save_training checks both paths before writing either: a bad one leaves the old pair") {
    TempDir dir;
    Net a;
    Session s(a.g, {.threads = 1, .seed = 1});
    const std::string p = dir / "m.safetensors";
    std::filesystem::create_directory(p);  // the model's path is a directory
    std::string e = error_of([&] { checkpoint::save_training(s, a.model, p, {{"epoch", "1"}}); });
    CHECK(contains(e, p));
    CHECK_FALSE(std::filesystem::exists(checkpoint::optimizer_path(p)));
    // With an old pair: the old optimizer file stays as it was.
    const std::string r = dir / "r.safetensors";
    checkpoint::save_training(s, a.model, r, {{"epoch", "1"}});
    s.run({}, a.feeds(), {a.step});
    std::filesystem::remove(r);
    std::filesystem::create_directory(r);
    CHECK_FALSE(error_of([&] { checkpoint::save_training(s, a.model, r, {{"epoch", "2"}}); }).empty());
    CHECK(checkpoint::read_metadata(checkpoint::optimizer_path(r)).at("epoch") == "1");
  }

  TEST_CASE("two variables with one checkpoint name are refused") {
    TempDir dir;
    Graph g;
    Tensor a = g.variable("a/b", {1}, init::zeros());
    Tensor b = g.variable("a.b", {1}, init::ones());
    Session s(g, {.threads = 1});
    CHECK(contains(error_of([&] { checkpoint::save(s, dir / "x.safetensors"); }),
                   "variables 'a/b' and 'a.b' would both be saved as 'a.b'"));
    (void)a, (void)b;
  }

  TEST_CASE("loom 0.1 checkpoints ('/' names, Linear weights [in, out]) still load") {
    TempDir dir;
    Net a;
    Session sa(a.g, {.threads = 1, .seed = 1});
    for (int i = 0; i < 2; ++i) sa.run({}, a.feeds(), {a.step});
    // The file loom 0.1 wrote: every variable by graph name, 2-D weights and their state transposed,
    // no num_batches_tracked.
    std::vector<std::pair<std::string, NDArray>> old;
    for (const Tensor& v : a.g.variables()) {
      const std::string& n = v.name();
      if (n.ends_with("num_batches_tracked")) continue;
      NDArray value = sa.get(v);
      const bool linear = value.ndim() == 2;  // 0/weight, 3/weight, adam/0/weight/m, ...
      old.emplace_back(n, linear ? value.transpose().compact() : value);
    }
    const std::string p = dir / "old.safetensors";
    checkpoint::write(p, old, {{"format", "loom"}, {"epoch", "2"}});
    CHECK(checkpoint::read(p).at("0/weight").shape() == Shape{4, 6});

    Net b;
    Session sb(b.g, {.threads = 1, .seed = 5});
    CHECK(checkpoint::load_training(sb, b.model, p).at("epoch") == "2");
    for (const Tensor& v : b.g.variables()) {
      INFO(v.name());
      if (v.name().ends_with("num_batches_tracked"))
        CHECK(sb.get(v).item() == 0);  // as PyTorch fills it for old state dicts
      else
        CHECK(test::identical(sb.get(v), sa.get(a.g.find(v.name()))));
    }
    // The model alone, and the whole graph, load too.
    Net c;
    Session sc(c.g, {.threads = 1, .seed = 6});
    checkpoint::load(sc, c.model, p);  // the model's part of the file
    CHECK(test::identical(sc.get(c.model.parameters()[0]), sa.get(a.model.parameters()[0])));
    checkpoint::load(sc, p);
    CHECK(test::identical(sc.get(c.g.find("adam/0/weight/m")), sa.get(a.g.find("adam/0/weight/m"))));

    // A wrong architecture names the variable and says what loom did with the file.
    Graph g;
    nn::Sequential wide{nn::Linear(4, 7)};
    wide(g.placeholder("x", {-1, 4}));
    Session sw(g, {.threads = 1});
    std::string e = error_of([&] { checkpoint::load(sw, wide, p); });
    CHECK(contains(e, "variable '0/weight' has shape [7,4] in the graph but [6,4] in the file"));
    CHECK(contains(e, "loom 0.1 file"));
  }
}
