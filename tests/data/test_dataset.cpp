#include <catch2/catch.hpp>

#include <algorithm>
#include <set>

#include "support/helpers.hpp"

using namespace lightloop;

TEST_CASE("the batch sampler serves every sample once per epoch, reproducibly", "[data][dataset]") {
    // 10 samples, row r holds the value r, so a batch's rows name its samples.
    labelled_data<float> data;
    data.inputs = matrix<float>::from_shape({10, 1});
    data.targets = matrix<float>::from_shape({10, 2});
    data.labels.resize(10);
    for (std::size_t r = 0; r < 10; ++r) {
        data.inputs(r, 0) = static_cast<float>(r);
        data.targets(r, 0) = 1;
        data.targets(r, 1) = 0;
    }
    batch_sampler<float> sampler(data, 4, 99);
    REQUIRE(sampler.batches() == 3);
    auto epoch_order = [&](std::size_t epoch) {
        sampler.start_epoch(epoch);
        std::vector<float> seen;
        std::vector<std::size_t> sizes;
        matrix<float> x;
        matrix<float> y;
        for (std::size_t b = 0; b < sampler.batches(); ++b) {
            sampler.fill(b, x, y);
            sizes.push_back(x.shape(0));
            for (std::size_t r = 0; r < x.shape(0); ++r) {
                seen.push_back(x(r, 0));
            }
        }
        CHECK(sizes == std::vector<std::size_t>{4, 4, 2});
        return seen;
    };
    const auto first = epoch_order(0);
    auto sorted = first;
    std::sort(sorted.begin(), sorted.end());
    CHECK(sorted == std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
    CHECK(epoch_order(0) == first);
    CHECK(epoch_order(1) != first);
    CHECK_THROWS_AS(batch_sampler<float>(data, 0, 1), config_error);
}

TEST_CASE("the validation split is seeded, disjoint and complete", "[data][dataset]") {
    const auto data = make_blobs(25, 4, 1, 3, 0.1, 1, 2);
    const auto [train, validation] = split_validation(data, 0.2, 5);
    CHECK(validation.size() == 20);
    CHECK(train.size() == 80);
    std::set<float> all;
    for (const auto* part : {&train, &validation}) {
        for (std::size_t r = 0; r < part->size(); ++r) {
            all.insert(part->inputs(r, 0));
            CHECK(argmax_row(part->targets, r) == part->labels[r]);
        }
    }
    CHECK(all.size() == 100); // every sample once (the coordinates are distinct)
    const auto again = split_validation(data, 0.2, 5);
    CHECK(lightloop::testing::identical(again.second.inputs, validation.inputs));
    CHECK_THROWS_AS(split_validation(data, 1.0, 5), config_error);
}
