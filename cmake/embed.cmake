# What a host program needs to embed avideo: the public header and a
# pkg-config file. Included by the top-level CMakeLists.txt.
install(FILES ${PROJECT_SOURCE_DIR}/include/avideo.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

# avideo.pc is written at install time (cmake/avideo_pc.cmake), so that
# `cmake --install --prefix P` gets paths under P rather than under the
# prefix the build was configured with.
install(CODE "
  set(AVIDEO_PC_IN \"${CMAKE_CURRENT_LIST_DIR}/avideo.pc.in\")
  set(AVIDEO_PC_OUT \"${CMAKE_BINARY_DIR}/avideo.pc\")
  set(AVIDEO_PC_INCLUDEDIR \"${CMAKE_INSTALL_INCLUDEDIR}\")
  set(AVIDEO_PC_CMOD \"${AVIDEO_LUA_CDIR}\")
  set(AVIDEO_PC_LMOD \"${AVIDEO_LUA_LDIR}\")
  set(AVIDEO_PC_VERSION \"${PROJECT_VERSION}\")
")
install(SCRIPT ${CMAKE_CURRENT_LIST_DIR}/avideo_pc.cmake)
install(FILES ${CMAKE_BINARY_DIR}/avideo.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
