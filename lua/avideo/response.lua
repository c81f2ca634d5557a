--- Responses: status, reason, ok, url, headers (case-insensitive), text(),
-- json(), raise_for_status(). Headers, reason, ok and method are worked out
-- on first use from the finished request op: most callers only read the
-- status and the body, and a small table is cheaper to make and collect.
local core = require "avideo.core"
local errors = require "avideo.errors"
local json = require "avideo.json"
local sched = require "avideo.scheduler"
local BLOCKING = sched.BLOCKING

local raw_decode_body = json.raw_decode_body
local byte, sub, find, gsub = string.byte, string.sub, string.find, string.gsub

local Response = { __name = "avideo.Response" }

local REASONS = {
  [100] = "Continue", [200] = "OK", [201] = "Created", [202] = "Accepted", [204] = "No Content",
  [206] = "Partial Content", [301] = "Moved Permanently", [302] = "Found", [303] = "See Other",
  [304] = "Not Modified", [307] = "Temporary Redirect", [308] = "Permanent Redirect",
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [405] = "Method Not Allowed", [408] = "Request Timeout", [409] = "Conflict", [410] = "Gone",
  [413] = "Content Too Large", [415] = "Unsupported Media Type", [422] = "Unprocessable Content",
  [429] = "Too Many Requests", [500] = "Internal Server Error", [501] = "Not Implemented",
  [502] = "Bad Gateway", [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

-- Header tables index case-insensitively; keys are stored lowercased. A
-- name that came more than once reads as its values joined with ", " (as
-- requests shows them); headers:getall(name) lists each one. The lists
-- are kept only for names that repeat, beside the table (weak, by table)
-- rather than in it, so pairs(headers) still shows only headers.
-- headers.getall is always the method: a header called "getall" (any case)
-- is not a field, and is read as headers:getall("getall").
local repeated = setmetatable({}, { __mode = "k" })

local Headers = { __name = "avideo.Headers" }
local getall
function Headers.__index(t, k)
  if k == "getall" then return getall end
  if type(k) == "string" then return rawget(t, k:lower()) end
end

--- headers:getall(name) -> every value of the header, in the order they
-- came (a new list each call; empty when absent).
function getall(h, name)
  if getmetatable(h) ~= Headers then errors.raise("invalid", "getall must be called as a method: headers:getall(name)") end
  if type(name) ~= "string" then errors.bad_argument("headers:getall", "name", "string", name) end
  name = name:lower()
  local lists = repeated[h]
  local list = lists and lists[name]
  if list then
    local copy = {}
    for i = 1, #list do copy[i] = list[i] end
    return copy
  end
  local v = rawget(h, name)
  return { v } -- {} when v is nil
end

-- A header seen again (or one called "getall"): keep each value.
local function add_repeat(h, name, old, value)
  local lists = repeated[h]
  if not lists then
    lists = {}
    repeated[h] = lists
  end
  local list = lists[name]
  if not list then
    list = { old } -- {} for "getall", which has no field
    lists[name] = list
  end
  list[#list + 1] = value
  if name ~= "getall" then rawset(h, name, old .. ", " .. value) end
end

-- The header block libcurl kept, as the server sent it: lines end in CR LF
-- (or LF). A bare CR inside a line is a space, as RFC 9112 lets a
-- recipient read it (split there, "X-A: a\rSet-Cookie: b" made a header
-- libcurl never saw), and a folded line (obs-fold: it starts with a space
-- or tab) continues the header before it, after one space.
local function parse_headers(raw)
  local names, values, n = {}, {}, 0
  local reason
  for line in raw:gmatch("[^\n]+") do
    if byte(line, -1) == 13 then line = sub(line, 1, -2) end -- the CR of CR LF
    if find(line, "\r", 1, true) then line = gsub(line, "\r", " ") end
    if not reason then
      reason = line:match("^HTTP/[%d.]+ +%d%d%d ?(.*)$") or ""
    elseif line:find("^[ \t]") then
      if n > 0 then
        local more = line:match("^[ \t]*(.-)[ \t]*$")
        if more ~= "" then values[n] = values[n] == "" and more or values[n] .. " " .. more end
      end
    else
      local name, value = line:match("^([^:]+):[ \t]*(.-)[ \t]*$")
      if name then
        n = n + 1
        names[n], values[n] = name:lower(), value
      end
    end
  end
  local h = setmetatable({}, Headers)
  for i = 1, n do
    local name, value = names[i], values[i]
    local old = rawget(h, name)
    if old == nil and name ~= "getall" then
      rawset(h, name, value)
    else
      add_repeat(h, name, old, value)
    end
  end
  return h, reason
end

local lazy = {}
function lazy.headers(r)
  local h, reason = parse_headers(r._op:headers())
  rawset(r, "headers", h)
  if rawget(r, "reason") == nil then rawset(r, "reason", reason ~= "" and reason or REASONS[r.status] or "") end
  return h
end
function lazy.reason(r)
  lazy.headers(r)
  return rawget(r, "reason")
end
-- The responses this one was redirected from, oldest first: { status,
-- url, headers } each (empty when none).
function lazy.history(r)
  local list = {}
  for i, hop in ipairs(r._op:history()) do
    list[i] = { status = hop[1], url = hop[2], headers = (parse_headers(hop[3])) }
  end
  rawset(r, "history", list)
  return list
end
-- Timings (op:timings()): nil until the transfer has ended (a stream
-- still being read).
local function timings(r)
  local t, elapsed, reused = r._op:timings()
  if t then
    -- kept only once final: a stream's are still coming
    rawset(r, "timings", t)
    rawset(r, "elapsed", elapsed)
    rawset(r, "connection_reused", reused)
  end
  return t, elapsed, reused
end
function lazy.timings(r) return (timings(r)) end
function lazy.elapsed(r) return select(2, timings(r)) end
function lazy.connection_reused(r) return select(3, timings(r)) end
function lazy.ok(r)
  return r.status < 400
end
-- retries made: 0 unless the retry loop (retry.lua) set it
function lazy.retries()
  return 0
end
function lazy.method(r)
  local m = r._op:method()
  rawset(r, "method", m)
  return m
end

local methods = {}

-- r.json() where r:json() was meant: self is nil, and Lua's own error
-- would be "attempt to index a nil value". One comparison a call.
local function not_a_method(name)
  errors.raise("invalid", ("response:%s must be called as a method: r:%s(...)"):format(name, name))
end

-- Methods first: r:json() and r:raise_for_status() are the common lookups.
function Response.__index(r, k)
  local m = methods[k]
  if m ~= nil then return m end
  local f = lazy[k]
  if f then return f(r) end
end

function Response.__tostring(r)
  return ("<avideo.Response %d %s>"):format(r.status, r.url)
end

-- A streamed response (stream = true) is handed over once its header
-- block is in; its body comes through read(), a piece at a time, from a
-- buffer the core keeps at about 64 KiB (read_bufsize if larger): when the
-- reader lags, the transfer pauses.

local function bad_read_size(n)
  errors.raise("invalid", ("response:read(n): n must be a whole number > 0 (or nil for what has come), got %s")
    :format(type(n) == "string" and ("%q"):format(n) or tostring(n)))
end

-- The next piece, nil at the end, or nil, kind, message, phase: what
-- op:read says, after waiting for it if nothing has come yet: in the task,
-- or outside avideo.run (task nil) blocking.
local function read_raw(self, n, task)
  local op = self._op
  while true do
    local v, kind, message, phase = op:read(n, task or BLOCKING)
    if v ~= false then
      if v == nil and not kind then rawset(self, "_ended", true) end -- save() has nothing left
      return v, kind, message, phase
    end
    if task then sched.await_op(task, op) else sched.block_on(op) end
  end
end

local function read_checked(self, n, task)
  local v, kind, message, phase = read_raw(self, n, task)
  if v == nil and kind then
    errors.raise_failed(kind, message, { url = self.url, status = self.status, method = self.method }, phase)
  end
  return v
end

-- The rest of a streamed body as one string, within max_body_size.
local function read_rest(self, _, task)
  local parts, size, limit = {}, 0, self._max_body
  while true do
    local piece = read_checked(self, nil, task)
    if piece == nil then return table.concat(parts) end
    size = size + #piece
    if limit and limit > 0 and size > limit then
      self._op:close()
      errors.raise("protocol", ("response body larger than max_body_size (%d bytes)"):format(limit),
        { url = self.url, status = self.status, method = self.method })
    end
    parts[#parts + 1] = piece
  end
end

-- Runs fn(self, ..., task) in the calling task, or, outside any task, as
-- the main task of avideo.run (the blocking form).
local function in_task(what, fn, self, a)
  local task = sched.waiting_task(what)
  if task == nil then
    return sched.run(function() return fn(self, a, sched.current()) end)
  end
  return fn(self, a, task)
end

--- Streamed responses: the next piece of the body (at most n bytes), or
-- nil at the end. Waits inside a task, blocks outside one.
function methods:read(n)
  if self == nil then not_a_method("read") end
  if not self._stream then errors.raise("invalid", "response:read() is for streamed responses (stream = true)") end
  if n ~= nil and (type(n) ~= "number" or n < 1 or n ~= math.floor(n) or n == math.huge) then bad_read_size(n) end
  -- outside any task it blocks on its own: no avideo.run per piece
  return read_checked(self, n, sched.waiting_task("response:read"))
end

--- Streamed responses: for chunk in response:chunks(n) do ... end
function methods:chunks(n)
  if self == nil then not_a_method("chunks") end
  if n ~= nil and (type(n) ~= "number" or n < 1 or n ~= math.floor(n) or n == math.huge) then bad_read_size(n) end
  return function() return self:read(n) end
end

-- The body into the file f (see save_to): the bytes written, or nil,
-- kind, message, phase for a transfer that failed, or nil, nil, message
-- for a file that could not be written. The bytes go from the core's
-- buffer to the file, never a Lua string each (op:save_into).
local function write_body(self, f, task)
  local op, total = self._op, 0
  while true do
    local n, kind, message, phase = op:save_into(f, task)
    if n == false then
      sched.await_op(task, op)
    elseif n == nil then
      if kind or message then return nil, kind, message, phase end
      if self._stream then rawset(self, "_ended", true) end
      return total
    else
      total = total + n
      if not self._stream then return total end -- a buffered body goes in one piece
    end
  end
end

local function save_to(self, path, task)
  if self._stream and rawget(self, "_ended") then
    -- an empty .part renamed over path would destroy what it holds
    errors.raise("invalid", ("cannot save the response to %s: its streamed body was already read to its end")
      :format(path), { url = self.url })
  end
  -- a device or a FIFO (/dev/null, a pipe) is written to as it is: a
  -- .part file renamed over it would replace it (as root, /dev/null)
  local direct = core.is_special(path)
  local part = direct and path or path .. ".part"
  local f, why = io.open(part, "wb")
  if not f then
    errors.raise("invalid", ("cannot save the response to %s: %s"):format(path, why), { url = self.url })
  end
  local total, kind, message, phase = write_body(self, f, task)
  local closed, cerr = f:close()
  local werr = (not total and not kind) and message or (not closed and cerr) or nil
  if not total or werr then
    if not direct then os.remove(part) end
    if self._stream then self._op:close() end
    if kind then
      errors.raise_failed(kind, message, { url = self.url, status = self.status, method = self.method }, phase)
    end
    errors.raise("invalid", ("cannot save the response to %s: %s"):format(path, werr), { url = self.url })
  end
  if direct then return total end
  local renamed, rerr = os.rename(part, path)
  if not renamed then
    os.remove(part)
    errors.raise("invalid", ("cannot save the response to %s: %s"):format(path, rerr), { url = self.url })
  end
  return total
end

--- Write the (rest of the) body to path: into path .. ".part", renamed
-- once complete, removed on failure; a device or FIFO (/dev/null) is
-- written to directly. Returns the number of bytes.
function methods:save(path)
  if self == nil then not_a_method("save") end
  if type(path) ~= "string" then errors.bad_argument("response:save", "path", "string", path) end
  return in_task("response:save", save_to, self, path)
end

--- End a streamed response early: the transfer stops, its connection slot
-- frees. Nothing for a buffered one. Also `local r <close> = ...`.
function methods:close()
  if self == nil then not_a_method("close") end
  if self._stream then self._op:close() end
end
Response.__close = function(r) r:close() end

-- The body stays in the request op, in C, until asked for: as a Lua string
-- by text() (made once, kept by the op), or decoded where it lies by json(),
-- so that a body that is only decoded is never copied. A streamed
-- response's text() and json() read what is left of it.

--- The body as a string.
function methods:text()
  if self == nil then not_a_method("text") end
  if self._stream then
    local text = rawget(self, "_text")
    if text == nil then
      text = in_task("response:text", read_rest, self)
      rawset(self, "_text", text)
    end
    return text
  end
  return self._op:body()
end

--- The body decoded as JSON; raises an `invalid` error if it is not JSON.
function methods:json()
  if self == nil then not_a_method("json") end
  local v, why, byte
  if self._stream then
    v, why, byte = json.raw_decode(self:text())
  else
    v, why, byte = raw_decode_body(self._op)
  end
  if v == nil then
    errors.raise("invalid", ("response body is not valid JSON at byte %d: %s"):format(byte, why),
      { url = self.url, status = self.status, method = self.method })
  end
  return v
end

--- Raise an `http` error for a 4xx/5xx status; return the response otherwise.
function methods:raise_for_status()
  if self == nil then not_a_method("raise_for_status") end
  if self.status >= 400 then
    errors.raise("http", ("%d %s"):format(self.status, self.reason),
      { url = self.url, status = self.status, method = self.method, response = self })
  end
  return self
end

local M = {}

--- A response for a finished request op (its body stays in the op); a
-- streamed one (max_body: its max_body_size) reads its body as it comes.
function M.new(status, url, op, stream, max_body)
  if stream then
    return setmetatable({ status = status, url = url, _op = op, _stream = true, _max_body = max_body }, Response)
  end
  return setmetatable({ status = status, url = url, _op = op }, Response)
end

M.Response = Response
return M
