-- luarocks make --deps-mode=none  (Lua 5.4, 5.3, 5.1 or LuaJIT: the Lua
-- luarocks builds for; Debian's luarocks defaults to 5.3: add
-- --lua-version 5.4, or run `luarocks config lua_version 5.4` once)
-- builds avideo.core with the project's CMake (module only: no server,
-- benchmarks or tests) and installs it with the Lua modules into the tree.
-- --deps-mode=none because the dependencies come from the system: lua-cjson
-- from Debian's package, libuv and libcurl as -dev packages (CMake finds
-- them with pkg-config; Debian keeps curl's header in a multiarch dir that
-- luarocks' external_dependencies search would miss).
rockspec_format = "3.0"
package = "avideo"
version = "scm-1"

source = {
  url = "git+file://.",
}

description = {
  summary = "Async HTTP for Lua 5.4, 5.3, 5.1 and LuaJIT on libuv and libcurl, in the words of aiohttp and asyncio",
  detailed = [[
avideo gives Lua (5.4, 5.3, 5.1, LuaJIT) requests.get, aiohttp.ClientSession, asyncio.gather and
TCPConnector(limit_per_host=...): a C core on libuv and libcurl's
multi_socket interface and a thin Lua layer. Embeddable: hosts can drive it
from their own event loop (libuv, luv, or any loop that polls a descriptor).
]],
}

dependencies = {
  "lua >= 5.1, < 5.5",
  "lua-cjson",
}

build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    -- luarocks' module dirs for this rock; it deploys them into the tree
    AVIDEO_LUA_CDIR = "$(LIBDIR)",
    AVIDEO_LUA_LDIR = "$(LUADIR)",
    -- the Lua luarocks builds for: the build picks that version (cmake/lua_version.cmake)
    AVIDEO_LUAROCKS_LUA_INCDIR = "$(LUA_INCDIR)",
    AVIDEO_TESTS = "OFF",
    AVIDEO_BUILD_SERVER = "OFF",
    AVIDEO_BUILD_BENCH = "OFF",
  },
}
