--- Error objects: what every failure of avideo raises.
-- An error has `kind` (http, timeout, connect, dns, tls, protocol,
-- cancelled, invalid), `message`, and where known `url`, `method`, `status`.
-- A timeout's `phase` names its clock (pool, connect, sock_read, total).
-- `cause = "reset"` marks a `protocol` error where the peer reset or closed
-- the connection mid-transfer (libcurl's recv/send errors, an empty reply,
-- a body cut short): the core says so as data, so retries need not read
-- the message. After retries (the `retry` option) `retries` says how many
-- were made.
-- `tostring(err)` is one line; `pcall` catches it like any Lua error.
local M = {}

local Error = { __name = "avideo.Error" }
Error.__index = Error

M.KINDS = {
  http = true, timeout = true, connect = true, dns = true, tls = true,
  protocol = true, cancelled = true, invalid = true,
}

-- Control characters escaped: tostring(err) is always one line. Every
-- field shown goes through it: a method or URL can come from the caller.
local function printable(s)
  return (tostring(s):gsub("[%c]", function(c) return ("\\x%02X"):format(c:byte()) end))
end

-- A URL's password shown as ***: tostring(err) is the line that goes to
-- logs (err.url itself is left as given).
local function without_password(url)
  return (tostring(url):gsub("^(%a[%w+.-]*://[^/?#@:]*):[^/?#@]*@", "%1:***@"))
end

function Error.__tostring(e)
  local where = ""
  if e.url then
    where = " (" .. (e.method and printable(e.method) .. " " or "") .. printable(without_password(e.url)) .. ")"
  end
  return "avideo." .. printable(e.kind) .. " error: " .. printable(e.message) .. where
end

--- Make an error object. fields: url, method, status (copied in).
function M.new(kind, message, fields)
  assert(M.KINDS[kind], "unknown error kind")
  local e = { kind = kind, message = message }
  if fields then
    for k, v in pairs(fields) do e[k] = v end
  end
  return setmetatable(e, Error)
end

--- True if e is an avideo error, and of `kind` when given.
function M.is_error(e, kind)
  return getmetatable(e) == Error and (kind == nil or e.kind == kind)
end

--- Raise an error object (never returns).
function M.raise(kind, message, fields)
  error(M.new(kind, message, fields), 0)
end

--- Raise the failure the core reported: its detail is a timeout's clock
-- (err.phase) or "reset" (err.cause). fields: a fresh table, filled in.
function M.raise_failed(kind, message, fields, detail)
  if detail == "reset" then fields.cause = detail else fields.phase = detail end
  error(M.new(kind, message, fields), 0)
end

--- A value as a message shows it: a string quoted, anything else as tostring.
function M.show(v)
  return type(v) == "string" and ("%q"):format(v) or tostring(v)
end

--- Raise an `invalid` error about argument `name` of function `fn`.
function M.bad_argument(fn, name, expected, value)
  M.raise("invalid", ("bad argument '%s' to %s (%s expected, got %s)")
    :format(name, fn, expected, value == nil and "nil" or type(value)))
end

return M
