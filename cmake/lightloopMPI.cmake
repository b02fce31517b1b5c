# Defines the imported target lightloop::mpi when MPI is wanted and found
# (CMake's FindMPI from C++, without the deprecated MPI C++ bindings: Debian's
# libopenmpi-dev). The distributed
# headers (include/lightloop/distributed/) need it; no other header includes
# mpi.h. Used by the build and by the installed package config.
#
# LIGHTLOOP_WITH_MPI: ON when MPI is found, unless set OFF; set ON, a missing
# MPI is an error.
if(NOT TARGET lightloop::mpi)
  if(NOT DEFINED LIGHTLOOP_WITH_MPI OR LIGHTLOOP_WITH_MPI)
    set(MPI_CXX_SKIP_MPICXX ON CACHE BOOL "lightloop calls MPI's C API only")
    find_package(MPI QUIET COMPONENTS CXX)
  endif()
  if(NOT DEFINED LIGHTLOOP_WITH_MPI)
    set(LIGHTLOOP_WITH_MPI ${MPI_CXX_FOUND} CACHE BOOL
        "Build lightloop's distributed training over MPI (ON when found)")
  endif()
  if(LIGHTLOOP_WITH_MPI)
    if(NOT MPI_CXX_FOUND)
      message(FATAL_ERROR "lightloop: LIGHTLOOP_WITH_MPI is ON but MPI was not found "
                          "(on Debian: apt-get install libopenmpi-dev openmpi-bin)")
    endif()
    add_library(lightloop::mpi INTERFACE IMPORTED)
    set_target_properties(lightloop::mpi PROPERTIES INTERFACE_LINK_LIBRARIES MPI::MPI_CXX)
    message(STATUS "lightloop: MPI ${MPI_CXX_VERSION} found: distributed training")
  else()
    message(STATUS "lightloop: without MPI: no distributed training")
  endif()
endif()
