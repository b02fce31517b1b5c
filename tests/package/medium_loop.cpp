// Compiled, not run (-Werror): a program timing the transmission matrix's
// field on shapes the compiler can see. GCC 12 -O3 once warned here
// (-Waggressive-loop-optimizations, on by default: "iteration
// 4611686018427387903 invokes undefined behavior") about simd::for_each_lane's
// scalar tail, a false positive that would break a user's -Werror build.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <lightloop/lightloop.hpp>

int main(int argc, char**) {
    const std::size_t columns = argc > 1 ? 3 : 5;
    lightloop::transmission_matrix medium(2048, 10, 7, 1.0);
    const std::size_t rows = 16;
    std::vector<float> frames(rows * 10, 0.0f);
    std::vector<float> re(rows * 2048);
    std::vector<float> im(rows * 2048);
    for (std::size_t r = 0; r < rows; ++r) {
        for (std::size_t k = 0; k < columns; ++k) {
            frames[r * 10 + k] = 1.0f;
        }
    }
    medium.field(frames.data(), rows, re.data(), im.data());
    double best = 1e9;
    double sum = 0.0;
    for (int repeat = 0; repeat < 20; ++repeat) {
        const auto start = std::chrono::steady_clock::now();
        for (std::size_t i = 0; i < 200; ++i) {
            medium.field(frames.data(), rows, re.data(), im.data());
            sum += static_cast<double>(re[i]);
        }
        const std::chrono::duration<double, std::micro> took =
          std::chrono::steady_clock::now() - start;
        best = std::min(best, took.count() / 200);
    }
    std::printf("%.2f us (%g)\n", best, sum);
}
