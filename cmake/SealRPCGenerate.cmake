# sealrpc_generate(<target> SCHEMAS a.capnp [b.capnp ...]
#                  [IMPORT_DIRS dir ...] [DEPENDS file ...]
#                  [SRC_PREFIX dir] [OUTPUT_DIR dir])
#
# Runs capnp's C++ plugin and capnpc-sealrpc over the schemas at build time, adds the
# generated sources to <target>, puts their directory on its include path and links it
# to sealrpc_idl, the SealRPC runtime and Cap'n Proto. Call it in the directory that
# defines <target>. For a.capnp, include "a.capnp.sealrpc.h" (types: "a.capnp.h").
#
#   SCHEMAS      schema files, relative to the current source dir or absolute; all must
#                be under SRC_PREFIX. One capnp run compiles them all, so schemas that
#                import each other belong in the same call.
#   IMPORT_DIRS  extra capnp import dirs (-I). "/sealrpc/sealrpc.capnp" and "/capnp/..."
#                are always importable.
#   DEPENDS      further files whose change must regenerate (e.g. schemas imported
#                from IMPORT_DIRS).
#   SRC_PREFIX   stripped from schema paths to place outputs (default: current source
#                dir); "sub/a.capnp" yields <OUTPUT_DIR>/sub/a.capnp.sealrpc.h.
#   OUTPUT_DIR   default: <current binary dir>/sealrpc-gen/<target>.
include_guard(GLOBAL)

function(sealrpc_generate target)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "" "SRC_PREFIX;OUTPUT_DIR" "SCHEMAS;IMPORT_DIRS;DEPENDS")
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "sealrpc_generate(${target}): unknown arguments: ${ARG_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT ARG_SCHEMAS)
    message(FATAL_ERROR "sealrpc_generate(${target}): SCHEMAS is required")
  endif()
  foreach(required IN ITEMS ${target} capnpc-sealrpc sealrpc_idl)
    if(NOT TARGET ${required})
      message(FATAL_ERROR "sealrpc_generate(${target}): target ${required} does not exist")
    endif()
  endforeach()
  if(NOT CAPNP_EXECUTABLE OR NOT CAPNPC_CXX_EXECUTABLE)
    message(FATAL_ERROR "sealrpc_generate(${target}): find_package(CapnProto) first")
  endif()

  if(ARG_SRC_PREFIX)
    get_filename_component(prefix "${ARG_SRC_PREFIX}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  else()
    set(prefix "${CMAKE_CURRENT_SOURCE_DIR}")
  endif()
  if(ARG_OUTPUT_DIR)
    get_filename_component(out "${ARG_OUTPUT_DIR}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_BINARY_DIR}")
  else()
    set(out "${CMAKE_CURRENT_BINARY_DIR}/sealrpc-gen/${target}")
  endif()
  get_target_property(idl_dir sealrpc_idl SEALRPC_IMPORT_DIR)

  set(import_flags "-I${idl_dir}" "-I${CAPNP_INCLUDE_DIRECTORY}")
  set(schema_path "${prefix}:${idl_dir}")
  foreach(dir IN LISTS ARG_IMPORT_DIRS)
    get_filename_component(dir "${dir}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
    list(APPEND import_flags "-I${dir}")
    string(APPEND schema_path ":${dir}")
  endforeach()

  set(schemas)
  set(outputs)
  foreach(schema IN LISTS ARG_SCHEMAS)
    get_filename_component(abs "${schema}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
    file(RELATIVE_PATH rel "${prefix}" "${abs}")
    if(rel MATCHES "^\\.\\./" OR IS_ABSOLUTE "${rel}")
      message(FATAL_ERROR "sealrpc_generate(${target}): ${abs} is not under SRC_PREFIX ${prefix}")
    endif()
    list(APPEND schemas "${abs}")
    foreach(suffix IN ITEMS .h .c++ .sealrpc.h .sealrpc.c++)
      list(APPEND outputs "${out}/${rel}${suffix}")
    endforeach()
  endforeach()

  # SEALRPC_SCHEMA_PATH only lets the plugin quote line numbers in its errors.
  add_custom_command(
    OUTPUT ${outputs}
    COMMAND ${CMAKE_COMMAND} -E make_directory "${out}"
    COMMAND ${CMAKE_COMMAND} -E env "SEALRPC_SCHEMA_PATH=${schema_path}"
            "${CAPNP_EXECUTABLE}" compile "-o${CAPNPC_CXX_EXECUTABLE}:${out}"
            "-o$<TARGET_FILE:capnpc-sealrpc>:${out}" "--src-prefix=${prefix}" ${import_flags} ${schemas}
    DEPENDS ${schemas} ${ARG_DEPENDS} "${idl_dir}/sealrpc/sealrpc.capnp" capnpc-sealrpc
    WORKING_DIRECTORY "${prefix}"
    COMMENT "capnp + capnpc-sealrpc: schemas of ${target}"
    VERBATIM)

  target_sources(${target} PRIVATE ${outputs})
  target_include_directories(${target} PUBLIC "${out}")
  target_link_libraries(${target} PUBLIC sealrpc_idl sealrpc::sealrpc CapnProto::capnp-rpc CapnProto::capnp)
endfunction()
