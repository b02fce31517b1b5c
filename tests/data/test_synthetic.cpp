#include <catch2/catch.hpp>

#include "support/helpers.hpp"

using namespace lightloop;

TEST_CASE("synthetic tasks are seeded and their targets match their labels", "[data]") {
    const auto a = make_spirals(50, 3, 1.0, 0.02, 4);
    const auto b = make_spirals(50, 3, 1.0, 0.02, 4);
    const auto blobs = make_blobs(40, 4, 2, 5, 0.3, 1, 2);
    CHECK(lightloop::testing::identical(a.inputs, b.inputs));
    REQUIRE(a.size() == 150);
    REQUIRE(blobs.inputs.shape(1) == 5);
    std::vector<std::size_t> per_class(4, 0);
    for (std::size_t r = 0; r < blobs.size(); ++r) {
        CHECK(argmax_row(blobs.targets, r) == blobs.labels[r]);
        ++per_class[blobs.labels[r]];
    }
    CHECK(per_class == std::vector<std::size_t>(4, 40));
    // Spiral points lie within radius 1 plus a few noise standard deviations.
    for (std::size_t r = 0; r < a.size(); ++r) {
        CHECK(std::hypot(a.inputs(r, 0), a.inputs(r, 1)) < 1.0 + 5 * 0.02 * 1.5);
    }
    CHECK_THROWS_AS(make_blobs(0, 4, 2, 5, 0.3, 1, 2), config_error);
}

TEST_CASE("gather_rows copies the requested rows and checks them", "[data]") {
    const matrix<float> m{{0, 1}, {2, 3}, {4, 5}};
    matrix<float> out;
    const std::vector<std::size_t> rows{2, 0};
    gather_rows(m, std::span<const std::size_t>(rows), out);
    CHECK(lightloop::testing::identical(out, matrix<float>{{4, 5}, {0, 1}}));
    const std::vector<std::size_t> bad{3};
    CHECK_THROWS_AS(gather_rows(m, std::span<const std::size_t>(bad), out), shape_error);
}

TEST_CASE("one_hot refuses labels outside the class range", "[data]") {
    const std::vector<int> labels{0, 3};
    CHECK_THROWS_WITH(one_hot<float>(std::span<const int>(labels), 3),
                      Catch::Contains("label 3 at row 1"));
    const std::vector<int> negative{-1};
    CHECK_THROWS_AS(one_hot<float>(std::span<const int>(negative), 3), config_error);
}
