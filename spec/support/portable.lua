--- busted --helper for running the 5.4 specs under Lua 5.3, 5.1 and
-- LuaJIT (spec/CMakeLists.txt's name@version tests). The specs are written
-- for 5.4 and stay so; this helper lets the older parsers read them:
--   * `<close>` and `<const>` attributes are erased when a spec file is
--     loaded: the sessions they would have closed at the end of their
--     scope are closed by the garbage collector instead, as any 5.1 user's
--     session not closed with session:close() is;
--   * math.type and math.tointeger come from avideo.compat when the Lua
--     has none (5.1, LuaJIT: whole doubles below 2^53 count as integers);
--   * on PUC 5.1 only: "\u{XXXX}" escapes become decimal ones, and pcall
--     is avideo.pcall (5.1's own cannot wait inside a task).
-- Tests assert each version's own behaviour where it differs; only the
-- <close> statement's test is left out by name (spec/lua_versions.cmake).
local compat = require "avideo.compat"

if not math.type then rawset(math, "type", compat.math_type) end
if not math.tointeger then rawset(math, "tointeger", compat.tointeger) end
if not table.pack then rawset(table, "pack", compat.pack) end
if not table.unpack then rawset(table, "unpack", compat.unpack) end

-- "\u{XXXX}" in a string literal (5.3+, LuaJIT) as 5.1's decimal escapes
local function utf8_escape(hex)
  local c, bytes = tonumber(hex, 16), {}
  if c < 0x80 then
    bytes = { c }
  elseif c < 0x800 then
    bytes = { 0xC0 + math.floor(c / 0x40), 0x80 + c % 0x40 }
  elseif c < 0x10000 then
    bytes = { 0xE0 + math.floor(c / 0x1000), 0x80 + math.floor(c / 0x40) % 0x40, 0x80 + c % 0x40 }
  else
    bytes = { 0xF0 + math.floor(c / 0x40000), 0x80 + math.floor(c / 0x1000) % 0x40,
              0x80 + math.floor(c / 0x40) % 0x40, 0x80 + c % 0x40 }
  end
  for i, b in ipairs(bytes) do bytes[i] = ("\\%03d"):format(b) end
  return table.concat(bytes)
end

-- PUC 5.1's pcall cannot wait (yield) inside a task; the specs' pcalls
-- around requests use avideo's, as a 5.1 user would (avideo.pcall).
if compat.lua51 and not compat.luajit then pcall = compat.pcall end -- luacheck: ignore

local plain_loadfile = loadfile
function loadfile(name, ...) -- luacheck: ignore (busted's lua loader calls the global)
  if type(name) ~= "string" or not name:match("_spec%.lua$") then return plain_loadfile(name, ...) end
  local f, err = io.open(name, "rb")
  if not f then return nil, err end
  local text = f:read("*a")
  f:close()
  text = text:gsub("%s<close>", ""):gsub("%s<const>", "")
  if compat.lua51 and not compat.luajit then text = text:gsub("\\u{(%x+)}", utf8_escape) end
  return (loadstring or load)(text, "@" .. name)
end
