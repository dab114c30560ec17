# Install rules: libraries with versioned SONAMEs, the staged headers under
# include/loom/, the CMake package (loomConfig.cmake: loom::loom, loom::cuda,
# loom::onnx) and pkg-config files (loom, loom-cuda, loom-onnx).
include(CMakePackageConfigHelpers)

install(TARGETS ${LOOM_LIBRARIES} EXPORT loomTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT development
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_BINARY_DIR}/include/loom DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        COMPONENT development FILES_MATCHING PATTERN "*.hpp")

set(LOOM_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/loom)
install(EXPORT loomTargets NAMESPACE loom:: DESTINATION ${LOOM_CMAKE_DIR} COMPONENT development)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/loomConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/loomConfig.cmake INSTALL_DESTINATION ${LOOM_CMAKE_DIR})
# Before 1.0 a minor version may change the API: 0.2 matches 0.2.x only.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/loomConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/loomConfig.cmake ${PROJECT_BINARY_DIR}/loomConfigVersion.cmake
        DESTINATION ${LOOM_CMAKE_DIR} COMPONENT development)

# pkg-config: loom (the core), loom-cuda (adds the CUDA backend), loom-onnx (adds the exporter).
# Relocatable: the prefix is found from the .pc file's own place, so `cmake --install --prefix DIR` works.
file(RELATIVE_PATH LOOM_PC_TO_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
string(REGEX REPLACE "/$" "" LOOM_PC_TO_PREFIX "${LOOM_PC_TO_PREFIX}")
set(LOOM_PC_PREFIX "\${pcfiledir}/${LOOM_PC_TO_PREFIX}")
set(LOOM_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
set(LOOM_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
function(loom_pkg_config name description requires libs)
  set(LOOM_PC_NAME ${name})
  set(LOOM_PC_DESCRIPTION ${description})
  set(LOOM_PC_REQUIRES ${requires})
  set(LOOM_PC_LIBS ${libs})
  configure_file(${PROJECT_SOURCE_DIR}/cmake/loom.pc.in ${PROJECT_BINARY_DIR}/pkgconfig/${name}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/pkgconfig/${name}.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig
          COMPONENT development)
endfunction()
loom_pkg_config(loom "loom: static-graph deep learning in C++20 (CPU)" "tbb" "-lloom")
if(TARGET loom_cuda)
  # --no-as-needed: nothing refers to the backend's symbols; it registers itself when loaded.
  loom_pkg_config(loom-cuda "loom's CUDA backend" "loom = ${PROJECT_VERSION}"
                  "-Wl,--push-state,--no-as-needed -lloom_cuda -Wl,--pop-state")
endif()
if(TARGET loom_onnx)
  loom_pkg_config(loom-onnx "loom's ONNX exporter" "loom = ${PROJECT_VERSION}" "-lloom_onnx")
endif()
if(TARGET loom_mpi)
  loom_pkg_config(loom-mpi "loom's MPI communicator (data-parallel jobs)" "loom = ${PROJECT_VERSION}" "-lloom_mpi")
endif()
