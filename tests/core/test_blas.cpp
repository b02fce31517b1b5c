#include <catch2/catch.hpp>

#include "support/helpers.hpp"

using namespace lightloop;
using lightloop::testing::max_abs_diff;
using lightloop::testing::naive_product;
using lightloop::testing::random_matrix;

TEMPLATE_TEST_CASE("gemm matches the textbook product for every transpose", "[core][blas]", float,
                   double) {
    const std::size_t m = 7;
    const std::size_t k = 5;
    const std::size_t n = 3;
    for (const bool ta : {false, true}) {
        for (const bool tb : {false, true}) {
            CAPTURE(ta, tb);
            const auto a = ta ? random_matrix<TestType>(k, m, 1) : random_matrix<TestType>(m, k, 1);
            const auto b = tb ? random_matrix<TestType>(n, k, 2) : random_matrix<TestType>(k, n, 2);
            auto c = random_matrix<TestType>(m, n, 3);
            const auto c0 = c;
            const TestType alpha = TestType(0.5);
            const TestType beta = TestType(2);
            gemm(alpha, a, ta ? transpose::yes : transpose::no, b,
                 tb ? transpose::yes : transpose::no, beta, c);
            auto expected = naive_product(a, ta, b, tb);
            for (std::size_t i = 0; i < m; ++i) {
                for (std::size_t j = 0; j < n; ++j) {
                    expected(i, j) = 0.5 * expected(i, j) + 2.0 * static_cast<double>(c0(i, j));
                }
            }
            // float: k = 5 products of O(1) values, rounding ~1e-6 each.
            const double tolerance = std::is_same_v<TestType, float> ? 1e-5 : 1e-13;
            CHECK(max_abs_diff(c, expected) < tolerance);
        }
    }
}

TEST_CASE("gemm refuses mismatched shapes and names them", "[core][blas]") {
    const auto a = random_matrix<float>(4, 3, 1);
    const auto b = random_matrix<float>(4, 2, 2);
    auto c = matrix<float>::from_shape({4, 2});
    CHECK_THROWS_AS(gemm(1.0f, a, transpose::no, b, transpose::no, 0.0f, c), shape_error);
    CHECK_THROWS_WITH(gemm(1.0f, a, transpose::no, b, transpose::no, 0.0f, c),
                      Catch::Contains("op(A) is 4x3") && Catch::Contains("op(B) is 4x2"));
}

TEST_CASE("the BLAS reports its kernel and accepts a thread count", "[core][blas]") {
    CHECK_FALSE(blas_core_name().empty());
    CHECK_THROWS_AS(set_blas_threads(0), config_error);
}

TEST_CASE("the OpenBLAS kernel trap is recognised and its remedy chosen", "[core][blas]") {
    CHECK(is_generic_kernel("Prescott"));
    CHECK_FALSE(is_generic_kernel("SkylakeX"));
    CHECK_FALSE(is_generic_kernel("Haswell"));
    CHECK(recommended_coretype({.avx2 = true, .avx512 = true}) == "SkylakeX");
    CHECK(recommended_coretype({.avx2 = true, .avx512 = false}) == "Haswell");
    CHECK(recommended_coretype({}).empty());

    blas_report trapped;
    trapped.core = "Prescott";
    trapped.cpu = {.avx2 = true, .avx512 = true};
    trapped.recommended = "SkylakeX";
    trapped.generic = true;
    CHECK(should_reexec(trapped, false, false, false));
    CHECK_FALSE(should_reexec(trapped, true, false, false)); // the user chose a core type
    CHECK_FALSE(should_reexec(trapped, false, true, false)); // LIGHTLOOP_NO_REEXEC
    CHECK_FALSE(should_reexec(trapped, false, false, true)); // already re-executed once
    REQUIRE(blas_warning(trapped).has_value());
    CHECK_THAT(*blas_warning(trapped), Catch::Contains("OPENBLAS_CORETYPE=SkylakeX"));

    // This machine's own report is consistent with its CPU.
    const auto here = blas_info();
    CHECK_FALSE(here.core.empty());
    CHECK(here.generic == (is_generic_kernel(here.core) && !here.recommended.empty()));
    CHECK(blas_warning(here).has_value() == here.generic);
}
