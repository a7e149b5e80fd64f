# Install the headers and export asreloc::asreloc (and asreloc::hosted) so that
# find_package(asreloc CONFIG) works after `cmake --install`.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(ASRELOC_CONFIG_DIR "${CMAKE_INSTALL_DATADIR}/cmake/asreloc")

install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/asreloc" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
set(asreloc_export_targets asreloc)
if(TARGET asreloc_hosted)
    list(APPEND asreloc_export_targets asreloc_hosted)
endif()
install(TARGETS ${asreloc_export_targets} EXPORT asreloc-targets)
install(EXPORT asreloc-targets NAMESPACE asreloc:: DESTINATION "${ASRELOC_CONFIG_DIR}")

configure_package_config_file(
    "${PROJECT_SOURCE_DIR}/cmake/asreloc-config.cmake.in"
    "${PROJECT_BINARY_DIR}/asreloc-config.cmake"
    INSTALL_DESTINATION "${ASRELOC_CONFIG_DIR}")
# A header-only library: any architecture may consume it.
write_basic_package_version_file(
    "${PROJECT_BINARY_DIR}/asreloc-config-version.cmake"
    COMPATIBILITY SameMajorVersion
    ARCH_INDEPENDENT)
install(FILES
    "${PROJECT_BINARY_DIR}/asreloc-config.cmake"
    "${PROJECT_BINARY_DIR}/asreloc-config-version.cmake"
    DESTINATION "${ASRELOC_CONFIG_DIR}")
