--- busted --helper for running the 5.4 specs under Lua 5.3, 5.1 and
-- LuaJIT (spec/CMakeLists.txt's name@version tests). The specs are written
-- for 5.4 and stay so; this helper lets the older parsers read them:
--   * `<close>` and `<const>` attributes are erased when a spec file is
--     loaded: the sessions they would have closed at the end of their
--     scope are closed by the garbage collector instead, as any 5.1 user's
--     session not closed with session:close() is;
--   * math.type and math.tointeger come from avideo.compat when the Lua
--     has none (5.1, LuaJIT: whole doubles within 2^53 count as integers).
-- Tests of 5.4-only behaviour are filtered out by name in spec/CMakeLists.txt.
local compat = require "avideo.compat"

if not math.type then rawset(math, "type", compat.math_type) end
if not math.tointeger then rawset(math, "tointeger", compat.tointeger) end
if not table.pack then rawset(table, "pack", compat.pack) end
if not table.unpack then rawset(table, "unpack", compat.unpack) end

local plain_loadfile = loadfile
function loadfile(name, ...) -- luacheck: ignore (busted's lua loader calls the global)
  if type(name) ~= "string" or not name:match("_spec%.lua$") then return plain_loadfile(name, ...) end
  local f, err = io.open(name, "rb")
  if not f then return nil, err end
  local text = f:read("*a")
  f:close()
  text = text:gsub("%s<close>", ""):gsub("%s<const>", "")
  return (loadstring or load)(text, "@" .. name)
end
