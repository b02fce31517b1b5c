// The unit tests' main: Catch's, after ensure_fast_blas, so that the tests run
// on the OpenBLAS kernel the programs use (OpenBLAS 0.3.21 gives an AVX-512
// CPU it does not know by name its AVX2 kernel; core/blas_info.hpp). CTest
// also runs the GEMM tests on the AVX2 kernel, by OPENBLAS_CORETYPE.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <lightloop/core/blas_info.hpp>

int main(int argc, char** argv) {
    lightloop::ensure_fast_blas(argv);
    return Catch::Session().run(argc, argv);
}
