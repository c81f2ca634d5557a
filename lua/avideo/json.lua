--- JSON: a strict decoder in C, lua-cjson's encoder, and a way to send an
-- empty array.
-- Decoding (src/core/json_decode.c): integer literals that fit int64 are
-- Lua integers, exact; numbers written with a fraction or exponent are
-- floats (1.0 stays 1.0); null is json.null; errors name their byte.
-- Encoding: Debian's lua-cjson 2.1.0 encodes every empty table as `{}` and
-- has no empty-array marker, so `json.array(t)` records t in a weak set
-- (the decoder records every `[]` there too). A value holding none is
-- cjson's to encode; otherwise encode walks it itself: marked empty tables
-- become `[]`, everything else exactly cjson's text, its scalars written by
-- cjson. No text is substituted afterwards: no user string can turn into
-- an array. cjson writes numbers with 14 significant digits, which changes
-- larger integers (ids, microsecond times) and many floats: a value holding
-- such a number is walked too, and those numbers written exactly.
local cjson = require "cjson"

local core = require "avideo.core"
local errors = require "avideo.errors"

local codec = cjson.new() -- our own settings, not the global cjson's
codec.encode_sparse_array(false, 2, 10)
local by_cjson = codec.encode

local floor, huge, concat, format = math.floor, math.huge, table.concat, string.format
local math_type = math.type -- Lua 5.3+ only: nil under 5.1 and LuaJIT, whose numbers are all floats

-- True if cjson's text for number x ("%.14g") would not read back as x:
-- integers of 15 digits or more, and floats that need more digits.
local function lossy(x)
  if x ~= x or x == huge or x == -huge then return false end -- cjson refuses them
  if x == floor(x) then
    return x >= 1e14 or x <= -1e14
  end
  return tonumber(format("%.14g", x)) ~= x
end

-- The exact text of a number cjson would write lossily: an integer's
-- digits, a float's shortest text that reads back as itself.
local function number_text(x)
  if math_type ~= nil and math_type(x) == "integer" then return format("%d", x) end
  -- 5.1 and LuaJIT: an integral float is written as the integer it holds
  if math_type == nil and x == floor(x) and x < 2 ^ 63 and x > -2 ^ 63 then return format("%.0f", x) end
  for digits = 15, 16 do
    local text = format("%." .. digits .. "g", x)
    if tonumber(text) == x then return text end
  end
  return format("%.17g", x)
end

local M = { null = cjson.null }

local arrays = setmetatable({}, { __mode = "k" })

--- Mark t (a new table if nil) to be encoded as a JSON array, even when empty.
function M.array(t)
  t = t or {}
  if type(t) ~= "table" then errors.bad_argument("avideo.json.array", "t", "table", t) end
  arrays[t] = true
  return t
end

-- cjson's own limits, kept: 1000 levels of nesting, and no array whose
-- largest index is over twice its count and over 10.
local MAX_DEPTH = 1000

-- The length of t as cjson's encoder sees it: the largest key if every
-- key is a whole number >= 1 (then an array, holes written as null), else
-- nil (an object). Raw access, as cjson: no __pairs, no __index.
local function array_length(t)
  local max, items = 0, 0
  for k in next, t do
    if type(k) ~= "number" or k < 1 or k ~= floor(k) or k == huge then return nil end
    if k > max then max = k end
    items = items + 1
  end
  if max > items * 2 and max > 10 then error("excessively sparse array (largest index " .. max .. ")", 0) end
  return max
end

-- Append v's text to out after out[n]; returns the new n. `open` holds
-- the tables being written (a cycle is refused, a table seen twice apart
-- is written twice, as cjson does).
local function write(v, out, n, depth, open)
  if type(v) ~= "table" then
    out[n + 1] = type(v) == "number" and lossy(v) and number_text(v) or by_cjson(v)
    return n + 1
  end
  if open[v] then error("a table that contains itself (a cycle)", 0) end
  if depth >= MAX_DEPTH then error("nested deeper than " .. MAX_DEPTH .. " levels", 0) end
  local len = array_length(v)
  if len == 0 and arrays[v] then
    out[n + 1] = "[]"
    return n + 1
  end
  open[v] = true
  if len and len > 0 then
    out[n + 1] = "["
    n = write(rawget(v, 1), out, n + 1, depth + 1, open)
    for i = 2, len do
      out[n + 1] = ","
      n = write(rawget(v, i), out, n + 1, depth + 1, open)
    end
    out[n + 1] = "]"
  else
    local sep = "{"
    for k, x in next, v do
      local tk = type(k)
      if tk == "string" then
        out[n + 1] = sep .. by_cjson(k) .. ":"
      elseif tk == "number" then
        -- as cjson writes number keys, in quotes
        out[n + 1] = sep .. '"' .. (lossy(k) and number_text(k) or by_cjson(k)) .. '":'
      else
        error("table key must be a number or string, got a " .. tk .. " key", 0)
      end
      n = write(x, out, n + 1, depth + 1, open)
      sep = ","
    end
    out[n + 1] = sep == "{" and "{}" or "}"
  end
  open[v] = nil
  return n + 1
end

-- True if t reaches a marked empty table or a number cjson would write
-- lossily. It only looks, so it is cheaper than `write`: without such a
-- value cjson encodes the whole at C speed. A cycle is refused here, not
-- left to cjson (which would only say that the nesting is too deep).
local function needs_walk(t, depth, open)
  if arrays[t] and next(t) == nil then return true end
  if open[t] then error("a table that contains itself (a cycle)", 0) end
  if depth >= MAX_DEPTH then error("nested deeper than " .. MAX_DEPTH .. " levels", 0) end
  open[t] = true
  for k, x in next, t do
    local tx = type(x)
    if tx == "table" then
      if needs_walk(x, depth + 1, open) then return true end
    elseif tx == "number" and lossy(x) then
      return true
    end
    if type(k) == "number" and lossy(k) then return true end
  end
  open[t] = nil
  return false
end

local function encode(value)
  local tv = type(value)
  if tv == "number" and lossy(value) then return number_text(value) end
  if tv ~= "table" or not needs_walk(value, 0, {}) then return by_cjson(value) end
  local out = {}
  return concat(out, "", 1, write(value, out, 0, 0, {}))
end

--- Encode a Lua value as compact JSON; raises an `invalid` error if it cannot.
function M.encode(value)
  local ok, text = pcall(encode, value)
  if not ok then
    -- cjson's messages carry the position of its caller (json.lua:NN)
    errors.raise("invalid", "value cannot be encoded as JSON: " .. (tostring(text):gsub("^[^:]*:%d+: ", "")))
  end
  return text
end

--- Decode text: the value, or nil, a message and the byte it is about
-- (for callers that word the error themselves, as response:json()).
M.raw_decode = core.json_decoder(cjson.null, arrays)
local raw_decode = M.raw_decode

--- Decode the body of a finished request op where it lies, in C: the body
-- never becomes a Lua string (response:json()). Returns as raw_decode.
function M.raw_decode_body(op)
  return op:json(cjson.null, arrays)
end

--- Decode JSON text; raises an `invalid` error on bad input.
function M.decode(text)
  if type(text) ~= "string" then errors.bad_argument("avideo.json.decode", "text", "string", text) end
  local v, why, byte = raw_decode(text)
  if v == nil then errors.raise("invalid", ("invalid JSON at byte %d: %s"):format(byte, why)) end
  return v
end

return M
