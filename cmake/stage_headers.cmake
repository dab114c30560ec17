# Stages loom's public headers as an installed tree under OUT/loom/:
#   core/*.hpp, ops/*.hpp, frontend/*.hpp -> OUT/loom/<folder>/<file>
# rewriting the repository-relative includes between them ("core/graph.hpp")
# to <loom/core/graph.hpp>, so a consumer needs only OUT (or <prefix>/include)
# on its include path and no generic "core/" folder reaches it. Adds
# OUT/loom/loom.hpp (the one include for users) and OUT/loom/version.hpp.
# Runs at every build (cmake -P); files are rewritten only when they change.
#   cmake -DSRC=<source dir> -DOUT=<dir> -DVERSION_HEADER=<file> -P stage_headers.cmake

cmake_minimum_required(VERSION 3.25)
set(folders core ops frontend)

function(stage_file dest content)
  if(EXISTS "${dest}")
    file(READ "${dest}" old)
    if(old STREQUAL content)
      return()
    endif()
  endif()
  file(WRITE "${dest}" "${content}")
endfunction()

set(staged "")
foreach(folder ${folders})
  file(GLOB headers RELATIVE "${SRC}" "${SRC}/${folder}/*.hpp")
  foreach(h ${headers})
    file(READ "${SRC}/${h}" text)
    string(REGEX REPLACE "#include \"((core|ops|frontend)/[A-Za-z0-9_./]+)\"" "#include <loom/\\1>" text "${text}")
    stage_file("${OUT}/loom/${h}" "${text}")
    list(APPEND staged "${OUT}/loom/${h}")
  endforeach()
endforeach()

file(READ "${VERSION_HEADER}" version)
stage_file("${OUT}/loom/version.hpp" "${version}")
stage_file("${OUT}/loom/loom.hpp" "#pragma once
/// loom: the one include for users, `#include <loom/loom.hpp>`. The graph and
/// session, the op library, nn modules, initializers, optimizers, data loading
/// and checkpoints (frontend/loom.hpp), and the version macros.

#include <loom/version.hpp>
#include <loom/frontend/loom.hpp>
")
list(APPEND staged "${OUT}/loom/version.hpp" "${OUT}/loom/loom.hpp")

# A header removed from the sources leaves the staged tree too.
file(GLOB_RECURSE present "${OUT}/loom/*.hpp")
foreach(f ${present})
  if(NOT f IN_LIST staged)
    file(REMOVE "${f}")
  endif()
endforeach()
