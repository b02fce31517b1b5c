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
    if(LIGHTLOOP_SANITIZE)
      target_compile_options(${target} PRIVATE -fsanitize=address,undefined
                                               -fno-omit-frame-pointer -fno-sanitize-recover=all)
      target_link_options(${target} PRIVATE -fsanitize=address,undefined)
    endif()
  endif()
endfunction()
