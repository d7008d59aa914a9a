# `cmake --install build [--prefix P]`: Asteroid as a library other projects
# link (docs/custom-models.md, "As a library"): the static libraries, their
# headers under include/asteroid/, the `asteroid` binary (nodes run it), and
# a CMake package: find_package(Asteroid) gives Asteroid::asteroid.
include(CMakePackageConfigHelpers)

set(ASTEROID_LIBRARIES
  asteroid_wire_codec asteroid_messages asteroid_tensor_codec asteroid_compute_lite asteroid_compute
  asteroid_planner asteroid_actors asteroid_supervision asteroid_security asteroid_testbed asteroid_job)

# Everything a program that composes and runs a job needs.
add_library(asteroid_library INTERFACE)
target_link_libraries(asteroid_library INTERFACE asteroid_job)
set_target_properties(asteroid_library PROPERTIES EXPORT_NAME asteroid)

install(TARGETS ${ASTEROID_LIBRARIES} asteroid_library EXPORT AsteroidTargets
        ARCHIVE DESTINATION lib LIBRARY DESTINATION lib)
install(TARGETS asteroid RUNTIME DESTINATION bin)
foreach(folder actors compute messages planner supervision apps/testbed)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${folder}/ DESTINATION include/asteroid/${folder}
          FILES_MATCHING PATTERN "*.h")
endforeach()
install(FILES ${PROJECT_SOURCE_DIR}/apps/distributed_training.h DESTINATION include/asteroid/apps)
install(FILES ${PROJECT_BINARY_DIR}/messages/asteroid.capnp.h DESTINATION include/asteroid/messages)

set(ASTEROID_CMAKE_DIR lib/cmake/Asteroid)
install(EXPORT AsteroidTargets NAMESPACE Asteroid:: DESTINATION ${ASTEROID_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/AsteroidConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/AsteroidConfig.cmake INSTALL_DESTINATION ${ASTEROID_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/AsteroidConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/AsteroidConfig.cmake ${PROJECT_BINARY_DIR}/AsteroidConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/cmake/FindCAF.cmake
        DESTINATION ${ASTEROID_CMAKE_DIR})
