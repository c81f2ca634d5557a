# AVIDEO_LUA selects the Lua the module is built for: 5.4 (default), 5.3,
# 5.1 or luajit (LuaJIT 2.1). Sets the LUA pkg-config target (headers; the
# module never links liblua), AVIDEO_LUA_ABI (the tree's version dir: 5.1
# for LuaJIT) and AVIDEO_LUA_EXE (the interpreter that runs the specs).
set(AVIDEO_LUA "5.4" CACHE STRING "Lua to build for: 5.4, 5.3, 5.1 or luajit")

# luarocks (avideo-*.rockspec) passes the header dir of the Lua it builds
# for: that Lua is the one, whatever AVIDEO_LUA says.
if(AVIDEO_LUAROCKS_LUA_INCDIR)
  file(STRINGS "${AVIDEO_LUAROCKS_LUA_INCDIR}/lua.h" num REGEX "^#define[ \t]+LUA_VERSION_NUM[ \t]+[0-9]+")
  string(REGEX MATCH "[0-9]+$" num "${num}")
  if(EXISTS "${AVIDEO_LUAROCKS_LUA_INCDIR}/luajit.h")
    set(AVIDEO_LUA luajit CACHE STRING "" FORCE)
  elseif(num MATCHES "^50[134]$")
    string(REGEX REPLACE "^50" "5." ver ${num})
    set(AVIDEO_LUA ${ver} CACHE STRING "" FORCE)
  else()
    message(FATAL_ERROR "avideo builds for Lua 5.1, 5.3, 5.4 and LuaJIT, not the Lua in ${AVIDEO_LUAROCKS_LUA_INCDIR}")
  endif()
endif()
set_property(CACHE AVIDEO_LUA PROPERTY STRINGS 5.4 5.3 5.1 luajit)

if(AVIDEO_LUA STREQUAL "luajit")
  set(AVIDEO_LUA_PC luajit)
  set(AVIDEO_LUA_ABI 5.1)
  set(AVIDEO_LUA_EXE_NAMES luajit)
elseif(AVIDEO_LUA MATCHES "^5\\.[134]$")
  set(AVIDEO_LUA_PC lua${AVIDEO_LUA})
  set(AVIDEO_LUA_ABI ${AVIDEO_LUA})
  set(AVIDEO_LUA_EXE_NAMES lua${AVIDEO_LUA})
else()
  message(FATAL_ERROR "AVIDEO_LUA must be 5.4, 5.3, 5.1 or luajit, not '${AVIDEO_LUA}'")
endif()

pkg_check_modules(LUA REQUIRED IMPORTED_TARGET ${AVIDEO_LUA_PC})
# Only the specs and examples need it; a luarocks build does not.
find_program(AVIDEO_LUA_EXE NAMES ${AVIDEO_LUA_EXE_NAMES})
