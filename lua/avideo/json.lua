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

-- Replace marked empty tables by a placeholder string, encode, then put
-- `[]` where the placeholder landed. The placeholder starts with a NUL
-- (escaped by cjson as \u0000); if the user's data holds that very string,
-- a placeholder with another number is chosen.
local function placeholder(n) return "\0avideo-empty-array-" .. n .. "\0" end

local function substitute(v, mark, seen)
  local tv = type(v)
  if tv == "string" then
    if v == mark then error(mark, 0) end -- collision: the caller retries
    return v, false
  end
  if tv ~= "table" then return v, false end
  if arrays[v] and next(v) == nil then return mark, true end
  if seen[v] then error("cannot encode a table that contains itself", 0) end
  seen[v] = true
  local copy, changed = {}, false
  for k, x in pairs(v) do
    if k == mark then error(mark, 0) end
    local y, c = substitute(x, mark, seen)
    copy[k] = y
    changed = changed or c
  end
  seen[v] = nil
  if not changed then return v, false end
  if arrays[v] then arrays[copy] = true end
  return copy, true
end

local function encode_with_arrays(value)
  for n = 1, 100 do
    local mark = placeholder(n)
    local ok, v, changed = pcall(substitute, value, mark, {})
    if ok then
      local s = codec.encode(v)
      if not changed then return s end
      local encoded = codec.encode(mark):gsub("%p", "%%%0")
      return (s:gsub(encoded, "[]"))
    elseif v ~= mark then
      error(v, 0)
    end
  end
  error("no placeholder free for empty arrays", 0)
end

--- Encode a Lua value as compact JSON; raises an `invalid` error if it cannot.
function M.encode(value)
  local ok, out = pcall(function()
    if next(arrays) == nil then return codec.encode(value) end
    return encode_with_arrays(value)
  end)
  if not ok then errors.raise("invalid", "value cannot be encoded as JSON: " .. (tostring(out):gsub("^[^:]*:%d+: ", ""))) end
  return out
end

-- lua-cjson 2.1.0 decodes every number as a float (925068.0); JSON has one
-- number type, and Lua users expect whole numbers to be integers, as
-- Python's json gives int. The C core converts them in place.
local integers = require("avideo.core").json_integers

--- Decode text, raising plain strings (for callers that wrap the error).
function M.raw_decode(text)
  return integers(codec.decode(text))
end

--- Decode JSON text; raises an `invalid` error on bad input.
function M.decode(text)
  if type(text) ~= "string" then errors.bad_argument("avideo.json.decode", "text", "string", text) end
  local ok, v = pcall(M.raw_decode, text)
  if not ok then errors.raise("invalid", "invalid JSON: " .. (tostring(v):gsub("^[^:]*:%d+: ", ""))) end
  return v
end

return M
