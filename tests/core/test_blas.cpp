#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <type_traits>
#include <vector>

#include <xtensor/xmanipulation.hpp>

#include "support/helpers.hpp"
#include "support/xtensor_blas.hpp"

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
    // OpenBLAS's build configuration string names the kernel it chose at run time
    // (DYNAMIC_ARCH builds: "... DYNAMIC_ARCH ... Cooperlake MAX_THREADS=64").
    const blas_report report = blas_info();
    CHECK(report.core == blas_core_name());
    CHECK_THAT(report.config, Catch::Contains(" " + report.core + " "));
    CHECK(report.generic == is_generic_kernel(report.core));
    // The thread count set is the one OpenBLAS and lightloop then report.
    const std::size_t before = parallel_threads();
    set_blas_threads(3);
    CHECK(blas_info().threads == 3);
    CHECK(parallel_threads() == 3);
    set_blas_threads(static_cast<int>(before));
    CHECK(parallel_threads() == before);
    CHECK_THROWS_AS(set_blas_threads(0), config_error);
}

TEST_CASE("a thread count above what OpenBLAS runs is refused, and the count kept",
          "[core][blas]") {
    // Debian's OpenBLAS says MAX_THREADS=64 in its configuration; asked for
    // more, openblas_set_num_threads would quietly run that many.
    const int most = blas_max_threads();
    REQUIRE_THAT(blas_info().config, Catch::Contains("MAX_THREADS=" + std::to_string(most)));
    const std::size_t before = parallel_threads();
    set_blas_threads(2);
    CHECK_THROWS_WITH(set_blas_threads(most + 1),
                      Catch::StartsWith("lightloop::set_blas_threads: ") &&
                        Catch::Contains(std::to_string(most + 1) + " threads asked") &&
                        Catch::Contains("at most " + std::to_string(most)));
    CHECK(parallel_threads() == 2);
    CHECK(blas_info().threads == 2);
    // The check alone, as a program runs it on its thread counts up front.
    CHECK_NOTHROW(require_blas_threads(most));
    CHECK_THROWS_AS(require_blas_threads(most + 1), config_error);
    // Each names the function called.
    CHECK_THROWS_WITH(require_blas_threads(0),
                      "lightloop::require_blas_threads: thread count must be >= 1, got 0");
    CHECK(parallel_threads() == 2);
    set_blas_threads(static_cast<int>(before));
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
    trapped.below_cpu = true;
    CHECK(should_reexec(trapped, false, false, false));
    CHECK_FALSE(should_reexec(trapped, true, false, false)); // the user chose a core type
    CHECK_FALSE(should_reexec(trapped, false, true, false)); // LIGHTLOOP_NO_REEXEC
    CHECK_FALSE(should_reexec(trapped, false, false, true)); // already re-executed once
    REQUIRE(blas_warning(trapped).has_value());
    CHECK_THAT(*blas_warning(trapped), Catch::Contains("OPENBLAS_CORETYPE=SkylakeX"));

    // An AVX2 kernel (an OpenBLAS older than the CPU, or OPENBLAS_CORETYPE in
    // the environment): below an AVX-512 CPU, not below an AVX2 one.
    CHECK(kernel_below_cpu("Prescott", {.avx2 = true}));
    CHECK_FALSE(kernel_below_cpu("Prescott", {}));
    CHECK(kernel_below_cpu("Haswell", {.avx2 = true, .avx512 = true}));
    CHECK(kernel_below_cpu("Zen", {.avx2 = true, .avx512 = true}));
    CHECK_FALSE(kernel_below_cpu("Haswell", {.avx2 = true}));
    CHECK_FALSE(kernel_below_cpu("SkylakeX", {.avx2 = true, .avx512 = true}));
    CHECK_FALSE(kernel_below_cpu("Cooperlake", {.avx2 = true, .avx512 = true}));
    CHECK(is_avx512_kernel("SapphireRapids"));
    CHECK_FALSE(is_avx512_kernel("Haswell"));
    blas_report avx2_kernel;
    avx2_kernel.core = "Haswell";
    avx2_kernel.cpu = {.avx2 = true, .avx512 = true};
    avx2_kernel.recommended = "SkylakeX";
    avx2_kernel.below_cpu = true;
    CHECK(should_reexec(avx2_kernel, false, false, false));
    REQUIRE(blas_warning(avx2_kernel).has_value());
    CHECK_THAT(
      *blas_warning(avx2_kernel),
      Catch::Contains("'Haswell' kernel on a CPU with AVX-512; set OPENBLAS_CORETYPE=SkylakeX"));

    // This machine's own report is consistent with its CPU.
    const auto here = blas_info();
    CHECK_FALSE(here.core.empty());
    CHECK(here.generic == (is_generic_kernel(here.core) && !here.recommended.empty()));
    CHECK(here.below_cpu == kernel_below_cpu(here.core, here.cpu));
    CHECK(here.thread_invariant_bits == is_avx512_kernel(here.core));
    CHECK(blas_warning(here).has_value() == here.below_cpu);
}

namespace {
// C = 0.5 op(A) op(B) + 2 C with A and B stored inside wider arrays (leading
// dimensions past their widths), on `threads` threads.
template <class T>
matrix<T> strided_gemm(bool ta, bool tb, std::size_t m, std::size_t n, std::size_t k, int threads) {
    const std::size_t a_rows = ta ? k : m;
    const std::size_t a_cols = ta ? m : k;
    const std::size_t b_rows = tb ? n : k;
    const std::size_t b_cols = tb ? k : n;
    const auto a = random_matrix<T>(a_rows, a_cols + 5, 11);
    const auto b = random_matrix<T>(b_rows, b_cols + 3, 12);
    auto c = random_matrix<T>(m, n + 7, 13);
    set_blas_threads(threads);
    gemm(ta ? transpose::yes : transpose::no, tb ? transpose::yes : transpose::no, m, n, k, T(0.5),
         a.data(), a_cols + 5, b.data(), b_cols + 3, T(2), c.data(), n + 7);
    set_blas_threads(1);
    return c;
}

/// The largest error of strided_gemm's C against its product in double,
/// over all of C's columns: the padding past n must still hold C's own
/// values (beta applied once, nothing written past the product).
template <class T>
double strided_gemm_error(const matrix<T>& c, bool ta, bool tb, std::size_t m, std::size_t n,
                          std::size_t k) {
    const auto a = random_matrix<T>(ta ? k : m, (ta ? m : k) + 5, 11);
    const auto b = random_matrix<T>(tb ? n : k, (tb ? k : n) + 3, 12);
    const auto c0 = random_matrix<T>(m, n + 7, 13);
    double worst = 0;
    for (std::size_t i = 0; i < m; ++i) {
        for (std::size_t j = 0; j < n + 7; ++j) {
            double expected = static_cast<double>(c0(i, j));
            if (j < n) {
                double sum = 0;
                for (std::size_t p = 0; p < k; ++p) {
                    sum += static_cast<double>(ta ? a(p, i) : a(i, p)) *
                           static_cast<double>(tb ? b(j, p) : b(p, j));
                }
                expected = 0.5 * sum + 2.0 * expected;
            }
            worst = std::max(worst, std::abs(static_cast<double>(c(i, j)) - expected));
        }
    }
    return worst;
}
} // namespace

TEMPLATE_TEST_CASE("gemm spread over threads computes the product, by rows and by columns",
                   "[core][blas]", float, double) {
    // 300 x 257 x 200 (15M multiply-adds) splits into three pieces of
    // rows, 100 x 333 x 260 into two of columns; neither extent is a multiple
    // of 16, and the operands sit inside wider arrays.
    struct shape {
        std::size_t m, n, k;
    };
    for (const shape s : {shape{300, 257, 200}, shape{100, 333, 260}}) {
        for (const bool ta : {false, true}) {
            for (const bool tb : {false, true}) {
                for (const int threads : {1, 2, 3}) {
                    CAPTURE(s.m, s.n, s.k, ta, tb, threads);
                    const auto c = strided_gemm<TestType>(ta, tb, s.m, s.n, s.k, threads);
                    // Each piece applied beta to its own part of C, once, and
                    // left the padding columns alone. k <= 260 products of
                    // unit normals: float rounding ~1e-4.
                    CHECK(strided_gemm_error(c, ta, tb, s.m, s.n, s.k) <
                          (std::is_same_v<TestType, float> ? 1e-3 : 1e-10));
                }
            }
        }
    }
    CHECK(parallel_threads() == 1);
}

namespace {
/// On OpenBLAS's AVX-512 kernels a product cut on multiples of 16 has one
/// thread's bits: equal. Its AVX2 kernels sum some elements next to a cut in
/// another order: there, equal to float rounding of k <= 200 products of
/// unit normals (as "gemm spread over threads computes the product" bounds
/// the product itself).
template <class T>
void check_one_threads_bits(const matrix<T>& one, const matrix<T>& pieces) {
    if (blas_info().thread_invariant_bits) {
        CHECK(std::equal(one.begin(), one.end(), pieces.begin()));
    } else {
        CHECK(max_abs_diff(one, pieces) < (std::is_same_v<T, float> ? 1e-3 : 1e-10));
    }
}
} // namespace

TEMPLATE_TEST_CASE("gemm gives one thread's bits on any thread count when the cut is whole tiles",
                   "[core][blas]", float, double) {
    // Widths that are multiples of 16, like the paper's layers: every piece
    // is whole kernel tiles, and each element's k sum is one thread's.
    for (const bool ta : {false, true}) {
        for (const bool tb : {false, true}) {
            CAPTURE(ta, tb, blas_core_name());
            const auto one = strided_gemm<TestType>(ta, tb, 320, 256, 200, 1);
            for (const int threads : {2, 3}) {
                const auto by_rows = strided_gemm<TestType>(ta, tb, 320, 256, 200, threads);
                const auto by_columns = strided_gemm<TestType>(ta, tb, 256, 320, 200, threads);
                const auto one_columns = strided_gemm<TestType>(ta, tb, 256, 320, 200, 1);
                check_one_threads_bits(one, by_rows);
                check_one_threads_bits(one_columns, by_columns);
            }
        }
    }
}

TEST_CASE("a product with a short k is cut for its output, never below the small kernels' size",
          "[core][blas]") {
    set_blas_threads(2);
    const auto cut = [](std::size_t m, std::size_t n, std::size_t k) {
        std::vector<std::size_t> macs;
        std::mutex lock;
        // Real operands: the pieces point into them (nothing is multiplied).
        const std::vector<float> a(m * k);
        const std::vector<float> b(k * n);
        std::vector<float> c(m * n);
        detail::gemm_on_team(
          transpose::no, transpose::no, m, n, k, a.data(), k, b.data(), n, c.data(), n, 2, 0, 0,
          [&](std::size_t rows, std::size_t cols, const float*, const float*, float*) {
              const std::lock_guard<std::mutex> hold(lock);
              macs.push_back(rows * cols * k);
          });
        std::sort(macs.begin(), macs.end());
        return macs;
    };
    // The cut of a backend that takes short products through gemm_on_team
    // (oneDNN's bf16 products; lightloop's gemm runs them as short_product).
    // DFA's projection of ten classes onto two 1024-wide layers: 2.6M
    // multiply-adds, below gemm_piece_macs, but 262144 outputs to write.
    const auto projection = cut(128, 2048, 10);
    REQUIRE(projection.size() == 2);
    CHECK(projection[0] == 128 * 1024 * 10);
    // Cut any finer and a piece would fall to OpenBLAS's small kernels
    // (at most 10^6 multiply-adds), whose sums round differently.
    const auto narrow = cut(128, 1600, 10); // 2.05M: two pieces would be 1.02M and 1.02M
    for (const std::size_t piece : narrow) {
        CHECK(static_cast<double>(piece) > detail::small_kernel_macs);
    }
    // 1.95M multiply-adds and 243200 outputs, worth two pieces, but the
    // second would hold 0.96M: one.
    CHECK(cut(128, 1900, 8).size() == 1);
    CHECK(cut(64, 64, 10).size() == 1);
    set_blas_threads(1);
    shared_team();
}

TEMPLATE_TEST_CASE("a product at most 16 deep is each entry's own chain, the same bits on any "
                   "thread count",
                   "[core][blas]", float, double) {
    // short_product, not OpenBLAS: DFA's projection (128 x 2048 x 10), a
    // shape with partial tiles in both directions and more than one tile of
    // rows (300 x 257 x 16, the deepest), one row (1 x 1000 x 3) and a
    // single multiply-add deep (70 x 33 x 1), every transpose, the operands
    // inside wider arrays (strided_gemm: C = 0.5 op(A) op(B) + 2 C).
    struct shape {
        std::size_t m, n, k;
    };
    for (const shape s :
         {shape{128, 2048, 10}, shape{300, 257, 16}, shape{1, 1000, 3}, shape{70, 33, 1}}) {
        for (const bool ta : {false, true}) {
            for (const bool tb : {false, true}) {
                CAPTURE(s.m, s.n, s.k, ta, tb);
                const auto one = strided_gemm<TestType>(ta, tb, s.m, s.n, s.k, 1);
                // At most 16 products of unit normals, and C's padding untouched.
                CHECK(strided_gemm_error(one, ta, tb, s.m, s.n, s.k) <
                      (std::is_same_v<TestType, float> ? 1e-5 : 1e-13));
                for (const int threads : {2, 3}) {
                    const auto many = strided_gemm<TestType>(ta, tb, s.m, s.n, s.k, threads);
                    CHECK(std::equal(one.begin(), one.end(), many.begin()));
                }
            }
        }
    }
    // beta = 0 does not read C (as BLAS): NaNs there are overwritten.
    set_blas_threads(2);
    const auto a = random_matrix<TestType>(128, 10, 21);
    const auto b = random_matrix<TestType>(2048, 10, 22);
    matrix<TestType> c({128, 2048}, std::numeric_limits<TestType>::quiet_NaN());
    gemm(TestType(1), a, transpose::no, b, transpose::yes, TestType(0), c);
    CHECK(max_abs_diff(c, naive_product(a, false, b, true)) <
          (std::is_same_v<TestType, float> ? 1e-5 : 1e-13));
    set_blas_threads(1);
}

TEST_CASE("a GEMM holds OpenBLAS at one thread and gives its count back", "[core][blas]") {
    set_blas_threads(2);
    {
        const blas_single_thread hold;
        CHECK(openblas_get_num_threads() == 1);
        CHECK(parallel_threads() == 2); // the team keeps its size
        {
            const blas_single_thread nested;
            CHECK(openblas_get_num_threads() == 1);
        }
        CHECK(openblas_get_num_threads() == 1); // still held by the outer one
        set_blas_threads(3);                    // applies when the hold ends
        CHECK(parallel_threads() == 3);
        CHECK(openblas_get_num_threads() == 1);
    }
    CHECK(openblas_get_num_threads() == 3);
    CHECK(parallel_threads() == 3);

    // GEMMs issued from inside the team's tasks, several at once, each
    // holding OpenBLAS: right products, and the count restored after.
    const auto a = random_matrix<float>(256, 200, 1);
    const auto b = random_matrix<float>(200, 300, 2);
    auto expected = matrix<float>::from_shape({256, 300});
    set_blas_threads(1);
    gemm(1.0f, a, transpose::no, b, transpose::no, 0.0f, expected);
    set_blas_threads(3);
    std::vector<matrix<float>> results(6, matrix<float>::from_shape({256, 300}));
    shared_team().run(results.size(), [&](std::size_t task, std::size_t) {
        gemm(1.0f, a, transpose::no, b, transpose::no, 0.0f, results[task]);
    });
    for (const auto& r : results) {
        check_one_threads_bits(expected, r);
    }
    CHECK(openblas_get_num_threads() == 3);
    set_blas_threads(1);
    shared_team();
}

TEST_CASE("gemm cut into pieces on two threads agrees with xtensor-blas's dot", "[core][blas]") {
    // The first layer's forward product at the paper's shapes (128 x 784 by
    // (1024 x 784)^T: 103M multiply-adds, cut into pieces of C's columns on two
    // threads) against xt::linalg::dot, the xtensor-blas product that makes its
    // own temporaries and one whole BLAS call. Sums of 784 products of
    // N(0, 1) values: float rounding of about 1e-6 relative to sqrt(784) = 28.
    const std::size_t before = parallel_threads();
    set_blas_threads(2);
    const auto x = random_matrix<float>(128, 784, 11);
    const auto w = random_matrix<float>(1024, 784, 12);
    auto c = matrix<float>::from_shape({128, 1024});
    gemm(1.0f, x, transpose::no, w, transpose::yes, 0.0f, c);
    const xt::xtensor<float, 2> reference = xt::linalg::dot(x, xt::transpose(w));
    CHECK(max_abs_diff(c, reference) < 28 * 1e-5);
    set_blas_threads(static_cast<int>(before));
}
