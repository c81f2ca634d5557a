-- avideo-server under valgrind: a few thousand requests, the bad ones
-- included, delayed answers and clients that vanish; then SIGTERM. No
-- memory error, no definitely or indirectly lost block, exit status 0.
-- Pending when valgrind is not installed or the server is an ASan build.
local support = require "support.server"
local client = require "support.server_client"

local function shell(command)
  local pipe = io.popen(command)
  local out = pipe:read("a")
  pipe:close()
  return out
end

local function skip_reason()
  if shell("command -v valgrind") == "" then return "valgrind is not installed" end
  local bin = os.getenv("AVIDEO_SERVER") or "build/src/server/avideo-server"
  if shell("ldd '" .. bin .. "' 2>/dev/null"):find("libasan", 1, true) then
    return "an ASan build cannot run under valgrind"
  end
end

local function raw_quietly(server, data)
  local ok, sock = pcall(client.connect, server, 5)
  if not ok then return end
  sock:send(data)
  sock:settimeout(0.2)
  sock:receive("*a")
  sock:close()
end

describe("avideo-server under valgrind #server", function()
  after_each(support.stop_scoped)

  local why = skip_reason()
  if why then
    pending(why)
    return
  end

  it("leaks nothing after thousands of requests, bad ones included", function()
    local log = os.tmpname()
    local server = support.start_scoped {
      time_scale = 0.02,
      keepalive_timeout = 2,
      wrapper = { "valgrind", "-q", "--leak-check=full", "--show-leak-kinds=definite,indirect",
                  "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=99",
                  "--log-file=" .. log },
    }
    local ids = client.get_json(server.url .. "/videos/?n=50")
    local urls = {}
    for i = 1, 3000 do
      local id = ids[i % #ids + 1]
      local kind = i % 6
      if kind == 0 then urls[i] = server.url .. "/videos/" .. id .. "/transcript"
      elseif kind == 1 then urls[i] = server.url .. "/videos/?n=" .. (i % 120 - 10)
      elseif kind == 2 then urls[i] = server.url .. "/videos/nosuchvideo"
      elseif kind == 3 then urls[i] = server.url .. "/nope/" .. i
      elseif kind == 4 then urls[i] = server.url .. "/videos/?n=bad" .. i
      else urls[i] = server.url .. "/videos/" .. id end
    end
    assert.are.equal(3000, #client.get_many(urls))

    -- overload: queues on both gated endpoints
    local burst = {}
    for i = 1, 60 do burst[i] = server.url .. "/videos/" .. ids[i % 5 + 1] end
    for i = 61, 120 do burst[i] = server.url .. "/videos/" .. ids[i % 5 + 1] .. "/transcript" end
    assert.are.equal(120, #client.parallel(burst))

    -- PATCH: good, not an object, broken, unknown id, too large, chunked
    for i = 1, 40 do
      local id = ids[i % #ids + 1]
      client.request("PATCH", server.url .. "/videos/" .. id, { body = ('{"n":%d,"tags":["a","b"]}'):format(i) })
      client.request("PATCH", server.url .. "/videos/" .. id, { body = "[1,2,3]" })
      client.request("PATCH", server.url .. "/videos/" .. id, { body = '{"broken":' })
      client.request("PATCH", server.url .. "/videos/nosuchvideo", { body = "{}" })
    end
    client.request("PATCH", server.url .. "/videos/" .. ids[1], { body = ("x"):rep(1100000) })
    client.request("PATCH", server.url .. "/videos/" .. ids[1],
                   { body = '{"chunked":true}', headers = { "Transfer-Encoding: chunked" } })

    -- malformed, oversized, half-sent, and clients that leave while queued
    -- or holding a slot
    for i = 1, 20 do
      raw_quietly(server, "GARBAGE\r\n\r\n")
      raw_quietly(server, "GET /videos/ HTTP/1.1\r\n\r\n")
      raw_quietly(server, "GET /videos/ HTTP/1.1\r\nHost: x\r\nX-Big: " .. ("b"):rep(40000) .. "\r\n\r\n")
      raw_quietly(server, ("PATCH /videos/%s HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"a\""):format(ids[1]))
      local socks = {}
      for k = 1, 15 do
        local ok, sock = pcall(client.connect, server, 5)
        if ok then
          sock:send(("GET /videos/%s%s HTTP/1.1\r\nHost: x\r\n\r\n"):format(ids[k], k % 2 == 0 and "/transcript" or ""))
          socks[#socks + 1] = sock
        end
      end
      client.sleep(0.005 * (i % 4))
      for _, sock in ipairs(socks) do sock:close() end
    end
    -- idle connections the keep-alive timeout closes, and some left open at exit
    local idle = {}
    for i = 1, 5 do idle[i] = client.connect(server) end
    client.sleep(2.5)
    local open = {}
    for i = 1, 5 do
      open[i] = client.connect(server)
      open[i]:send(("GET /videos/%s HTTP/1.1\r\nHost: x\r\n\r\n"):format(ids[i]))
    end
    assert.are.equal(200, client.get(server.url .. "/videos/" .. ids[1]).status)

    local ok, why = support.stop_clean(server)
    local f = io.open(log, "r")
    local report = f and f:read("a") or ""
    if f then f:close() end
    os.remove(log)
    for _, sock in ipairs(idle) do sock:close() end
    for _, sock in ipairs(open) do sock:close() end
    assert(ok, tostring(why) .. "\n" .. report)
    assert.are.equal("", report)
  end)

  it("leaks nothing with other capacities, changed at run time, and a rate limit answering 429s", function()
    local log = os.tmpname()
    local server = support.start_scoped {
      time_scale = 0.02,
      args = { "--video-capacity", "2", "--transcript-capacity", "3", "--rate-limit", "30/1" },
      wrapper = { "valgrind", "-q", "--leak-check=full", "--show-leak-kinds=definite,indirect",
                  "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=99",
                  "--log-file=" .. log },
    }
    local ids = client.get_json(server.url .. "/videos/?n=5")
    local burst = {}
    for i = 1, 40 do burst[i] = server.url .. "/videos/" .. ids[i % 5 + 1] .. (i % 2 == 0 and "/transcript" or "") end
    local statuses = {}
    for _, r in ipairs(client.parallel(burst)) do statuses[r.status] = (statuses[r.status] or 0) + 1 end
    assert.is_true((statuses[429] or 0) > 0 and (statuses[200] or 0) > 0)
    -- capacities changed with requests queued: grown, shrunk, and refused
    client.sleep(1.1) -- the rate's tokens back
    local socks = {}
    for i = 1, 12 do
      socks[i] = client.connect(server, 10)
      socks[i]:send(("GET /videos/%s HTTP/1.1\r\nHost: x\r\n\r\n"):format(ids[i % 5 + 1]))
    end
    assert.are.equal(200, client.request("POST", server.url .. "/capacity?video=8&transcript=1").status)
    assert.are.equal(200, client.request("POST", server.url .. "/capacity?video=1").status)
    assert.are.equal(400, client.request("POST", server.url .. "/capacity?video=0").status)
    for _, sock in ipairs(socks) do
      assert.are.equal(200, (client.read_response(sock)))
      sock:close()
    end
    local ok, why = support.stop_clean(server)
    local f = io.open(log, "r")
    local report = f and f:read("a") or ""
    if f then f:close() end
    os.remove(log)
    assert(ok, tostring(why) .. "\n" .. report)
    assert.are.equal("", report)
  end)
end)
