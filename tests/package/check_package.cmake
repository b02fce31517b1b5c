# Installs lightloop from BUILD_DIR into a fresh prefix, then configures,
# builds and runs the consumer project against it (MODE=install) or against the
# source tree through add_subdirectory (MODE=subdirectory).
foreach(var BUILD_DIR SOURCE_DIR WORK_DIR MODE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_package.cmake needs -D${var}=...")
  endif()
endforeach()

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    list(JOIN ARGN " " cmd)
    message(FATAL_ERROR "failed (${rc}): ${cmd}")
  endif()
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
set(consumer_build "${WORK_DIR}/build")
if(MODE STREQUAL "install")
  set(prefix "${WORK_DIR}/prefix")
  run(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${prefix}")
  if(NOT EXISTS "${prefix}/share/cmake/lightloop/lightloopConfig.cmake")
    message(FATAL_ERROR "install did not produce share/cmake/lightloop/lightloopConfig.cmake")
  endif()
  run(${CMAKE_COMMAND} -S "${SOURCE_DIR}/tests/package/consumer" -B "${consumer_build}"
      -DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=${prefix}")
else()
  run(${CMAKE_COMMAND} -S "${SOURCE_DIR}/tests/package/consumer" -B "${consumer_build}"
      -DCMAKE_BUILD_TYPE=Release "-DLIGHTLOOP_SOURCE_DIR=${SOURCE_DIR}")
endif()
run(${CMAKE_COMMAND} --build "${consumer_build}")
run("${consumer_build}/consumer")
