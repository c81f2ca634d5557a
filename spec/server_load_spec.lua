-- avideo-server under load: wrk with 1,000 connections, and 200 slow
-- clients (silent, dribbling a request, reading slowly) while a normal
-- client still gets its answers. Loopback only; every loop is bounded.
-- AVIDEO_LOAD_SECONDS=30 gives the full wrk run (default 10, for CI).
local support = require "support.server"
local client = require "support.server_client"
local socket = require "socket"

local connections = 1000
local seconds = tonumber(os.getenv("AVIDEO_LOAD_SECONDS") or "10")
-- Under valgrind (AVIDEO_SLOW) the spec's own Lua is slow; in the ASan
-- build shadow memory and the quarantine make RSS say nothing of leaks.
local slow = os.getenv("AVIDEO_SLOW") ~= nil
local sanitized = os.getenv("ASAN_OPTIONS") ~= nil
local answer_in = slow and 5 or 1 -- seconds a normal request may take

-- Resident memory of a process, in KiB.
local function rss_kib(pid)
  local f = assert(io.open("/proc/" .. pid .. "/status", "r"))
  local status = f:read("a")
  f:close()
  -- (busted's assert returns nothing: check by hand)
  local kib = tonumber(status:match("VmRSS:%s*(%d+) kB"))
  if not kib then error("no VmRSS for " .. pid) end
  return kib
end

-- A shell's file descriptor limit (-n soft, -Hn hard); math.huge if unlimited.
local function fd_limit(flag)
  local pipe = io.popen("ulimit " .. flag)
  local value = pipe:read("l")
  pipe:close()
  return value == "unlimited" and math.huge or tonumber(value)
end

-- A normal request for a known video: it must be a 200, in time.
local function probe(server, id)
  local reply = client.get(server.url .. "/videos/" .. id, { timeout = 10 })
  assert.are.equal(200, reply.status)
  assert.is_true(reply.time < answer_in, ("a normal request took %.3f s"):format(reply.time))
  return reply.time
end

-- Start wrk (it runs while the caller probes); the pipe gives its report.
-- The server raises its own limit; wrk needs one fd per connection too.
local function wrk_start(url, duration)
  local fds = math.min(fd_limit("-Hn"), 4096)
  return assert(io.popen(("ulimit -n %d 2>/dev/null; exec wrk -t2 -c%d -d%ds --timeout 5s %s 2>&1")
    :format(fds, connections, duration, url)))
end

local function wrk_report(pipe)
  local out = pipe:read("a")
  pipe:close()
  local errors = { out:match("Socket errors: connect (%d+), read (%d+), write (%d+), timeout (%d+)") }
  local report = {
    text = out,
    requests = tonumber(out:match("(%d+) requests in")),
    rate = tonumber(out:match("Requests/sec:%s*([%d%.]+)")),
    non2xx = tonumber(out:match("Non%-2xx or 3xx responses: (%d+)") or "0"),
    errors = 0,
  }
  for _, n in ipairs(errors) do report.errors = report.errors + tonumber(n) end
  assert(report.requests and report.rate, "no wrk report: " .. out)
  return report
end

describe("avideo-server under load #server", function()
  after_each(support.stop_scoped)

  it("keeps serving 1,000 wrk connections, with bounded memory", function()
    -- 1,000 connections need about as many fds in wrk and in the server.
    if fd_limit("-Hn") < connections + 100 then
      pending(("hard fd limit %s is below %d: cannot open 1,000 connections")
        :format(fd_limit("-Hn"), connections + 100))
      return
    end
    local server = support.start_scoped { time_scale = 0 }
    local id = client.get_json(server.url .. "/videos/?n=1")[1]
    probe(server, id) -- builds the video's cached answer
    local before = rss_kib(server.pid)

    -- Two rounds: the first shows the peak, the second that serving more
    -- requests does not grow memory further (a leak per request would).
    local rounds, peak, worst = {}, before, 0
    for round = 1, 2 do
      local duration = math.max(1, seconds // 2)
      local started = socket.gettime()
      local pipe = wrk_start(server.url .. "/videos/" .. id, duration)
      -- Meanwhile: a normal client, and the server's memory, twice a second.
      while socket.gettime() - started < duration - 0.5 do
        socket.sleep(0.5)
        worst = math.max(worst, probe(server, id))
        peak = math.max(peak, rss_kib(server.pid))
      end
      local report = wrk_report(pipe)
      report.rss = rss_kib(server.pid)
      rounds[round] = report
      print(("\nwrk round %d: %d connections, %.0f req/s, %d requests, %d non-2xx, %d socket errors; RSS %d KiB (before %d, peak %d); slowest probe %.3f s")
        :format(round, connections, report.rate, report.requests, report.non2xx,
                report.errors, report.rss, before, peak, worst))
      -- On loopback, with a listen backlog past 1,000 and no idle timeout
      -- reached, nothing legitimately fails: no connect, read, write or
      -- timeout (5 s) error, and every GET of a known video is a 200.
      assert.are.equal(0, report.errors, report.text)
      assert.are.equal(0, report.non2xx, report.text)
      assert.is_true(report.requests >= 1000 * duration, report.text)
    end
    probe(server, id) -- and after it

    if not sanitized then
      -- Each connection may hold MHD's 16 KiB pool (AV_HEADER_LIMIT) and a
      -- response being sent: allow four times the pool per connection.
      assert.is_true(peak - before <= connections * 64,
        ("RSS grew from %d to %d KiB under 1,000 connections"):format(before, peak))
      -- The second round's requests (hundreds of thousands) left no trace:
      -- 4 MiB is 16 bytes a request at 250,000 of them.
      assert.is_true(rounds[2].rss - rounds[1].rss <= 4096,
        ("RSS grew from %d to %d KiB in the second round"):format(rounds[1].rss, rounds[2].rss))
    end
    assert(support.stop_clean(server))
  end)

  it("serves a normal client while 200 slow clients hold connections", function()
    -- Keep-alive timeout 0 (never): the slow clients are never cut, the
    -- hardest case for the server.
    local server = support.start_scoped { time_scale = 0, keepalive_timeout = 0 }
    local id = client.get_json(server.url .. "/videos/?n=1")[1]
    probe(server, id)
    local before = rss_kib(server.pid)

    local request = "GET /videos/" .. id .. " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    -- Slow readers ask for 40 lists of every id (~9 KB each), pipelined,
    -- and shrink their receive buffer: the server has to wait for them.
    local list = "GET /videos/?n=1000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    local lists = 40
    local idle, dribble, readers = {}, {}, {}
    for i = 1, 200 do
      if i <= 140 then
        local sock = client.connect(server, 5)
        sock:settimeout(0)
        if i <= 70 then
          idle[#idle + 1] = sock
        else
          dribble[#dribble + 1] = { sock = sock, sent = 0 }
        end
      else
        -- The buffer is set before connect, so the window is small from the
        -- start (shrunk later, loopback's 64 KiB MSS stalls the window
        -- updates in TCP itself, for seconds).
        local sock = assert(socket.tcp4())
        sock:settimeout(5)
        assert(sock:setoption("recv-buffer-size", 8192))
        assert(sock:connect(server.host, server.port))
        assert(sock:send(list:rep(lists)))
        sock:settimeout(0)
        readers[#readers + 1] = { sock = sock, chunks = {} }
      end
    end

    -- 60 ticks of 0.1 s: one byte per tick from each dribbler (the request
    -- is ~50 bytes), 64 bytes per tick read by each slow reader, a normal
    -- request and an RSS sample every half second.
    local peak, worst = before, 0
    for tick = 1, 60 do
      for _, d in ipairs(dribble) do
        if d.sent < #request then
          assert(d.sock:send(request, d.sent + 1, d.sent + 1))
          d.sent = d.sent + 1
        end
      end
      for _, r in ipairs(readers) do
        local chunk, _, partial = r.sock:receive(64)
        r.chunks[#r.chunks + 1] = chunk or partial
      end
      if tick % 5 == 0 then
        worst = math.max(worst, probe(server, id))
        peak = math.max(peak, rss_kib(server.pid))
      end
      socket.sleep(0.1)
    end

    -- The dribblers' requests are complete now: each gets its 200.
    for _, d in ipairs(dribble) do
      assert.are.equal(#request, d.sent)
      d.sock:settimeout(5)
      assert.are.equal(200, (client.read_response(d.sock)))
    end
    -- The slow readers get every answer once they read (bounded: 20 s).
    -- Round robin without waiting: receive(n) with a timeout would wait
    -- for n bytes that a finished stream never sends.
    local deadline, left = socket.gettime() + 20, #readers
    for _, r in ipairs(readers) do
      r.data, r.count = table.concat(r.chunks), 0
    end
    while left > 0 and socket.gettime() < deadline do
      local moved = false
      for _, r in ipairs(readers) do
        if r.count < lists then
          local chunk, _, partial = r.sock:receive(65536)
          chunk = chunk or partial
          if #chunk > 0 then
            moved = true
            r.data = r.data .. chunk
            _, r.count = r.data:gsub("HTTP/1%.1 200 OK", "")
            if r.count >= lists then left = left - 1 end
          end
        end
      end
      if not moved then socket.sleep(0.01) end
    end
    for _, r in ipairs(readers) do assert.are.equal(lists, r.count) end
    -- The silent ones are still connected: never cut, never answered.
    for _, sock in ipairs(idle) do
      local _, err = sock:receive(1)
      assert.are.equal("timeout", err)
    end
    print(("\nslow clients: 70 silent, 70 dribbling, 60 slow readers; slowest normal request %.3f s; RSS %d KiB before, peak %d")
      :format(worst, before, peak))
    if not sanitized then
      -- 200 connections, each with a 16 KiB pool and a ~9 KB answer in
      -- flight: a few MiB; 16 MiB leaves room for the allocator.
      assert.is_true(peak - before <= 16384,
        ("RSS grew from %d to %d KiB with 200 slow clients"):format(before, peak))
    end

    for _, sock in ipairs(idle) do sock:close() end
    for _, d in ipairs(dribble) do d.sock:close() end
    for _, r in ipairs(readers) do r.sock:close() end
    probe(server, id)
    assert(support.stop_clean(server))
  end)
end)
