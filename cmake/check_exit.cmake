# Runs PROGRAM with ARGS (comma-separated, or SEPARATOR-separated when set:
# for an argument that holds commas) and fails unless it exits with
# EXPECT_CODE and its output (stdout and stderr) matches EXPECT_OUTPUT.
if(NOT DEFINED SEPARATOR)
  set(SEPARATOR ",")
endif()
string(REPLACE "${SEPARATOR}" ";" args "${ARGS}")
execute_process(COMMAND "${PROGRAM}" ${args} RESULT_VARIABLE code OUTPUT_VARIABLE out
                ERROR_VARIABLE err TIMEOUT 100)
set(all "${out}${err}")
if(NOT code STREQUAL EXPECT_CODE)
  message(FATAL_ERROR "${PROGRAM} ${ARGS}: exit code ${code}, expected ${EXPECT_CODE}\n${all}")
endif()
if(NOT all MATCHES "${EXPECT_OUTPUT}")
  message(FATAL_ERROR "${PROGRAM} ${ARGS}: output does not match '${EXPECT_OUTPUT}'\n${all}")
endif()
message(STATUS "${PROGRAM} ${ARGS}: exit ${code} as expected")
