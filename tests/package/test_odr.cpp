#include <catch2/catch.hpp>

double lightloop_odr_train_a();
double lightloop_odr_train_b();

TEST_CASE("two translation units including everything link and agree", "[package]") {
    // Same code in both units, same seed: the same loss, bit for bit.
    const double a = lightloop_odr_train_a();
    const double b = lightloop_odr_train_b();
    CHECK(a == b);
    CHECK(a > 0.0);
}
