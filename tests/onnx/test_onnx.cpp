// ONNX export (libloom_onnx): every op has an exporter or a stated reason,
// every op example exports into a model ONNX's checker accepts with loom's
// output shapes, and the sample models export as PyTorch's would (Gemm on
// [out, in] weights named like the state_dict, a symbolic batch dim).
// Numbers are checked by ./build.sh interop (onnxruntime against loom).

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <set>

#include "core/op.hpp"
#include "frontend/nn.hpp"
#include "frontend/onnx.hpp"
#include "tests/util.hpp"

using namespace loom;
using loom::test::contains;
using loom::test::error_of;

namespace {

::onnx::ModelProto parse(const std::string& bytes) {
  ::onnx::ModelProto m;
  REQUIRE(m.ParseFromString(bytes));
  return m;
}

std::vector<std::string> op_types(const ::onnx::ModelProto& m) {
  std::vector<std::string> out;
  for (const auto& n : m.graph().node()) out.push_back(n.op_type());
  return out;
}

/// The declared dims of a graph output: values, or -1 where unknown/symbolic.
Shape dims_of(const ::onnx::ValueInfoProto& v) {
  Shape s;
  for (const auto& d : v.type().tensor_type().shape().dim()) s.push_back(d.has_dim_value() ? d.dim_value() : -1);
  return s;
}

}  // namespace

TEST_SUITE("onnx") {
  TEST_CASE("every registered op has an ONNX exporter or a reason why not") {
    std::vector<std::string> ok = loom::onnx::exportable_ops();
    std::set<std::string> covered(ok.begin(), ok.end());
    for (const auto& [op, reason] : loom::onnx::unexportable_ops()) {
      CHECK_FALSE(reason.empty());
      covered.insert(op);
    }
    for (const char* source : {"placeholder", "variable", "constant"}) covered.insert(source);  // the driver's
    for (const OpDef* op : registered_ops()) {
      if (op->name.starts_with("test_")) continue;  // ops the test suites define for themselves
      INFO("op '", op->name, "': add its exporter in frontend/onnx/ (see exporter.hpp) or register_unexportable");
      CHECK(covered.count(op->name));
    }
    CHECK(ok.size() > 40);
  }

  TEST_CASE("every example of every exportable op passes ONNX's checker, with loom's output types") {
    const std::vector<std::string> ok = loom::onnx::exportable_ops();
    int models = 0, refused = 0;
    for (const OpDef* op : registered_ops()) {
      if (!op->examples || !std::binary_search(ok.begin(), ok.end(), op->name)) continue;
      for (const OpExample& ex : op->examples(3)) {
        for (DType dt : {float32, float64}) {
          INFO(op->name, " (", ex.label, ") in ", dtype_name(dt));
          Graph g;
          std::vector<Tensor> inputs;
          for (size_t i = 0; i < ex.inputs.size(); ++i) {
            const NDArray& v = ex.inputs[i];
            inputs.push_back(g.placeholder("in" + std::to_string(i), v.shape(), v.dtype() == float64 ? dt : v.dtype()));
          }
          std::vector<Tensor> outputs = g.add(op->name, inputs, ex.attrs);
          std::string bytes;
          try {
            bytes = loom::onnx::export_bytes(g, inputs, outputs);  // checks, or throws
          } catch (const Error& e) {
            // Training-time forms (attention with dropout) are refused, with the way out.
            INFO(e.what());
            CHECK(contains(e.what(), "export the graph the model builds in eval mode"));
            ++refused;
            continue;
          }
          ::onnx::ModelProto m = parse(bytes);
          REQUIRE(m.graph().output_size() == int(outputs.size()));
          for (size_t k = 0; k < outputs.size(); ++k) {
            CHECK(m.graph().output(int(k)).type().tensor_type().elem_type() != ::onnx::TensorProto::UNDEFINED);
            CHECK(dims_of(m.graph().output(int(k))) == outputs[k].shape());
          }
          ++models;
        }
      }
    }
    CHECK(models > 100);
    CHECK(refused < 10);
  }

  TEST_CASE("an MLP exports as PyTorch's: Gemm on [out, in] weights named like the state_dict") {
    Graph g;
    nn::Sequential model{nn::Flatten(), nn::Linear(12, 8), nn::ReLU(), nn::Linear(8, 3)};
    Tensor x = g.placeholder("x", {-1, 3, 4});
    model.eval();
    Tensor logits = model(x);
    Session s(g, {.threads = 1, .seed = 2});
    ::onnx::ModelProto m = parse(loom::onnx::export_bytes(g, {x}, {logits}, {.session = &s, .output_names = {"logits"}}));
    CHECK(m.opset_import(0).version() == loom::onnx::kOpset);
    CHECK(m.producer_name() == "loom");
    CHECK(op_types(m) == std::vector<std::string>{"Reshape", "Gemm", "Add", "Relu", "Gemm", "Add"});
    for (const auto& n : m.graph().node())
      if (n.op_type() == "Gemm") CHECK(n.attribute(0).name() == "transB");
    std::map<std::string, Shape> init;
    for (const auto& t : m.graph().initializer()) init[t.name()] = Shape(t.dims().begin(), t.dims().end());
    CHECK(init.at("1.weight") == Shape{8, 12});
    CHECK(init.at("3.weight") == Shape{3, 8});
    CHECK(init.at("3.bias") == Shape{3});
    // The weights' bytes are the session's values.
    for (const auto& t : m.graph().initializer())
      if (t.name() == "1.weight") {
        NDArray w = s.get(model.state_dict()[0].second);
        CHECK(t.raw_data() == std::string(static_cast<const char*>(w.raw()), w.nbytes()));
      }
    const auto& in = m.graph().input(0);
    CHECK(in.name() == "x");
    CHECK(in.type().tensor_type().shape().dim(0).dim_param() == "batch");
    CHECK(m.graph().output(0).name() == "logits");
  }

  TEST_CASE("MLPResNet exports in eval mode; a training-mode graph is refused with the reason") {
    Graph g;
    nn::MLPResNet net(20, {.hidden = 16, .blocks = 2});
    Tensor x = g.placeholder("x", {-1, 20});
    net.train();
    Tensor train_out = net(x);
    net.eval();
    Tensor eval_out = net(x);
    Session s(g, {.threads = 1});
    ::onnx::ModelProto m = parse(loom::onnx::export_bytes(g, {x}, {eval_out}, {.session = &s}));
    std::set<std::string> names;
    for (const auto& t : m.graph().initializer()) names.insert(t.name());
    CHECK(names.count("2.0.fn.1.running_var"));  // BatchNorm1d in eval form: its running statistics
    CHECK(names.count("2.0.fn.0.weight"));
    std::string e = error_of([&] { loom::onnx::export_bytes(g, {x}, {train_out}, {.session = &s}); });
    CHECK(contains(e, "has no ONNX form"));
    CHECK(contains(e, "eval"));
  }

  TEST_CASE("softmax, log-softmax, LayerNorm1d and cross-entropy export") {
    Graph g;
    Tensor x = g.placeholder("x", {-1, 6});
    Tensor labels = g.placeholder("labels", {-1}, int64);
    nn::LayerNorm1d norm(6);
    Tensor h = norm(x);
    Session s(g, {.threads = 1});
    ::onnx::ModelProto m = parse(loom::onnx::export_bytes(
        g, {x, labels}, {softmax(h), log_softmax(h, 0), nn::cross_entropy(h, labels), nn::accuracy(h, labels)},
        {.session = &s, .output_names = {"probs", "logp", "loss", "acc"}}));
    std::vector<std::string> types = op_types(m);
    for (const char* op : {"Softmax", "LogSoftmax", "LayerNormalization", "ArgMax", "Equal", "ReduceSum"})
      CHECK(std::find(types.begin(), types.end(), op) != types.end());
    CHECK(dims_of(m.graph().output(0)) == Shape{-1, 6});
    CHECK(dims_of(m.graph().output(2)) == Shape{});
  }

  TEST_CASE("export errors name what is missing") {
    Graph g;
    Tensor x = g.placeholder("x", {-1, 4}), y = g.placeholder("y", {-1, 4});
    Tensor w = g.variable("w", {4, 4}, init::ones());
    Tensor out = matmul(x, w) + y;
    CHECK(contains(error_of([&] { loom::onnx::export_bytes(g, {x}, {out}); }), "placeholder 'y', which is not among the inputs"));
    CHECK(contains(error_of([&] { loom::onnx::export_bytes(g, {x, y}, {out}); }), "pass ExportOptions::session"));
    CHECK(contains(error_of([&] { loom::onnx::export_bytes(g, {w}, {out}); }), "input 'w' is not a placeholder"));
    CHECK(contains(error_of([&] { loom::onnx::export_bytes(g, {x, y}, {}); }), "no outputs"));
    Graph other;
    Session s(other);
    CHECK(contains(error_of([&] { loom::onnx::export_bytes(g, {x, y}, {out}, {.session = &s}); }), "another graph"));
    // A function of its inputs alone needs no session; an input returned as is passes through Identity.
    ::onnx::ModelProto m = parse(loom::onnx::export_bytes(g, {x, y}, {x + y, x}, {.output_names = {"sum", "same"}}));
    CHECK(op_types(m) == std::vector<std::string>{"Add", "Identity"});
    // Names given twice were renamed ('a', 'a_1'): the caller's feeds by name then failed in the runtime.
    CHECK(contains(error_of([&] {
                     loom::onnx::export_bytes(g, {x, y}, {x + y}, {.input_names = {"a", "a"}});
                   }),
                   "the name 'a' is given twice"));
    CHECK(contains(error_of([&] {
                     loom::onnx::export_bytes(g, {x, y}, {x + y}, {.input_names = {"a", "b"}, .output_names = {"b"}});
                   }),
                   "the name 'b' is given twice"));
    CHECK(contains(error_of([&] {
                     loom::onnx::export_bytes(g, {x, y}, {x + y}, {.output_names = {""}});
                   }),
                   "an empty input or output name"));
    test::TempDir dir;
    loom::onnx::export_graph(g, {x, y}, {x + y}, dir / "f.onnx");
    CHECK(std::filesystem::file_size(dir / "f.onnx") > 0);
  }
}
