--- Clients for the avideo-server specs: the curl CLI for ordinary and
-- parallel requests, raw lua-socket connections for what curl will not
-- send (malformed requests, clients that vanish, idle connections).
-- Independent of the avideo module on purpose.
local socket = require "socket"
local cjson = require "cjson"

local M = {}

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function run(args)
  local quoted = {}
  for i, a in ipairs(args) do quoted[i] = shell_quote(a) end
  -- The sanitizer build preloads libasan for lua5.4; curl deadlocks with it.
  local pipe = assert(io.popen("env -u LD_PRELOAD " .. table.concat(quoted, " ") .. " 2>&1", "r"))
  local out = pipe:read("*a")
  pipe:close()
  return out
end

-- Split "HTTP/1.1 200 OK\r\nName: v\r\n..." into status and lowercase headers.
local function parse_head(head)
  local status = tonumber(head:match("^HTTP/%d%.?%d? (%d%d%d)"))
  local headers = {}
  for name, value in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r\n]*)") do
    headers[name:lower()] = value
  end
  return status, headers
end

--- One request with curl. opts: body (string), headers (list of "Name: v"),
-- timeout (seconds, default 20). Returns {status, headers, body, time}.
function M.request(method, url, opts)
  opts = opts or {}
  local args = { "curl", "-s", "-S", "-i", "--max-time", tostring(opts.timeout or 20),
                 "-w", "\n@@avs@@%{time_total}" }
  if method == "HEAD" then
    args[#args + 1] = "--head"
  else
    args[#args + 1] = "-X"; args[#args + 1] = method
  end
  local tmp
  if opts.body then
    tmp = os.tmpname()
    local f = assert(io.open(tmp, "wb"))
    f:write(opts.body)
    f:close()
    args[#args + 1] = "--data-binary"; args[#args + 1] = "@" .. tmp
    args[#args + 1] = "-H"; args[#args + 1] = "Content-Type: application/json"
  end
  for _, h in ipairs(opts.headers or {}) do
    args[#args + 1] = "-H"; args[#args + 1] = h
  end
  args[#args + 1] = url
  local out = run(args)
  if tmp then os.remove(tmp) end
  local text, time = out:match("^(.*)\n@@avs@@([%d%.]+)$")
  assert(text, "curl failed: " .. out)
  -- An interim "100 Continue" comes before the real answer.
  while text:match("^HTTP/[%d%.]+ 100") do text = text:gsub("^.-\r\n\r\n", "", 1) end
  local head, body = text:match("^(.-\r\n)\r\n(.*)$")
  local status, headers = parse_head(head or text)
  return { status = status, headers = headers, body = body or "", time = tonumber(time) }
end

function M.get(url, opts) return M.request("GET", url, opts) end

--- GET and decode a 200 JSON answer.
function M.get_json(url)
  local r = M.get(url)
  assert(r.status == 200, "GET " .. url .. " gave " .. tostring(r.status) .. ": " .. r.body)
  return cjson.decode(r.body), r
end

--- Many GETs one after the other on one kept-alive connection; returns
-- the bodies (compact JSON has no raw newline, so one per line).
function M.get_many(urls)
  local args = { "curl", "-s", "--max-time", "120", "-w", "\n" }
  for _, url in ipairs(urls) do args[#args + 1] = url end
  local bodies = {}
  for line in run(args):gmatch("([^\n]*)\n") do bodies[#bodies + 1] = line end
  return bodies
end

--- Many GETs at once from one curl process, each on its own connection.
-- Returns a list of {status, time} sorted by time.
function M.parallel(urls, timeout)
  local args = { "curl", "-s", "--parallel", "--parallel-immediate",
                 "--parallel-max", tostring(math.min(#urls, 300)),
                 "--max-time", tostring(timeout or 60),
                 "-w", "%{http_code} %{time_total}\n" }
  for _, url in ipairs(urls) do
    args[#args + 1] = url; args[#args + 1] = "-o"; args[#args + 1] = "/dev/null"
  end
  local results = {}
  for code, time in run(args):gmatch("(%d+) ([%d%.]+)\n") do
    results[#results + 1] = { status = tonumber(code), time = tonumber(time) }
  end
  table.sort(results, function(a, b) return a.time < b.time end)
  return results
end

--- A raw TCP connection to the server.
function M.connect(server, timeout)
  local sock = assert(socket.tcp())
  sock:settimeout(timeout or 10)
  assert(sock:connect(server.host, server.port))
  return sock
end

--- Read one response (Content-Length framing) from a raw connection.
-- Returns status, headers, body, or nil and the error ("closed", "timeout").
function M.read_response(sock)
  local lines = {}
  while true do
    local line, err = sock:receive("*l")
    if not line then return nil, err end
    if line == "" then break end
    lines[#lines + 1] = line
  end
  local status, headers = parse_head(table.concat(lines, "\r\n"))
  local length = tonumber(headers["content-length"] or "0")
  local body = ""
  if length > 0 then
    local err
    body, err = sock:receive(length)
    if not body then return nil, err end
  end
  return status, headers, body
end

--- Send bytes on a fresh connection and read until the server closes it
-- (or timeout). Returns everything received and how it ended.
function M.raw(server, data, timeout)
  local sock = M.connect(server, timeout or 5)
  local ok, err = sock:send(data)
  local chunks = {}
  if ok then
    while true do
      local chunk, e, partial = sock:receive(4096)
      chunks[#chunks + 1] = chunk or partial
      if not chunk then err = e; break end
    end
  end
  sock:close()
  return table.concat(chunks), err
end

--- Seconds until the server closes an open connection (nil on timeout).
function M.time_to_close(sock, limit)
  local start = socket.gettime()
  sock:settimeout(limit)
  local _, err = sock:receive(1)
  if err == "closed" then return socket.gettime() - start end
  return nil, err
end

M.now = socket.gettime
M.sleep = socket.sleep
M.json = cjson

return M
