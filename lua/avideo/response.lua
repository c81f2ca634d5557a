--- Responses: status, reason, ok, url, headers (case-insensitive), text(),
-- json(), raise_for_status(). Headers, reason, ok and method are worked out
-- on first use from the finished request op: most callers only read the
-- status and the body, and a small table is cheaper to make and collect.
local errors = require "avideo.errors"
local json = require "avideo.json"

local raw_decode_body = json.raw_decode_body

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

-- Header tables index case-insensitively; keys are stored lowercased.
local Headers = { __name = "avideo.Headers" }
function Headers.__index(t, k)
  if type(k) == "string" then return rawget(t, k:lower()) end
end

local function parse_headers(raw)
  local h = setmetatable({}, Headers)
  local reason
  for line in raw:gmatch("[^\r\n]+") do
    if not reason then
      reason = line:match("^HTTP/[%d.]+ %d%d%d ?(.*)$") or ""
    else
      local name, value = line:match("^([^:]+):[ \t]*(.-)[ \t]*$")
      if name then
        name = name:lower()
        local old = rawget(h, name)
        rawset(h, name, old and (old .. ", " .. value) or value)
      end
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
function lazy.ok(r)
  return r.status < 400
end
function lazy.method(r)
  local m = r._op:method()
  rawset(r, "method", m)
  return m
end

local methods = {}

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

-- The body stays in the request op, in C, until asked for: as a Lua string
-- by text() (made once, kept by the op), or decoded where it lies by json(),
-- so that a body that is only decoded is never copied.

--- The body as a string.
function methods:text()
  return self._op:body()
end

--- The body decoded as JSON; raises an `invalid` error if it is not JSON.
function methods:json()
  local v, why, byte = raw_decode_body(self._op)
  if v == nil then
    errors.raise("invalid", ("response body is not valid JSON at byte %d: %s"):format(byte, why),
      { url = self.url, status = self.status, method = self.method })
  end
  return v
end

--- Raise an `http` error for a 4xx/5xx status; return the response otherwise.
function methods:raise_for_status()
  if self.status >= 400 then
    errors.raise("http", ("%d %s"):format(self.status, self.reason),
      { url = self.url, status = self.status, method = self.method, response = self })
  end
  return self
end

local M = {}

--- A response for a finished request op (its body stays in the op).
function M.new(status, url, op)
  return setmetatable({ status = status, url = url, _op = op }, Response)
end

M.Response = Response
return M
