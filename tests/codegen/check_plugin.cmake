# Runs capnpc-sealrpc on one schema and checks the outcome (ctest driver).
#
#   cmake -DCAPNP=<capnp> -DPLUGIN=<capnpc-sealrpc> -DIMPORT_DIR=<sealrpc-idl dir>
#         -DSRC_DIR=<schema dir> -DSCHEMA=<name.capnp> -DOUT=<scratch dir>
#         -DMODE=FAIL|PASS -DEXPECT=<regex>[@@<regex>...] -P check_plugin.cmake
#
# FAIL: the plugin must exit non-zero, write nothing, and its stderr must match every
# regex. PASS: it must succeed and the generated .sealrpc.c++ must match every regex.
foreach(var CAPNP PLUGIN IMPORT_DIR SRC_DIR SCHEMA OUT MODE EXPECT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_plugin.cmake: -D${var}=... is required")
  endif()
endforeach()

file(REMOVE_RECURSE "${OUT}")
file(MAKE_DIRECTORY "${OUT}")
execute_process(
  COMMAND "${CMAKE_COMMAND}" -E env "SEALRPC_SCHEMA_PATH=${SRC_DIR}" "PWD=${SRC_DIR}"
          "${CAPNP}" compile "-o${PLUGIN}:${OUT}" "--src-prefix=${SRC_DIR}" "-I${IMPORT_DIR}" "${SRC_DIR}/${SCHEMA}"
  WORKING_DIRECTORY "${SRC_DIR}"
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE stdout
  ERROR_VARIABLE stderr)
message(STATUS "exit: ${rc}\nstderr:\n${stderr}")

set(generated "${OUT}/${SCHEMA}.sealrpc.c++")
if(MODE STREQUAL "FAIL")
  if(rc EQUAL 0)
    message(FATAL_ERROR "capnpc-sealrpc accepted ${SCHEMA}; expected a failure")
  endif()
  if(EXISTS "${generated}")
    message(FATAL_ERROR "capnpc-sealrpc failed but still wrote ${generated}")
  endif()
  set(text "${stderr}")
else()
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "capnpc-sealrpc rejected ${SCHEMA}")
  endif()
  file(READ "${generated}" text)
endif()

string(REPLACE "@@" ";" patterns "${EXPECT}")
foreach(pattern IN LISTS patterns)
  if(NOT text MATCHES "${pattern}")
    message(FATAL_ERROR "output does not match: ${pattern}")
  endif()
endforeach()
