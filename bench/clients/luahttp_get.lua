-- lua-http client of the client-cost benchmark (Lua 5.3: Debian packages
-- lua-http for 5.1-5.3 only).
--
--   lua5.3 luahttp_get.lua URL N CONCURRENCY [--discard]
--
-- CONCURRENCY cqueues coroutines, each with its own kept-alive HTTP/1.1
-- connection, take the next of N GETs of URL until none is left; each
-- answer's status is checked and its body decoded with lua-cjson. Every
-- decoded document is kept until the end (as a gather returns them);
-- --discard drops each one instead.
-- (request:go() would open a new connection for every request.)
-- Prints "RESULT requests=N errors=E".

-- Debian 12 installs lua-http's pure-Lua dependencies lua-lpeg-patterns,
-- lua-basexx and lua-fifo for Lua 5.1/5.2 only; they run unchanged on 5.3.
package.path = package.path .. ";/usr/share/lua/5.2/?.lua;/usr/share/lua/5.2/?/init.lua"

local cqueues = require "cqueues"
local http_client = require "http.client"
local http_headers = require "http.headers"
local cjson = require "cjson"

local url, n, concurrency = arg[1], tonumber(arg[2]), tonumber(arg[3])
local discard = arg[4] == "--discard"
if not (url and n and concurrency) or (arg[4] ~= nil and not discard) then
  io.stderr:write("usage: luahttp_get.lua URL N CONCURRENCY [--discard]\n")
  os.exit(2)
end
local host, port, path = url:match("^http://([^/:]+):?(%d*)(.*)$")
assert(host, "only http://host[:port]/path URLs")
port = tonumber(port) or 80
if path == "" then path = "/" end

local request = http_headers.new()
request:append(":method", "GET")
request:append(":scheme", "http")
request:append(":authority", port == 80 and host or host .. ":" .. port)
request:append(":path", path)

local started, errors = 0, 0
local results = {}

-- Request i on conn; true when the answer is a 200 with a JSON body.
local function get_json(conn, i)
  local stream = conn:new_stream()
  assert(stream:write_headers(request, true))
  local headers = assert(stream:get_headers())
  local body = assert(stream:get_body_as_string())
  if headers:get(":status") ~= "200" then return false end
  local document = cjson.decode(body)
  if not discard then results[i] = document end
  return true
end

local function worker()
  local conn
  while started < n do
    started = started + 1
    local i = started
    if not conn then
      conn = http_client.connect { host = host, port = port, tls = false, version = 1.1 }
    end
    local ok, good = pcall(get_json, conn, i)
    if not (ok and good) then
      errors = errors + 1
      if not ok then conn:close(); conn = nil end
    end
  end
  if conn then conn:close() end
end

local loop = cqueues.new()
for _ = 1, math.min(concurrency, math.max(n, 1)) do loop:wrap(worker) end
assert(loop:loop())
print(("RESULT requests=%d errors=%d"):format(n, errors))
-- close the state, as the other clients do: kept documents are freed too
os.exit(errors == 0 and 0 or 1, true)
