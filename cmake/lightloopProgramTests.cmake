# Command-line tests of lightloop's programs, each judged by its exit code and
# its output (cmake/check_exit.cmake runs the program).
#
#   lightloop_program_case(TARGET NAME EXIT code OUTPUT regex [REJECT regex] ARGS arg...)
#
# adds the test program.TARGET.NAME: TARGET run with the arguments, which may
# hold commas and may be empty (`ARGS --seeds "" --data /nonexistent`), must
# exit with `code` and print something matching `regex` (and, with REJECT
# regex, nothing matching that: work it should not have done first).
#
# Every lightloop program gets: --help prints the usage and exits 0, an
# unknown flag and a malformed value exit 2 with a message, and an input the
# library refuses (a lightloop::error) is printed and exits 2 instead of
# aborting.
#
#   lightloop_program_tests(TARGET
#     [REQUIRED arg...]              what the program cannot run without (put
#                                    before the unknown flag)
#     [BAD_VALUE arg...]             a command line with a value it refuses
#     [LIBRARY_ERROR arg...]         flags the library then refuses
#     [LIBRARY_MESSAGE regex])       what that refusal must say
set(LIGHTLOOP_CHECK_EXIT "${CMAKE_CURRENT_LIST_DIR}/check_exit.cmake")

function(lightloop_program_case target name)
  # PARSE_ARGV keeps empty arguments, which ${ARGN} would drop.
  cmake_parse_arguments(PARSE_ARGV 2 arg "" "EXIT;OUTPUT;REJECT" "ARGS")
  if(NOT DEFINED arg_EXIT OR NOT DEFINED arg_OUTPUT)
    message(FATAL_ERROR "lightloop_program_case(${target} ${name}): EXIT and OUTPUT are required")
  endif()
  foreach(item IN LISTS arg_ARGS)
    if(item MATCHES "[|]")
      message(FATAL_ERROR "lightloop_program_case(${target} ${name}): '${item}' holds a '|', "
                          "the separator the arguments are passed with")
    endif()
  endforeach()
  list(JOIN arg_ARGS "|" args)
  add_test(NAME program.${target}.${name}
    COMMAND ${CMAKE_COMMAND} "-DPROGRAM=$<TARGET_FILE:${target}>" "-DSEPARATOR=|"
            "-DARGS=${args}" "-DEXPECT_CODE=${arg_EXIT}" "-DEXPECT_OUTPUT=${arg_OUTPUT}"
            "-DREJECT_OUTPUT=${arg_REJECT}" -P "${LIGHTLOOP_CHECK_EXIT}")
  set_tests_properties(program.${target}.${name} PROPERTIES
    LABELS programs ENVIRONMENT "OPENBLAS_NUM_THREADS=1" TIMEOUT 120)
endfunction()

function(lightloop_program_tests target)
  cmake_parse_arguments(arg "" "LIBRARY_MESSAGE" "REQUIRED;BAD_VALUE;LIBRARY_ERROR" ${ARGN})
  lightloop_program_case(${target} help EXIT 0 OUTPUT "Usage: ${target}" ARGS --help)
  lightloop_program_case(${target} unknown_flag EXIT 2 OUTPUT "no-such-flag"
                         ARGS ${arg_REQUIRED} --no-such-flag)
  if(arg_BAD_VALUE)
    lightloop_program_case(${target} bad_value EXIT 2 OUTPUT "." ARGS ${arg_BAD_VALUE})
  endif()
  if(arg_LIBRARY_ERROR)
    lightloop_program_case(${target} library_error EXIT 2 OUTPUT "${arg_LIBRARY_MESSAGE}"
                           ARGS ${arg_LIBRARY_ERROR})
  endif()
endfunction()
