// The engine against meta-gradients computed independently by autodiff in float64.
#include <gtest/gtest.h>

#include "vectors.hpp"

namespace ml2o {
namespace {

using testing::load_vector_case;
using testing::max_rel_error;

class UnrollVectors : public ::testing::TestWithParam<std::string> {};

TEST_P(UnrollVectors, MetaLossAndEveryWeightGradientMatch) {
  const auto c = load_vector_case(GetParam());
  const auto view = view_of(c.task);
  for (const char* setting : {"gradient_as_constant", "second_derivatives"}) {
    const auto mode = std::string(setting) == "gradient_as_constant" ? GradMode::gradient_constant
                                                                      : GradMode::second_derivatives;
    auto traj = c.start;
    const auto r = unroll_cpu(c.hyper, c.w, view, traj, c.T, mode);
    const auto& e = c.j.at("expected").at(setting);
    const double want_loss = e.at("meta_loss").get<double>();
    EXPECT_NEAR(r.meta_loss, want_loss, 1e-9 * std::abs(want_loss)) << setting;
    double worst = 0;
    for (const TensorInfo& t : tensor_table(c.hyper.arch)) {
      std::vector<double> got(r.grad.begin() + t.offset, r.grad.begin() + t.offset + t.size());
      const auto want = e.at("grad").at(t.name).get<std::vector<double>>();
      const double err = max_rel_error(got, want);
      worst = std::max(worst, err);
      EXPECT_LE(err, 1e-9) << setting << " tensor " << t.name;
    }
    std::cout << GetParam() << " " << setting << ": meta-loss relative error "
              << std::abs(r.meta_loss - want_loss) / std::abs(want_loss)
              << ", worst tensor gradient error " << worst << "\n";
    EXPECT_EQ(traj.k, c.k0 + c.T);
  }
}

INSTANTIATE_TEST_SUITE_P(
    ReferenceCases, UnrollVectors,
    ::testing::Values("rnnprop_lasso_N2_d10_T20", "rnnprop_lasso_N2_d3_T7_k0_41",
                      "rnnprop_lasso_N3_d4_T5", "rnnprop_quadratic_N2_d5_T8",
                      "rnnprop_rosenbrock_N4_T10", "dmlstm_lasso_N3_d4_T6"),
    [](const auto& info) { return info.param; });

}  // namespace
}  // namespace ml2o
