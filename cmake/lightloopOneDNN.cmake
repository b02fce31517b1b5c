# Defines the imported target lightloop::onednn when oneDNN is wanted and
# found: oneDNN (Debian's libdnnl-dev, an OpenMP build), the OpenMP runtime
# it uses (lightloop sets its thread count, core/onednn.hpp) and the macro
# LIGHTLOOP_WITH_ONEDNN. Used by the build and by the installed package config.
#
# LIGHTLOOP_WITH_ONEDNN: ON when oneDNN is found, unless set OFF; set ON, a
# missing oneDNN is an error.
if(NOT TARGET lightloop::onednn)
  if(NOT DEFINED LIGHTLOOP_WITH_ONEDNN OR LIGHTLOOP_WITH_ONEDNN)
    find_package(dnnl 2.6 CONFIG QUIET)
    find_package(OpenMP QUIET COMPONENTS CXX)
  endif()
  set(_lightloop_onednn_found OFF)
  if(dnnl_FOUND AND OpenMP_CXX_FOUND)
    set(_lightloop_onednn_found ON)
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
      INTERFACE_LINK_LIBRARIES "DNNL::dnnl;${OpenMP_CXX_LIBRARIES}"
      INTERFACE_COMPILE_DEFINITIONS "LIGHTLOOP_WITH_ONEDNN=1")
    message(STATUS "lightloop: oneDNN ${dnnl_VERSION} found: bf16 products through oneDNN")
  else()
    message(STATUS "lightloop: without oneDNN: bf16 products emulated on OpenBLAS")
  endif()
  unset(_lightloop_onednn_found)
endif()
