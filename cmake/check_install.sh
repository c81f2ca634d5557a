#!/bin/sh
# ctest embed_install: `cmake --install` a build into a scratch prefix, then
# check what a user and a host program get from it.
#   check_install.sh BUILD_DIR HOST_C
# The module must load with lua5.4's own default search paths (those of
# Debian's lua5.4, with /usr/local standing for the prefix), from another
# directory, and a host must compile against the header through pkg-config.
set -eu
build=$1
host_c=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" || { cat "$tmp/install.log"; exit 1; }

cd /
version=$(env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 lua5.4 -e "
  local prefix = '$prefix/'
  package.path = package.path:gsub('/usr/local/', prefix)
  package.cpath = package.cpath:gsub('/usr/local/', prefix)
  local avideo = require 'avideo'
  for _, m in ipairs { {'avideo', package.path}, {'avideo.scheduler', package.path}, {'avideo.core', package.cpath} } do
    local file = assert(package.searchpath(m[1], m[2]))
    assert(file:sub(1, #prefix) == prefix, m[1] .. ' loaded from ' .. file .. ', not from the prefix')
  end
  print(avideo._VERSION)")
echo "ok   require 'avideo' from the installed tree: version $version"

pc=$(find "$prefix" -name avideo.pc)
[ -n "$pc" ] || { echo "FAIL no avideo.pc installed"; exit 1; }
export PKG_CONFIG_PATH="$(dirname "$pc")"
cmod=$(pkg-config --variable=INSTALL_CMOD avideo)
lmod=$(pkg-config --variable=INSTALL_LMOD avideo)
[ -f "$cmod/avideo/core.so" ] || { echo "FAIL INSTALL_CMOD=$cmod has no avideo/core.so"; exit 1; }
[ -f "$lmod/avideo.lua" ] || { echo "FAIL INSTALL_LMOD=$lmod has no avideo.lua"; exit 1; }
# shellcheck disable=SC2046
cc -Wall -Werror -c "$host_c" -o "$tmp/host.o" $(pkg-config --cflags avideo)
echo "ok   avideo.pc ($pc): module dirs exist, a host compiles against avideo.h"
