#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <vector>

#include <lightloop/core/finite.hpp>
#include <lightloop/core/random.hpp>

using lightloop::elementwise_grain;
using lightloop::detail::largest_magnitude_or_inf;

namespace {

template <class T>
std::vector<T> signed_values(std::size_t count, std::uint64_t seed) {
    lightloop::rng gen(seed);
    std::vector<T> out(count);
    for (T& v : out) {
        v = static_cast<T>(1e3 * (gen.uniform() - 0.5));
    }
    return out;
}

template <class T>
double largest_by_hand(const std::vector<T>& values) {
    double largest = 0.0;
    for (const T v : values) {
        largest = std::max(largest, static_cast<double>(std::abs(v)));
    }
    return largest;
}

} // namespace

TEMPLATE_TEST_CASE("largest_magnitude_or_inf is the largest |x|, or infinity for an inf or NaN "
                   "anywhere",
                   "[core][finite]", float, double) {
    using T = TestType;
    constexpr double inf = std::numeric_limits<double>::infinity();
    // Empty, tail only, one batch, batch + tail, and several pieces on the team.
    for (const std::size_t count : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{16},
                                    std::size_t{17}, std::size_t{100}, 3 * elementwise_grain + 5}) {
        auto values = signed_values<T>(count, count + 1);
        const std::span<const T> view(values);
        CHECK(largest_magnitude_or_inf(view) == largest_by_hand(values));
        CHECK(lightloop::detail::all_finite(view));
        if (count == 0) {
            continue;
        }
        // The largest entry negative, at the very end (in the scalar tail).
        values.back() = T(-2e3);
        CHECK(largest_magnitude_or_inf(view) == 2e3);
        for (const std::size_t at : {std::size_t{0}, count / 2, count - 1}) {
            for (const T bad :
                 {std::numeric_limits<T>::infinity(), -std::numeric_limits<T>::infinity(),
                  std::numeric_limits<T>::quiet_NaN(), -std::numeric_limits<T>::quiet_NaN()}) {
                const T kept = values[at];
                values[at] = bad;
                CHECK(largest_magnitude_or_inf(view) == inf);
                CHECK_FALSE(lightloop::detail::all_finite(view));
                values[at] = kept;
            }
        }
    }
    // Subnormals, negative zero and the largest finite value keep their order.
    std::vector<T> small(40, T(-0.0));
    small[3] = std::numeric_limits<T>::denorm_min();
    small[33] = -std::numeric_limits<T>::denorm_min() * T(3);
    CHECK(largest_magnitude_or_inf(std::span<const T>(small)) ==
          static_cast<double>(std::numeric_limits<T>::denorm_min() * T(3)));
    small[20] = -std::numeric_limits<T>::max();
    CHECK(largest_magnitude_or_inf(std::span<const T>(small)) ==
          static_cast<double>(std::numeric_limits<T>::max()));
}

TEMPLATE_TEST_CASE("magnitude_watch flags an inf or NaN seen in a batch lane or a single value",
                   "[core][finite]", float, double) {
    using T = TestType;
    using batch = xsimd::batch<T>;
    std::vector<T> lanes(batch::size, T(-5));
    lightloop::detail::magnitude_watch<T> clean;
    clean.see(batch::load_unaligned(lanes.data()));
    clean.see(std::numeric_limits<T>::max());
    CHECK(clean.finite());
    for (std::size_t lane = 0; lane < batch::size; ++lane) {
        for (const T bad :
             {std::numeric_limits<T>::infinity(), -std::numeric_limits<T>::quiet_NaN()}) {
            lanes[lane] = bad;
            lightloop::detail::magnitude_watch<T> watch;
            watch.see(T(1));
            watch.see(batch::load_unaligned(lanes.data()));
            CHECK_FALSE(watch.finite());
            lanes[lane] = T(-5);
        }
    }
    lightloop::detail::magnitude_watch<T> single;
    single.see(batch::load_unaligned(lanes.data()));
    single.see(-std::numeric_limits<T>::infinity());
    CHECK_FALSE(single.finite());
}
