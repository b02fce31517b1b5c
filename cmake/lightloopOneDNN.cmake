# Defines the imported target lightloop::onednn when oneDNN is wanted and
# found: oneDNN (Debian's libdnnl-dev, an OpenMP build), the OpenMP runtime
# it uses (lightloop sets its thread count, core/onednn.hpp) and the macro
# LIGHTLOOP_WITH_ONEDNN. Used by the build and by the installed package config.
#
# LIGHTLOOP_WITH_ONEDNN: ON when oneDNN is found, unless set OFF; set ON, a
# missing oneDNN is an error.
#
# oneDNN is found by its header and library, not by its CMake package: Debian's
# dnnl-config.cmake is built with the OpenCL GPU runtime and fails the whole
# configuration with find_package(OpenCL REQUIRED) on a machine without
# ocl-icd-opencl-dev (a Recommends of libdnnl-dev, so absent after an install
# with --no-install-recommends). lightloop uses oneDNN's CPU engine only.
if(NOT TARGET lightloop::onednn)
  set(_lightloop_onednn_found OFF)
  if(NOT DEFINED LIGHTLOOP_WITH_ONEDNN OR LIGHTLOOP_WITH_ONEDNN)
    find_path(LIGHTLOOP_DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.hpp)
    find_library(LIGHTLOOP_DNNL_LIBRARY NAMES dnnl)
    find_package(OpenMP QUIET COMPONENTS CXX)
    set(_lightloop_dnnl_version "")
    if(LIGHTLOOP_DNNL_INCLUDE_DIR AND EXISTS "${LIGHTLOOP_DNNL_INCLUDE_DIR}/oneapi/dnnl/dnnl_version.h")
      file(STRINGS "${LIGHTLOOP_DNNL_INCLUDE_DIR}/oneapi/dnnl/dnnl_version.h" _lightloop_dnnl_lines
           REGEX "^#define DNNL_VERSION_(MAJOR|MINOR|PATCH) +[0-9]+")
      foreach(_part MAJOR MINOR PATCH)
        string(REGEX MATCH "DNNL_VERSION_${_part} +([0-9]+)" _match "${_lightloop_dnnl_lines}")
        set(_lightloop_dnnl_${_part} "${CMAKE_MATCH_1}")
      endforeach()
      set(_lightloop_dnnl_version
          "${_lightloop_dnnl_MAJOR}.${_lightloop_dnnl_MINOR}.${_lightloop_dnnl_PATCH}")
    endif()
    if(LIGHTLOOP_DNNL_LIBRARY AND OpenMP_CXX_FOUND AND _lightloop_dnnl_version
       AND NOT _lightloop_dnnl_version VERSION_LESS 2.6)
      set(_lightloop_onednn_found ON)
    endif()
  endif()
  if(NOT DEFINED LIGHTLOOP_WITH_ONEDNN)
    set(LIGHTLOOP_WITH_ONEDNN ${_lightloop_onednn_found} CACHE BOOL
        "Run bf16 (and optionally fp32) products through oneDNN (ON when found)")
  endif()
  if(LIGHTLOOP_WITH_ONEDNN)
    if(NOT _lightloop_onednn_found)
      message(FATAL_ERROR "lightloop: LIGHTLOOP_WITH_ONEDNN is ON but oneDNN 2.6+ with OpenMP was "
                          "not found (on Debian: apt-get install libdnnl-dev)")
    endif()
    add_library(lightloop::onednn INTERFACE IMPORTED)
    # The OpenMP runtime's library only: lightloop's own code has no OpenMP
    # pragmas, so its compile flags stay as they are.
    set_target_properties(lightloop::onednn PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${LIGHTLOOP_DNNL_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES "${LIGHTLOOP_DNNL_LIBRARY};${OpenMP_CXX_LIBRARIES}"
      INTERFACE_COMPILE_DEFINITIONS "LIGHTLOOP_WITH_ONEDNN=1")
    message(STATUS "lightloop: oneDNN ${_lightloop_dnnl_version} found: bf16 products through oneDNN")
  else()
    message(STATUS "lightloop: without oneDNN: bf16 products emulated on OpenBLAS")
  endif()
  unset(_lightloop_onednn_found)
  unset(_lightloop_dnnl_version)
endif()
