#!/bin/sh
# ctest embed_luarocks: `luarocks make --deps-mode=none` from a clean copy of
# the sources (what git tracks, or would: nothing built), into a scratch
# tree, then require the installed module from another directory.
#   check_luarocks.sh SOURCE_DIR
# Debian's luarocks defaults to the Lua it depends on (5.1 or 5.3), and the
# build is for the Lua luarocks builds for: the user picks 5.4 once
# (`luarocks config lua_version 5.4`, here in a scratch HOME).
set -eu
src=$1
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
luarocks config --scope user lua_version 5.4 >/dev/null
if ! luarocks make --deps-mode=none --tree "$tmp/tree" >"$tmp/make.log" 2>&1; then
  cat "$tmp/make.log"
  echo "FAIL luarocks make"
  exit 1
fi
echo "ok   luarocks make --deps-mode=none (Lua 5.4) from a clean copy"

eval "$(luarocks --tree "$tmp/tree" path)"
cd /
env -u LUA_PATH_5_4 -u LUA_CPATH_5_4 lua5.4 -e "
  local tree = '$tmp/tree/'
  local avideo = require 'avideo'
  local core = assert(package.searchpath('avideo.core', package.cpath))
  assert(core:sub(1, #tree) == tree, 'avideo.core loaded from ' .. core)
  print('ok   require avideo from the rocks tree: version ' .. avideo._VERSION)"
luarocks --tree "$tmp/tree" list --porcelain | grep -q '^avideo' ||
  { echo "FAIL luarocks does not list avideo"; exit 1; }
echo "ok   luarocks lists avideo in the tree"
