// Sources and state: placeholder, constant, variable (handled by the session
// itself: no kernel), assign (writes a variable inside a run), no_op (control).

#include "ops/common.hpp"
#include "ops/ops.hpp"

namespace loom {

namespace {

OpDef source(const char* name) {
  OpDef d;
  d.name = name;
  d.attrs = {attr::required("shape", AttrKind::integers), attr::required("dtype", AttrKind::dtype)};
  d.no_kernel = true;
  d.stateful = true;
  d.infer = [](const InferContext& c) {
    return std::vector<TensorType>{{c.attrs.get<DType>("dtype"), c.attrs.ints("shape")}};
  };
  return d;
}

const bool registered = [] {
  register_op(source("placeholder"));
  register_op(source("variable"));
  {
    OpDef d;
    d.name = "constant";
    d.attrs = {attr::required("value", AttrKind::array)};
    d.no_kernel = true;
    d.infer = [](const InferContext& c) {
      const NDArray& v = c.attrs.get<NDArray>("value");
      return std::vector<TensorType>{{v.dtype(), v.shape()}};
    };
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "assign";
    d.attrs = AttrSchema::none();
    d.min_inputs = d.max_inputs = 2;
    d.stateful = true;
    d.writes_input = 0;
    d.infer = [](const InferContext& c) {
      const TensorType &var = c.in[0], &val = c.in[1];
      c.check(var.dtype == val.dtype, "value dtype ", dtype_name(val.dtype), " does not match the variable's ",
              dtype_name(var.dtype));
      Shape b;
      try {
        b = broadcast_shapes(val.shape, var.shape);
      } catch (const Error&) {
        c.fail("value shape ", S(val.shape), " does not fit the variable's ", S(var.shape));
      }
      c.check(b == var.shape || !is_static(val.shape), "value shape ", S(val.shape), " does not fit the variable's ",
              S(var.shape));
      return std::vector<TensorType>{var};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs&) {
      return std::vector<NDArray>{in[1].broadcast_to(in[0].shape()).clone()};
    };
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "no_op";
    d.attrs = AttrSchema::none();
    d.no_kernel = true;
    d.max_inputs = -1;
    d.infer = [](const InferContext&) { return std::vector<TensorType>{}; };
    register_op(std::move(d));
  }
  return true;
}();

}  // namespace

Tensor assign(const Tensor& var, const Tensor& value) {
  LOOM_CHECK(var.valid() && var.op() == "variable", "assign: target ", var.valid() ? "'" + var.name() + "' " : "",
             "is not a variable");
  return var.graph().add1("assign", {var, value});
}
Tensor assign_add(const Tensor& var, const Tensor& delta) { return assign(var, var + delta); }
Tensor assign_sub(const Tensor& var, const Tensor& delta) { return assign(var, var - delta); }

Tensor group(const std::vector<Tensor>& targets, const std::string& name) {
  LOOM_CHECK(!targets.empty(), "group: no targets");
  return targets[0].graph().add1("no_op", {}, {}, name.empty() ? "group" : name, targets);
}

Tensor with_dependencies(const std::vector<Tensor>& deps, const Tensor& x) {
  return x.graph().add1("identity", {x}, {}, {}, deps);
}

}  // namespace loom
