# Warnings and sanitizers for lightloop's own targets (tests, examples,
# benchmarks). Never applied to the lightloop INTERFACE target, so nothing
# here reaches users.
function(lightloop_project_options target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wconversion -Wsign-conversion
                                             -Wshadow -Wnon-virtual-dtor -Wpedantic)
    if(LIGHTLOOP_WERROR)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
    if(LIGHTLOOP_NATIVE)
      # xsimd picks its SIMD width when the code is compiled (tanh, the
      # camera's noise); OpenBLAS picks its kernel at run time either way.
      target_compile_options(${target} PRIVATE -march=native)
      if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
        # GCC 12's own AVX-512 headers trip its uninitialized-variable
        # warnings (GCC PR 105593, fixed in 13); clang still checks ours.
        target_compile_options(${target} PRIVATE -Wno-uninitialized -Wno-maybe-uninitialized)
      endif()
    endif()
    if(LIGHTLOOP_SANITIZE)
      target_compile_options(${target} PRIVATE -fsanitize=address,undefined
                                               -fno-omit-frame-pointer -fno-sanitize-recover=all)
      target_link_options(${target} PRIVATE -fsanitize=address,undefined)
    endif()
    if(LIGHTLOOP_TSAN)
      target_compile_options(${target} PRIVATE -fsanitize=thread -fno-omit-frame-pointer)
      target_link_options(${target} PRIVATE -fsanitize=thread)
    endif()
  endif()
endfunction()
