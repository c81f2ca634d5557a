#!/bin/sh
# ctest embed_luarocks[@VERSION]: `luarocks make --deps-mode=none` from a
# clean copy of the sources (what git tracks, or would: nothing built), into
# a scratch tree, then require the installed module from another directory
# with that Lua's interpreter.
#   check_luarocks.sh SOURCE_DIR [5.4|5.3|5.1|luajit]   (default 5.4)
# Debian's luarocks defaults to the Lua it depends on (5.1 or 5.3), and the
# build is for the Lua luarocks builds for: the user picks the version once
# (`luarocks config lua_version 5.4`, here in a scratch HOME). For LuaJIT,
# luarocks' 5.1 with LuaJIT's headers and interpreter (docs/neovim.md).
set -eu
src=$1
lua=${2:-5.4}
case $lua in
  luajit) version=5.1 interpreter=luajit ;;
  5.[134]) version=$lua interpreter=lua$lua ;;
  *) echo "check_luarocks.sh: no Lua '$lua' (5.4, 5.3, 5.1 or luajit)" >&2; exit 2 ;;
esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/src" "$tmp/home"

if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$src" && git ls-files --cached --others --exclude-standard |
    while IFS= read -r f; do [ -f "$f" ] && printf '%s\n' "$f"; done |
    tar -cf - -T -) | tar -xf - -C "$tmp/src"
else
  (cd "$src" && tar --exclude='./build*' -cf - .) | tar -xf - -C "$tmp/src"
fi

cd "$tmp/src"
export HOME="$tmp/home" # luarocks' cache and user config stay in the scratch dir
# the README's one-time choice of Lua version, then the plain command
luarocks config --scope user lua_version $version >/dev/null
if [ "$lua" = luajit ]; then
  luarocks config --scope user lua_interpreter luajit >/dev/null
  luarocks config --scope user variables.LUA_INCDIR "$(pkg-config --variable=includedir luajit)" >/dev/null
fi
if ! luarocks make --deps-mode=none --tree "$tmp/tree" >"$tmp/make.log" 2>&1; then
  cat "$tmp/make.log"
  echo "FAIL luarocks make"
  exit 1
fi
# the build says which Lua it took (cmake/lua_version.cmake, from the headers)
grep -q "^AVIDEO_LUA:STRING=$lua\$" "$tmp/src/build.luarocks/CMakeCache.txt" ||
  { echo "FAIL luarocks did not build for Lua $lua"; exit 1; }
echo "ok   luarocks make --deps-mode=none (Lua $lua) from a clean copy"

eval "$(luarocks --tree "$tmp/tree" path)"
cd /
# package.searchpath is 5.2+: the C search path walked by hand
env -u LUA_PATH_5_4 -u LUA_CPATH_5_4 -u LUA_PATH_5_3 -u LUA_CPATH_5_3 $interpreter -e "
  local tree = '$tmp/tree/'
  local avideo = require 'avideo'
  local core
  for t in package.cpath:gmatch('[^;]+') do
    local f = io.open((t:gsub('?', 'avideo/core')), 'rb')
    if f then f:close(); core = t:gsub('?', 'avideo/core'); break end
  end
  assert(core and core:sub(1, #tree) == tree, 'avideo.core loaded from ' .. tostring(core))
  print('ok   require avideo from the rocks tree under $interpreter: version ' .. avideo._VERSION)"
luarocks --tree "$tmp/tree" list --porcelain | grep -q '^avideo' ||
  { echo "FAIL luarocks does not list avideo"; exit 1; }
echo "ok   luarocks lists avideo in the tree"
