// The distances and the other losses of torch.nn.functional (frontend/losses.cpp):
// each against PyTorch 2.15's values in float64 (reduction none, the
// reductions from them), central-difference gradients, and the errors.

#include <cmath>
#include <functional>
#include <map>
#include <numeric>

#include "frontend/nn.hpp"
#include "ops/check.hpp"
#include "tests/util.hpp"

using namespace loom;

namespace {

/// PyTorch's results (torch.nn.functional, float64, reduction='none') on the inputs below.
const std::map<std::string, std::vector<double>>& torch_values() {
  // PyTorch's values, one result per line.
  // clang-format off
  static const std::map<std::string, std::vector<double>> v{
      {"normalize", {0.12478354962115544, -0.49913419848462176, 0.8318903308077029, 0.20797258270192573, 0.5444655064804708, 0.03629770043203139, -0.2540839030242197, -0.7985494095046904, -0.27091418459143857, 0.6095569153307367, 0.0, 0.7450140076264561}},
      {"normalize_p1_dim0", {0.13636363636363635, -0.5454545454545454, 0.7407407407407407, 0.13157894736842105, 0.6818181818181818, 0.04545454545454546, -0.25925925925925924, -0.5789473684210527, -0.18181818181818182, 0.40909090909090906, 0.0, 0.2894736842105263}},
      {"cosine_similarity", {-0.183940808589339, -0.441461222011837, -0.6520040143470748}},
      {"pairwise_distance", {2.9563491674705813, 4.153310944295406, 2.504496695945914}},
      {"pairwise_distance_p1", {4.799998, 7.699997999999999, 4.35}},
      {"kl_div", {0.492365119990788, 0.35156715741174616, -0.18600855177112088, 0.21126505326945172, -0.15869825329295698, 0.02250946499328077, 1.2075279666242646, 0.26943590857657995, 0.6052303393258419, -0.11439717518422295, 0.2095543126956933, -0.140920439024976}},
      {"kl_div_batchmean", {0.9231436345381231}},
      {"kl_div_log_target", {0.4923651199907881, 0.3515671574117462, -0.1860085517711209, 0.21126505326945175, -0.15869825329295692, 0.02250946499328079, 1.2075279666242644, 0.26943590857657995, 0.6052303393258419, -0.11439717518422292, 0.20955431269569327, -0.14092043902497597}},
      {"poisson", {1.3498588075760032, 1.501194211912202, 1.3890560989306504, 0.6487212707001282, -3.0183109296619355, 1.1051709180756477, 1.1965853037914096, 4.510803158362334, 1.0703200460356395, -1.1403968888430502, 1.0, 0.8041660239464332}},
      {"poisson_full", {1.3498588075760032, 1.501194211912202, 3.153137642473707, 1.3005277553046641, 1.752536121930289, 1.1051709180756477, 1.1965853037914096, 5.16260964296687, 1.0703200460356395, 2.01686626940113, 1.0, 1.4559725085509692}},
      {"poisson_nolog", {0.3, 1.0176784348727121, -0.07944155667983566, 1.8862943211198908, -0.5273255738741551, 0.1, 1.0566749296530182, 0.6230852701805507, 1.3162907068741554, 1.3214420181868607, 0.0, 0.9093796222095323}},
      {"gaussian", {0.1434264097200273, 0.9078274450636439, 1.9090735902799727, 19993.09224472101, 4.798013597837032, 0.2195419643933091, 2.456065887387415, 1.8101453659370776, 0.5, 2.678805385173491, -0.6484689562170501, 0.7529205214503382}},
      {"gaussian_full_var_col", {1.0623649429247, 2.5323649429246995, 6.8223649429247, 0.6123649429247, 5.716952131041705, 1.1336187977083716, 11.583618797708368, 11.583618797708372, 1.4189385332046727, 2.9189385332046727, 0.9501885332046727, 1.5239385332046727}},
      {"margin_ranking", {1.0, 0.0, 0.0, 0.10000000000000003}},
      {"hinge", {0.3, 2.0, 2.0, 0.30000000000000004, 0.0, 0.7000000000000001, -0.7, -2.2, -0.4, 0.9, 0.8, 1.1}},
      {"soft_margin", {0.5543552444685271, 0.2632824673380312, 0.1269280110429725, 0.9740769841801067, 1.7014132779827524, 0.744396660073571, 1.103186048885458, 2.305083319768696, 0.9130152523999526, 0.3411538747320878, 0.6931471805599453, 0.2873353251154308}},
      {"multilabel_soft_margin", {0.5296152922115457, 1.51172073558533, 0.557307979314883}},
      {"cosine_embedding", {1.1839408085892713, 0.0, 0.0}},
      {"triplet", {1.6304080246202295, 1.0986847963005006, 1.1170289998285399}},
      {"triplet_p1_swap", {2.4999960000000003, 4.599997999999999, 2.2000019999999996}},
      {"multi_margin", {0.0, 0.0, 0.19999999999999998}},
      {"multi_margin_p2_w", {0.0, 0.0, 0.02249999999999999}},
  };
  // clang-format on
  return v;
}

NDArray m34(std::vector<double> v) { return NDArray::from<double>(v, {3, 4}); }
const NDArray A = m34({0.3, -1.2, 2.0, 0.5, 1.5, 0.1, -0.7, -2.2, -0.4, 0.9, 0.0, 1.1});
const NDArray B = m34({1.0, 0.2, -0.5, 0.7, -0.3, 0.8, 1.9, 0.4, 0.6, -1.1, 0.25, 0.0});
const NDArray C = m34({-0.2, 0.4, 1.2, -0.9, 0.7, -0.5, 0.3, 1.6, 1.3, 0.2, -1.4, 0.5});
const NDArray PM = m34({1, -1, 1, -1, -1, -1, 1, 1, 1, 1, -1, 1});
const NDArray COUNTS = m34({0, 1, 3, 2, 5, 0, 1, 2, 1, 4, 0, 2});
const NDArray VAR = m34({0.5, 1.2, 2.0, 1e-8, 0.3, 0.9, 1.5, 2.5, 1.0, 0.7, 0.2, 0.6});

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

/// fn on the given inputs (float64 placeholders), run.
std::vector<double> run(const Fn& fn, const std::vector<NDArray>& in) {
  Graph g;
  std::vector<Tensor> ph;
  Feeds feeds;
  for (size_t i = 0; i < in.size(); ++i) {
    ph.push_back(g.placeholder("in" + std::to_string(i), in[i].shape(), in[i].dtype()));
    feeds.push_back({ph.back(), in[i]});
  }
  return Session(g).run({fn(ph)}, feeds)[0].to_vector<double>();
}

void check_values(const std::string& name, const std::vector<double>& got) {
  CAPTURE(name);
  const std::vector<double>& want = torch_values().at(name);
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-13).scale(1e-300));
}

NDArray softmax_rows(const NDArray& x, bool log_of) {
  std::vector<double> v = x.to_vector<double>(), out(v.size());
  for (size_t r = 0; r < 3; ++r) {
    double total = 0;
    for (size_t c = 0; c < 4; ++c) total += std::exp(v[4 * r + c]);
    for (size_t c = 0; c < 4; ++c)
      out[4 * r + c] = log_of ? v[4 * r + c] - std::log(total) : std::exp(v[4 * r + c]) / total;
  }
  return m34(out);
}

}  // namespace

TEST_SUITE("frontend/losses") {
  TEST_CASE("distances and losses equal PyTorch's F.* in float64") {
    using R = nn::Reduction;
    check_values("normalize", run([](auto& in) { return nn::normalize(in[0]); }, {A}));
    check_values("normalize_p1_dim0", run([](auto& in) { return nn::normalize(in[0], 1, 0); }, {A}));
    check_values("cosine_similarity", run([](auto& in) { return nn::cosine_similarity(in[0], in[1]); }, {A, B}));
    check_values("pairwise_distance", run([](auto& in) { return nn::pairwise_distance(in[0], in[1]); }, {A, B}));
    check_values("pairwise_distance_p1", run([](auto& in) { return nn::pairwise_distance(in[0], in[1], 1); }, {A, B}));
    const NDArray logp = softmax_rows(A, true), q = softmax_rows(B, false), logq = softmax_rows(B, true);
    check_values("kl_div", run([](auto& in) { return nn::kl_div(in[0], in[1], R::none); }, {logp, q}));
    check_values("kl_div_batchmean", run([](auto& in) { return nn::kl_div(in[0], in[1], R::batchmean); }, {logp, q}));
    check_values("kl_div_log_target",
                 run([](auto& in) { return nn::kl_div(in[0], in[1], R::none, true); }, {logp, logq}));
    check_values("poisson",
                 run([](auto& in) { return nn::poisson_nll_loss(in[0], in[1], {.reduction = R::none}); }, {A, COUNTS}));
    check_values("poisson_full",
                 run([](auto& in) { return nn::poisson_nll_loss(in[0], in[1], {.full = true, .reduction = R::none}); },
                     {A, COUNTS}));
    NDArray abs_a = m34(A.to_vector<double>());
    for (int64_t i = 0; i < 12; ++i) abs_a.data<double>()[i] = std::fabs(abs_a.data<double>()[i]);
    check_values(
        "poisson_nolog",
        run([](auto& in) { return nn::poisson_nll_loss(in[0], in[1], {.log_input = false, .reduction = R::none}); },
            {abs_a, COUNTS}));
    check_values(
        "gaussian",
        run([](auto& in) { return nn::gaussian_nll_loss(in[0], in[1], in[2], {.reduction = R::none}); }, {A, B, VAR}));
    const NDArray var_column = NDArray::from<double>({0.5, 0.3, 1.0}, {3, 1});
    check_values(
        "gaussian_full_var_col",
        run([](auto& in) { return nn::gaussian_nll_loss(in[0], in[1], in[2], {.full = true, .reduction = R::none}); },
            {A, B, var_column}));
    const NDArray a0 = NDArray::from<double>({0.3, -1.2, 2.0, 0.5}, {4}),
                  b0 = NDArray::from<double>({1.0, 0.2, -0.5, 0.7}, {4}),
                  y0 = NDArray::from<double>({1, -1, 1, -1}, {4});
    check_values(
        "margin_ranking",
        run([](auto& in) { return nn::margin_ranking_loss(in[0], in[1], in[2], 0.3, R::none); }, {a0, b0, y0}));
    check_values("hinge", run([](auto& in) { return nn::hinge_embedding_loss(in[0], in[1], 0.8, R::none); }, {A, PM}));
    check_values("soft_margin", run([](auto& in) { return nn::soft_margin_loss(in[0], in[1], R::none); }, {A, PM}));
    NDArray labels01 = m34(PM.to_vector<double>());
    for (int64_t i = 0; i < 12; ++i) labels01.data<double>()[i] = (labels01.data<double>()[i] + 1) / 2;
    const NDArray class_weight = NDArray::from<double>({1, 2, 0.5, 1}, {4});
    check_values("multilabel_soft_margin",
                 run([](auto& in) { return nn::multilabel_soft_margin_loss(in[0], in[1], in[2], R::none); },
                     {A, labels01, class_weight}));
    check_values("cosine_embedding",
                 run([](auto& in) { return nn::cosine_embedding_loss(in[0], in[1], in[2], 0.1, R::none); },
                     {A, B, NDArray::from<double>({1, -1, -1}, {3})}));
    check_values(
        "triplet",
        run([](auto& in) { return nn::triplet_margin_loss(in[0], in[1], in[2], {.reduction = R::none}); }, {A, B, C}));
    check_values("triplet_p1_swap", run(
                                        [](auto& in) {
                                          return nn::triplet_margin_loss(
                                              in[0], in[1], in[2],
                                              {.margin = 2, .p = 1, .swap = true, .reduction = R::none});
                                        },
                                        {A, B, C}));
    const NDArray labels = NDArray::from<int64_t>({2, 0, 3}, {3});
    check_values(
        "multi_margin",
        run([](auto& in) { return nn::multi_margin_loss(in[0], in[1], {.reduction = R::none}); }, {A, labels}));
    check_values("multi_margin_p2_w", run(
                                          [](auto& in) {
                                            return nn::multi_margin_loss(
                                                in[0], in[1],
                                                {.p = 2, .margin = 0.5, .weight = in[2], .reduction = R::none});
                                          },
                                          {A, labels, class_weight}));
    // The reductions: mean over every element (kl_div's default too), sum.
    const std::vector<double>& hinge = torch_values().at("hinge");
    const double total = std::accumulate(hinge.begin(), hinge.end(), 0.0);
    CHECK(run([](auto& in) { return nn::hinge_embedding_loss(in[0], in[1], 0.8); }, {A, PM})[0] ==
          doctest::Approx(total / 12).epsilon(1e-14));
    CHECK(run([](auto& in) { return nn::hinge_embedding_loss(in[0], in[1], 0.8, R::sum); }, {A, PM})[0] ==
          doctest::Approx(total).epsilon(1e-14));
    const std::vector<double>& kl = torch_values().at("kl_div");
    CHECK(run([](auto& in) { return nn::kl_div(in[0], in[1]); }, {logp, q})[0] ==
          doctest::Approx(std::accumulate(kl.begin(), kl.end(), 0.0) / 12).epsilon(1e-14));
  }

  TEST_CASE("their gradients against central differences (float64)") {
    const NDArray labels = NDArray::from<int64_t>({2, 0, 3}, {3});
    struct Case {
      const char* name;
      Fn fn;
      std::vector<NDArray> in;
      std::vector<int> wrt;
    };
    const NDArray var_ok = m34({0.5, 1.2, 2.0, 0.8, 0.3, 0.9, 1.5, 2.5, 1.0, 0.7, 0.2, 0.6});
    const std::vector<Case> cases{
        {"normalize", [](auto& in) { return nn::normalize(in[0], 3, 1); }, {A}, {0}},
        {"cosine_similarity", [](auto& in) { return nn::cosine_similarity(in[0], in[1]); }, {A, B}, {0, 1}},
        {"pairwise_distance", [](auto& in) { return nn::pairwise_distance(in[0], in[1]); }, {A, B}, {0, 1}},
        {"kl_div",
         [](auto& in) { return nn::kl_div(in[0], in[1], nn::Reduction::batchmean); },
         {softmax_rows(A, true), softmax_rows(B, false)},
         {0, 1}},
        {"poisson_nll_loss",
         [](auto& in) { return nn::poisson_nll_loss(in[0], in[1], {.full = true}); },
         {A, COUNTS},
         {0}},
        {"gaussian_nll_loss",
         [](auto& in) { return nn::gaussian_nll_loss(in[0], in[1], in[2]); },
         {A, B, var_ok},
         {0, 1, 2}},
        {"soft_margin_loss", [](auto& in) { return nn::soft_margin_loss(in[0], in[1]); }, {A, PM}, {0}},
        {"multilabel_soft_margin_loss",
         [](auto& in) { return nn::multilabel_soft_margin_loss(in[0], in[1]); },
         {A, m34({1, 0, 1, 0, 0, 0, 1, 1, 1, 1, 0, 1})},
         {0}},
        {"cosine_embedding_loss",
         [](auto& in) { return nn::cosine_embedding_loss(in[0], in[1], in[2], -0.9); },
         {A, B, NDArray::from<double>({1, -1, -1}, {3})},
         {0, 1}},
        {"triplet_margin_loss",
         [](auto& in) { return nn::triplet_margin_loss(in[0], in[1], in[2], {.margin = 5, .swap = true}); },
         {A, B, C},
         {0, 1, 2}},
        {"multi_margin_loss",
         [](auto& in) { return nn::multi_margin_loss(in[0], in[1], {.p = 2, .margin = 3}); },
         {A, labels},
         {0}},
    };
    for (const Case& c : cases) {
      CAPTURE(std::string(c.name));
      Fn fn = c.fn;
      CheckResult r =
          check_gradient_fn([fn](const std::vector<Tensor>& in) { return std::vector<Tensor>{fn(in)}; }, c.in, c.wrt);
      CHECK_MESSAGE(r.ok, r.detail);
    }
    // Zero vectors: 0, as PyTorch; normalize's gradient there is 1 / eps and cosine_similarity's 0, as PyTorch's.
    Graph g;
    Tensor z = g.placeholder("z", {2, 3}, float64);
    Tensor n = nn::normalize(z), cs = nn::cosine_similarity(z, z);
    Tensor dn = gradients(sum(n), {z})[0], dcs = gradients(sum(cs), {z})[0];
    const auto r = Session(g).run({n, cs, dn, dcs}, {{z, NDArray::zeros({2, 3}, float64)}});
    for (size_t i : {0, 1, 3})
      for (double e : r[i].to_vector<double>()) CHECK(e == 0);
    for (double e : r[2].to_vector<double>()) CHECK(e == doctest::Approx(1e12));
  }

  TEST_CASE("errors name the loss and what was expected") {
    Graph g;
    Tensor x = g.placeholder("x", {3, 4}, float64), y = g.placeholder("y", {3, 4}, float64);
    Tensor v = g.placeholder("v", {4, 3}, float64), l = g.placeholder("labels", {3}, int64);
    using test::error_of;
    CHECK(test::contains(error_of([&] { nn::hinge_embedding_loss(x, y, 1, nn::Reduction::batchmean); }),
                         "hinge_embedding_loss: batchmean is kl_div's reduction"));
    CHECK(test::contains(error_of([&] { nn::gaussian_nll_loss(x, y, v); }),
                         "gaussian_nll_loss: var [4,3] must be shaped as input [3,4]"));
    CHECK(test::contains(error_of([&] { nn::multi_margin_loss(x, l, {.p = 3}); }),
                         "multi_margin_loss: p must be 1 or 2"));
    CHECK(test::contains(error_of([&] { nn::multi_margin_loss(x, y); }), "multi_margin_loss: labels must be integers"));
    CHECK(
        test::contains(error_of([&] { nn::cosine_embedding_loss(x, y, y); }), "cosine_embedding_loss: y must be [N]"));
    CHECK(test::contains(error_of([&] { nn::margin_ranking_loss(x, v, y); }), "margin_ranking_loss: input 'x' [3,4] and target 'v' [4,3] differ"));
    CHECK(test::contains(error_of([&] { nn::pairwise_distance(x, y, -1); }), "pairwise_distance: p must be positive"));
    CHECK(test::contains(error_of([&] { nn::kl_div(x, l); }), "kl_div: input 'x' and target 'labels' must share"));
    // A label outside [0, C) is named when the graph runs.
    Tensor loss = nn::multi_margin_loss(x, l);
    Session s(g);
    CHECK(test::contains(error_of([&] { s.run({loss}, {{x, A}, {l, NDArray::from<int64_t>({1, 4, 0}, {3})}}); }), "4"));
    // A negative variance too, as PyTorch's; a NaN one passes into the loss, as in PyTorch.
    Tensor var = g.placeholder("var", {3}, float64);
    Tensor nll = nn::gaussian_nll_loss(x, y, var, {.reduction = nn::Reduction::none});
    const Feeds ok{{x, A}, {y, A}, {var, NDArray::from<double>({1, 0, 2}, {3})}};
    CHECK(test::contains(error_of([&] {
                           s.run({nll}, {{x, A}, {y, A}, {var, NDArray::from<double>({1, -0.5, 2}, {3})}});
                         }),
                         "element 1 is outside [0, inf] (expected variances)"));
    CHECK(s.run({nll}, ok)[0].shape() == Shape{3, 4});
    const NDArray with_nan = s.run({nll}, {{x, A}, {y, A}, {var, NDArray::from<double>({1, NAN, 2}, {3})}})[0];
    CHECK(std::isnan(with_nan.to_vector<double>()[4]));
    CHECK(std::isfinite(with_nan.to_vector<double>()[0]));
  }
}

TEST_SUITE("frontend/ctc") {
  TEST_CASE("ctc_loss equals PyTorch's F.ctc_loss: reductions, repeats, empty targets, blank, impossible alignments") {
    // Literal PyTorch 2.15 outputs (float64): logits [6, 3, 5] element i is 2 sin(0.37 i + 0.1), log_softmax'd.
    // clang-format off
#include "tests/frontend/ctc_tables.inc"
    // clang-format on
    const int64_t T = 6, N = 3, C = 5;
    std::vector<double> lv(size_t(T * N * C));
    for (size_t i = 0; i < lv.size(); ++i) lv[i] = 2 * std::sin(0.37 * double(i) + 0.1);
    Graph g;
    Tensor logits = g.placeholder("logits", {T, -1, C}, float64);
    Tensor lp = log_softmax(logits, -1);
    Tensor targets = g.placeholder("targets", {-1, 3}, int64), il = g.placeholder("il", {-1}, int64),
           tl = g.placeholder("tl", {-1}, int64);
    using R = nn::Reduction;
    const Tensor none = nn::ctc_loss(lp, targets, il, tl, {.reduction = R::none});
    const Tensor sum = nn::ctc_loss(lp, targets, il, tl, {.reduction = R::sum});
    const Tensor mean = nn::CTCLoss()(lp, targets, il, tl);
    const Tensor zero_inf = nn::ctc_loss(lp, targets, il, tl, {.reduction = R::none, .zero_infinity = true});
    const Tensor blank4 = nn::ctc_loss(lp, targets, il, tl, {.blank = 4, .reduction = R::none});
    const Tensor grad = gradients(mean, {logits})[0];
    Session s(g);
    auto feeds = [&](std::vector<int64_t> t, std::vector<int64_t> in, std::vector<int64_t> tgt) {
      return Feeds{{logits, NDArray::from<double>(lv, {T, N, C})},
                   {targets, NDArray::from<int64_t>(t, {N, 3})},
                   {il, NDArray::from<int64_t>(in, {N})},
                   {tl, NDArray::from<int64_t>(tgt, {N})}};
    };
    auto close = [](const NDArray& got, const std::vector<double>& want, double tol) {
      const std::vector<double> v = got.to_vector<double>();
      REQUIRE(v.size() == want.size());
      for (size_t i = 0; i < v.size(); ++i) {
        CAPTURE(i);
        if (std::isinf(want[i]))
          CHECK(v[i] == want[i]);
        else
          CHECK(v[i] == doctest::Approx(want[i]).epsilon(tol));
      }
    };
    const Feeds main = feeds({1, 1, 2, 3, 4, 0, 2, 0, 0}, {6, 4, 5}, {3, 2, 0});
    const std::vector<NDArray> out = s.run({none, sum, mean, grad}, main);
    close(out[0], kCtcNone, 1e-12);
    close(out[1], kCtcSum, 1e-12);
    close(out[2], kCtcMean, 1e-12);
    close(out[3], kCtcGrad, 1e-10);
    const Feeds hard = feeds({1, 1, 1, 2, 3, 2, 1, 2, 3}, {4, 6, 3}, {3, 3, 3});
    close(s.run1(none, hard), kCtcImpossible, 1e-12);
    close(s.run1(zero_inf, hard), kCtcZeroInf, 1e-12);
    close(s.run1(blank4, feeds({0, 1, 3, 2, 2, 0, 3, 3, 3}, {6, 4, 5}, {3, 2, 1})), kCtcBlank4, 1e-12);
    // Lengths and labels outside their ranges are errors when run; the session stays usable.
    CHECK(test::contains(test::error_of([&] {
                           s.run1(none, feeds({1, 1, 2, 3, 4, 0, 2, 0, 0}, {7, 4, 5}, {3, 2, 0}));
                         }),
                         "input_lengths in [0, 6]"));
    CHECK(test::contains(test::error_of([&] {
                           s.run1(none, feeds({1, 1, 2, 3, 4, 0, 2, 0, 0}, {6, 4, 5}, {4, 2, 0}));
                         }),
                         "target_lengths in [0, 3]"));
    CHECK(test::contains(test::error_of([&] {
                           s.run1(none, feeds({1, 9, 2, 3, 4, 0, 2, 0, 0}, {6, 4, 5}, {3, 2, 0}));
                         }),
                         "out of range"));
    close(s.run1(none, main), kCtcNone, 1e-12);
    CHECK(test::contains(test::error_of([&] { nn::ctc_loss(lp, targets, il, tl, {.blank = 5}); }),
                         "blank 5 out of range for 5 classes"));
    CHECK(test::contains(test::error_of([&] {
                           nn::ctc_loss(lp, g.placeholder("f", {-1, 3}), il, tl);
                         }),
                         "targets must be integers [N, S]"));
  }

  TEST_CASE("ctc_loss: float64 numeric gradients through the unrolled recursion") {
    const CheckResult r = check_gradient_fn(
        [](const std::vector<Tensor>& in) {
          Graph& g = in[0].graph();
          const Tensor lp = log_softmax(in[0], -1);
          return std::vector<Tensor>{nn::ctc_loss(lp, g.constant(NDArray::from<int64_t>({1, 2, 2, 1}, {2, 2})),
                                                  g.constant(NDArray::from<int64_t>({4, 3}, {2})),
                                                  g.constant(NDArray::from<int64_t>({2, 1}, {2})),
                                                  {.reduction = nn::Reduction::none})};
        },
        {test::rand({4, 2, 3}, 3, float64)}, {0});
    CHECK_MESSAGE(r.ok, r.detail);
  }
}

TEST_SUITE("frontend/multilabel_margin") {
  TEST_CASE("multilabel_margin_loss equals PyTorch's (targets up to the first negative; reductions; gradient)") {
    Graph g;
    Tensor x = g.placeholder("x", {2, 4}, float64), y = g.placeholder("y", {2, 4}, int64);
    Tensor x1 = g.placeholder("x1", {3}, float64), y1 = g.placeholder("y1", {3}, int64);
    using R = nn::Reduction;
    const Tensor none = nn::multilabel_margin_loss(x, y, R::none), mean = nn::multilabel_margin_loss(x, y);
    const Tensor total = nn::multilabel_margin_loss(x, y, R::sum), one = nn::multilabel_margin_loss(x1, y1, R::none);
    const Tensor dx = gradients(mean, {x})[0];
    Session s(g);
    // PyTorch 2.15: the 1 after row 0's -1 is not a target.
    const std::vector<NDArray> out = s.run(
        {none, mean, total, one, dx}, {{x, NDArray::from<double>({0.1, 0.2, 0.4, 0.8, 0.5, -0.3, 1.2, 0.05}, {2, 4})},
                                       {y, NDArray::from<int64_t>({3, 0, -1, 1, 1, 2, 3, -1}, {2, 4})},
                                       {x1, NDArray::from<double>({0.3, -0.7, 0.9}, {3})},
                                       {y1, NDArray::from<int64_t>({2, -1, 0}, {3})}});
    auto near = [](const NDArray& a, const std::vector<double>& want) {
      const std::vector<double> v = a.to_vector<double>();
      REQUIRE(v.size() == want.size());
      for (size_t i = 0; i < v.size(); ++i) CHECK(v[i] == doctest::Approx(want[i]).epsilon(1e-14));
    };
    near(out[0], {0.8500000000000001, 0.8875});
    near(out[1], {0.86875});
    near(out[2], {1.7375});
    near(out[3], {0.13333333333333333});
    near(out[4], {-0.25, 0.25, 0.25, -0.25, 0.375, -0.125, -0.125, -0.125});
    CHECK(test::contains(test::error_of([&] { nn::multilabel_margin_loss(x, x); }), "targets must be integers"));
  }
}
