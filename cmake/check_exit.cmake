# Runs PROGRAM with ARGS (comma-separated, or SEPARATOR-separated when set:
# for an argument that holds commas) and fails unless it exits with
# EXPECT_CODE and its output (stdout and stderr) matches EXPECT_OUTPUT (and,
# when REJECT_OUTPUT is set, does not match it: work the program should not
# have done before failing). An empty item is passed as an empty argument
# (`--seeds||--data` with "|").
cmake_minimum_required(VERSION 3.20) # lists keep their empty items (CMP0007)
if(NOT DEFINED SEPARATOR)
  set(SEPARATOR ",")
endif()
string(REPLACE "${SEPARATOR}" ";" args "${ARGS}")
# Each argument as a bracket argument, which may be empty; an unquoted list
# expansion would drop the empty ones.
set(run "execute_process(COMMAND [==[${PROGRAM}]==]")
foreach(arg IN LISTS args)
  string(APPEND run " [==[${arg}]==]")
endforeach()
string(APPEND run " RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 100)")
cmake_language(EVAL CODE "${run}")
set(all "${out}${err}")
if(NOT code STREQUAL EXPECT_CODE)
  message(FATAL_ERROR "${PROGRAM} ${ARGS}: exit code ${code}, expected ${EXPECT_CODE}\n${all}")
endif()
if(NOT all MATCHES "${EXPECT_OUTPUT}")
  message(FATAL_ERROR "${PROGRAM} ${ARGS}: output does not match '${EXPECT_OUTPUT}'\n${all}")
endif()
if(NOT "${REJECT_OUTPUT}" STREQUAL "" AND all MATCHES "${REJECT_OUTPUT}")
  message(FATAL_ERROR "${PROGRAM} ${ARGS}: output matches '${REJECT_OUTPUT}', which it should not\n${all}")
endif()
message(STATUS "${PROGRAM} ${ARGS}: exit ${code} as expected")
