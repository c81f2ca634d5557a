--- JSON through lua-cjson, with a way to send an empty array.
-- Debian's lua-cjson 2.1.0 encodes every empty table as `{}` and has no
-- empty-array marker, so `json.array(t)` records t in a weak set and encode
-- writes such tables as `[]` when they are empty.
local cjson = require "cjson"

local errors = require "avideo.errors"

local codec = cjson.new() -- our own settings, not the global cjson's
codec.encode_sparse_array(false, 2, 10)

local M = { null = cjson.null }

local arrays = setmetatable({}, { __mode = "k" })

--- Mark t (a new table if nil) to be encoded as a JSON array, even when empty.
function M.array(t)
  t = t or {}
  if type(t) ~= "table" then errors.bad_argument("avideo.json.array", "t", "table", t) end
  arrays[t] = true
  return t
end

-- Replace marked empty tables by a placeholder string cjson cannot produce
-- from user data: a NUL-led token is escaped as \u0000 by cjson, so the raw
-- NUL below never appears in its output except from this placeholder.
local PLACEHOLDER = "\0avideo-empty-array\0"
local ENCODED = '"\\u0000avideo-empty-array\\u0000"'

local function substitute(v, seen)
  if type(v) ~= "table" then return v, false end
  if arrays[v] and next(v) == nil then return PLACEHOLDER, true end
  if seen[v] then error("cannot encode a table that contains itself", 0) end
  seen[v] = true
  local copy, changed = {}, false
  for k, x in pairs(v) do
    local y, c = substitute(x, seen)
    copy[k] = y
    changed = changed or c
  end
  seen[v] = nil
  if not changed then return v, false end
  if arrays[v] then arrays[copy] = true end
  return copy, true
end

--- Encode a Lua value as compact JSON; raises an `invalid` error if it cannot.
function M.encode(value)
  local ok, out = pcall(function()
    if next(arrays) == nil then return codec.encode(value) end
    local v, changed = substitute(value, {})
    local s = codec.encode(v)
    if changed then
      -- the placeholder may be a key's value or an array element
      s = s:gsub(ENCODED:gsub("%p", "%%%0"), "[]")
    end
    return s
  end)
  if not ok then errors.raise("invalid", "value cannot be encoded as JSON: " .. (tostring(out):gsub("^[^:]*:%d+: ", ""))) end
  return out
end

--- Decode JSON text; raises an `invalid` error on bad input.
function M.decode(text)
  if type(text) ~= "string" then errors.bad_argument("avideo.json.decode", "text", "string", text) end
  local ok, v = pcall(codec.decode, text)
  if not ok then errors.raise("invalid", "invalid JSON: " .. tostring(v)) end
  return v
end

M.raw_decode = codec.decode -- raises plain strings; for hot paths that wrap it

return M
