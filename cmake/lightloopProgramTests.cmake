# Command-line tests every lightloop program gets: --help prints the usage and
# exits 0, an unknown flag and a malformed value exit 2 with a message, and an
# input the library refuses (a lightloop::error) is printed and exits 2
# instead of aborting.
#
#   lightloop_program_tests(TARGET
#     [REQUIRED arg...]              what the program cannot run without (put
#                                    before the unknown flag)
#     [BAD_VALUE arg...]             a command line with a value it refuses
#     [LIBRARY_ERROR arg...]         flags the library then refuses
#     [LIBRARY_MESSAGE regex])       what that refusal must say
set(LIGHTLOOP_CHECK_EXIT "${CMAKE_CURRENT_LIST_DIR}/check_exit.cmake")

function(lightloop_program_tests target)
  cmake_parse_arguments(arg "" "LIBRARY_MESSAGE" "REQUIRED;BAD_VALUE;LIBRARY_ERROR" ${ARGN})
  list(JOIN arg_REQUIRED "," required)
  if(required)
    string(APPEND required ",")
  endif()
  set(cases "help|--help|0|Usage: ${target}"
            "unknown_flag|${required}--no-such-flag|2|no-such-flag")
  if(arg_BAD_VALUE)
    list(JOIN arg_BAD_VALUE "," bad)
    list(APPEND cases "bad_value|${bad}|2|.")
  endif()
  if(arg_LIBRARY_ERROR)
    list(JOIN arg_LIBRARY_ERROR "," refused)
    list(APPEND cases "library_error|${refused}|2|${arg_LIBRARY_MESSAGE}")
  endif()
  foreach(case IN LISTS cases)
    string(REPLACE "|" ";" fields "${case}")
    list(GET fields 0 name)
    list(GET fields 1 args)
    list(GET fields 2 code)
    list(GET fields 3 expect)
    add_test(NAME program.${target}.${name}
      COMMAND ${CMAKE_COMMAND} "-DPROGRAM=$<TARGET_FILE:${target}>" "-DARGS=${args}"
              "-DEXPECT_CODE=${code}" "-DEXPECT_OUTPUT=${expect}" -P "${LIGHTLOOP_CHECK_EXIT}")
    set_tests_properties(program.${target}.${name} PROPERTIES
      LABELS programs ENVIRONMENT "OPENBLAS_NUM_THREADS=1" TIMEOUT 120)
  endforeach()
endfunction()
