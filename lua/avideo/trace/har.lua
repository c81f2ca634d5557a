--- A trace as HAR 1.2 (HTTP Archive: loads in browsers' devtools). One
-- entry per request, in the order they were made, with its timings (see
-- timings below), the header lines avideo set (libcurl adds Host and the
-- framing lines itself) and the final response's. Fields of our own start
-- with "_": _error (kind: message), _redirect (ms on the hops before the
-- final one), _finalUrl, _reusedConnection.
local json = require "avideo.json"

local M = {}

local function iso8601(epoch)
  local whole = math.floor(epoch)
  local ms = math.floor((epoch - whole) * 1000 + 0.5)
  if ms == 1000 then whole, ms = whole + 1, 0 end
  return os.date("!%Y-%m-%dT%H:%M:%S", whole) .. (".%03dZ"):format(ms)
end

-- "Name: value" lines as HAR's [{name, value}]. In the lines sent, "Name:"
-- with no value is libcurl's way to leave a header out: not sent, not listed.
local function header_list(text, sent)
  local out = json.array()
  for line in text:gmatch("[^\r\n]+") do
    local name, value = line:match("^([^:%s]+):%s*(.-)%s*$")
    if name and not (sent and value == "") then out[#out + 1] = { name = name, value = value } end
  end
  return out
end

-- The final response's status line and header lines: a block may hold
-- interim 1xx responses before it.
local function final_block(text)
  local last = 1
  for at in text:gmatch("()HTTP/%d") do last = at end
  return text:sub(last)
end

local function query(url)
  local out = json.array()
  local q = url:match("%?([^#]*)")
  for pair in (q or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    out[#out + 1] = { name = k, value = v }
  end
  return out
end

local function ms(x) return x * 1000 end

-- HAR's timings of q: blocked (the wait for a slot), dns, connect (with
-- ssl), ssl, send, wait, receive, in ms; dns, connect and ssl -1 when
-- they did not happen (a reused connection, plain HTTP, a request that
-- never ran). send, wait and receive are never -1 (HAR requires them):
-- 0 when not reached. The hops before a redirected request's final one
-- are waiting for a response too: they are in wait (and, on their own,
-- in _redirect), so that time, the sum of the parts, is the elapsed time.
local function timings(q)
  local t = { blocked = ms((q.started or q.ended) - q.created), dns = -1, connect = -1, ssl = -1,
    send = 0, wait = 0, receive = 0 }
  local s = q.started
  if not s then return t, 0 end
  local redirect, total = q.redirect, q.ended - s
  local dns, connect, tls = q.dns, q.connect, q.tls
  if q.reused then dns, connect, tls = nil, nil, nil end
  local at = redirect -- the end of the phases so far, from the slot
  if dns then
    t.dns, at = ms(dns - at), dns
    if connect then
      t.connect, at = ms(tls - at), tls -- HAR: connect includes ssl
      if tls > connect then t.ssl = ms(tls - connect) end
    end
  end
  if q.sent then t.send, at = ms(q.sent - at), q.sent end
  if q.first_byte then
    t.wait, at = ms(q.first_byte - at), q.first_byte
    t.receive, at = ms(total - at), total
  end
  -- the hops before (and, for a failure, the time after the last phase reached)
  t.wait = t.wait + ms(redirect) + ms(math.max(0, total - at))
  return t, redirect
end

local function entry(q, r)
  local t, redirect = timings(q)
  local time = t.blocked + t.send + t.wait + t.receive
  if t.dns > 0 then time = time + t.dns end
  if t.connect > 0 then time = time + t.connect end
  local block = final_block(q.headers_received)
  local version, reason = block:match("^HTTP/([%d.]+) %d+ ?([^\r\n]*)")
  local resp_headers = header_list(block)
  local ctype = ""
  for _, h in ipairs(resp_headers) do
    if h.name:lower() == "content-type" then ctype = h.value end
  end
  return {
    startedDateTime = iso8601(r.wall0 + (q.created - r.t0)),
    time = time,
    request = {
      method = q.method, url = q.url, httpVersion = "HTTP/1.1", cookies = json.array(),
      headers = header_list(q.headers_sent, true), queryString = query(q.url),
      headersSize = -1, bodySize = q.up or 0,
    },
    response = {
      status = q.status or 0, statusText = reason or "", httpVersion = version and ("HTTP/" .. version) or "",
      cookies = json.array(), headers = resp_headers,
      content = { size = q.down or 0, mimeType = ctype },
      redirectURL = "", headersSize = -1, bodySize = q.down or 0,
      _error = q.error_kind ~= "" and (q.error_kind .. ": " .. q.error) or nil,
    },
    cache = {},
    timings = t,
    _redirect = ms(redirect),
    _finalUrl = q.final_url ~= q.url and q.final_url or nil,
    _reusedConnection = q.reused,
  }
end

--- The file's text for recording r (see avideo/trace.lua).
function M.render(r)
  local list = {}
  for i, q in ipairs(r.requests) do list[i] = q end
  table.sort(list, function(a, b) return a.created < b.created end)
  local entries = json.array()
  for i, q in ipairs(list) do entries[i] = entry(q, r) end
  local version = require("avideo.core")._VERSION
  return json.encode({ log = {
    version = "1.2",
    creator = { name = "avideo", version = version },
    entries = entries,
  } })
end

return M
