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

# luarocks (avideo-*.rockspec) passes the header dir of the Lua it builds
# for. Debian's luarocks defaults to Lua 5.3; a 5.4 module installed into
# 5.3's tree would load nowhere, so say what to do instead.
if(AVIDEO_LUAROCKS_LUA_INCDIR)
  file(STRINGS "${AVIDEO_LUAROCKS_LUA_INCDIR}/lua.h" AVIDEO_LUAROCKS_LUA_NUM
       REGEX "^#define[ \t]+LUA_VERSION_NUM[ \t]+[0-9]+")
  if(NOT AVIDEO_LUAROCKS_LUA_NUM MATCHES "[ \t]504$")
    message(FATAL_ERROR
      "avideo is a Lua 5.4 module, but luarocks builds for the Lua in ${AVIDEO_LUAROCKS_LUA_INCDIR}.\n"
      "Run: luarocks --lua-version 5.4 make --deps-mode=none\n"
      "(or once: luarocks config lua_version 5.4)")
  endif()
endif()
