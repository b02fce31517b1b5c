#pragma once
// xtensor-blas in a translation unit that also includes OpenBLAS's cblas.h
// (every lightloop header does). xtensor-blas's bundled FLENS drivers declare
// their own copy of the CBLAS enums and functions, which clash with
// OpenBLAS's declarations of the same names; with the guard of that copy
// defined and its integer type given as OpenBLAS's (cblas.h defines
// CBLAS_INDEX itself), FLENS uses OpenBLAS's declarations instead. The tests
// use xtensor-blas as an independent reference for products; the library
// calls CBLAS directly (docs/DESIGN.md says why).
#include <cblas.h>

#ifndef CXXBLAS_DRIVERS_CBLAS_H
#define CXXBLAS_DRIVERS_CBLAS_H 1
#define CBLAS_INT blasint
#endif

#include <xtensor-blas/xlinalg.hpp>
