# Defines the imported target lightloop::openblas: OpenBLAS's cblas.h and
# library. lightloop calls cblas_sgemm/dgemm and openblas_* directly, so it
# needs OpenBLAS specifically, not any BLAS. Used by the build and by the
# installed package config.
if(NOT TARGET lightloop::openblas)
  find_package(OpenBLAS CONFIG QUIET)
  if(OpenBLAS_FOUND)
    set(_lightloop_openblas_include "${OpenBLAS_INCLUDE_DIRS}")
    set(_lightloop_openblas_library "${OpenBLAS_LIBRARIES}")
  else()
    find_path(_lightloop_openblas_include cblas.h
      PATH_SUFFIXES openblas openblas-pthread openblas-openmp x86_64-linux-gnu/openblas-pthread)
    find_library(_lightloop_openblas_library NAMES openblas)
  endif()
  if(NOT _lightloop_openblas_include OR NOT _lightloop_openblas_library)
    message(FATAL_ERROR "lightloop: OpenBLAS not found (on Debian: apt-get install libopenblas-dev)")
  endif()
  add_library(lightloop::openblas INTERFACE IMPORTED)
  set_target_properties(lightloop::openblas PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${_lightloop_openblas_include}"
    INTERFACE_LINK_LIBRARIES "${_lightloop_openblas_library}")
  unset(_lightloop_openblas_include)
  unset(_lightloop_openblas_library)
endif()
