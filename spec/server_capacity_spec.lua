-- avideo-server: --video-capacity, --transcript-capacity, --rate-limit
-- (429 with Retry-After), /stats?reset=1 and /capacity (changed at run
-- time), against the real binary with the curl CLI and raw sockets (never
-- the avideo module).
local support = require "support.server"
local client = require "support.server_client"

-- Run the binary with args, without a server start; returns exit code and output.
local function run(args)
  local bin = os.getenv("AVIDEO_SERVER") or "build/src/server/avideo-server"
  local pipe = io.popen("env -u LD_PRELOAD '" .. bin .. "' " .. args .. " 2>&1 </dev/null")
  local out = pipe:read("a")
  local _, _, code = pipe:close()
  return code, out
end

local function urls(server, path, n)
  local list = {}
  for i = 1, n do list[i] = server.url .. path end
  return list
end

local function count(results, status)
  local n = 0
  for _, r in ipairs(results) do if r.status == status then n = n + 1 end end
  return n
end

-- Send GET path on n new raw connections, one after the other.
local function send_gets(server, path, n)
  local socks = {}
  for i = 1, n do
    socks[i] = client.connect(server, 10)
    assert(socks[i]:send("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
  end
  return socks
end

-- Read each connection's answer in order: its status and the seconds
-- since t0 it was read at (never before it came).
local function answers(socks, t0)
  local out = {}
  for i, sock in ipairs(socks) do
    local status = client.read_response(sock)
    out[i] = { status = status, at = client.now() - t0 }
    sock:close()
  end
  return out
end

describe("avideo-server capacities and rate limit #server", function()
  after_each(support.stop_scoped)

  it("gives videos --video-capacity slots: the server sees that many at once, the rest wait", function()
    local server = support.start_scoped { time_scale = 0.5, args = { "--video-capacity", "3" } }
    local id = client.get_json(server.url .. "/videos/?n=1")[1]
    local results = client.parallel(urls(server, "/videos/" .. id, 4))
    assert.are.equal(4, count(results, 200))
    -- three at the base delay (0.1 s), the fourth after one of them
    for i = 1, 3 do assert.is_true(results[i].time < 0.17, results[i].time) end
    assert.is_true(results[4].time >= 0.2, results[4].time)
    assert(support.stop_clean(server))
  end)

  it("gives transcripts --transcript-capacity slots", function()
    local server = support.start_scoped { time_scale = 0.5, args = { "--transcript-capacity=2" } }
    local id = client.get_json(server.url .. "/videos/?n=1")[1]
    local results = client.parallel(urls(server, "/videos/" .. id .. "/transcript", 3))
    assert.are.equal(3, count(results, 200))
    for i = 1, 2 do assert.is_true(results[i].time < 0.12, results[i].time) end
    assert.is_true(results[3].time >= 0.1, results[3].time)
    assert(support.stop_clean(server))
  end)

  it("answers 429 with Retry-After past N requests per S seconds, and again once the bucket refills", function()
    local server = support.start_scoped { time_scale = 0, args = { "--rate-limit", "3/2" } }
    local id = client.get_json(server.url .. "/videos/?n=1")[1] -- one token
    local r
    for _ = 1, 2 do
      r = client.get(server.url .. "/videos/" .. id)
      assert.are.equal(200, r.status)
    end
    r = client.get(server.url .. "/videos/" .. id)
    assert.are.equal(429, r.status)
    assert.are.equal('{"detail":"Too Many Requests"}', r.body)
    assert.are.equal("application/json", r.headers["content-type"])
    -- a token comes back every 2/3 s: at most 1 s, rounded up
    assert.are.equal("1", r.headers["retry-after"])
    -- /stats is never limited, and the 429s are counted as requests
    assert.are.equal(200, client.get(server.url .. "/stats").status)
    -- a token is back within 2/3 s: poll until it is (a 429 takes none;
    -- a fixed sleep let two back when a busy machine ran curl late), then
    -- the next request finds the bucket empty again
    local t429, back = client.now(), nil
    repeat
      client.sleep(0.05)
      back = client.get(server.url .. "/videos/" .. id).status
    until back ~= 429 or client.now() - t429 > 5
    assert.are.equal(200, back)
    assert.are.equal(429, client.get(server.url .. "/videos/?n=1").status)
    assert(support.stop_clean(server))
  end)

  it("says how long until a token is back, rounded up to whole seconds", function()
    local server = support.start_scoped { time_scale = 0, args = { "--rate-limit", "1/5" } }
    assert.are.equal(200, client.get(server.url .. "/videos/?n=1").status)
    local r = client.get(server.url .. "/videos/?n=1")
    assert.are.equal(429, r.status)
    local after = tonumber(r.headers["retry-after"])
    assert.is_true(after == 5 or after == 4, r.headers["retry-after"])
    assert(support.stop_clean(server))
  end)

  it("refuses a burst beyond N at once, whatever the connections", function()
    local server = support.start_scoped { time_scale = 0, args = { "--rate-limit", "20/1" } }
    local results = client.parallel(urls(server, "/videos/?n=1", 30))
    assert.are.equal(30, #results)
    -- the run takes some ms, in which a token or two may come back
    assert.is_true(count(results, 200) >= 20 and count(results, 200) <= 22, count(results, 200))
    assert.are.equal(30 - count(results, 200), count(results, 429))
    assert(support.stop_clean(server))
  end)

  it("forgets the most in flight on GET /stats?reset=1", function()
    local server = support.start_scoped { time_scale = 0.2 }
    local id = client.get_json(server.url .. "/videos/?n=1")[1]
    client.parallel(urls(server, "/videos/" .. id, 5))
    local before = client.get_json(server.url .. "/stats?reset=1")
    assert.are.equal(5, before.max_in_flight) -- answered as it was
    local after = client.get_json(server.url .. "/stats")
    assert.are.equal(1, after.max_in_flight) -- the reset left itself, then this one
    assert(support.stop_clean(server))
  end)

  it("POST /capacity grows the video slots at run time: the waiters take them at once", function()
    -- time scale 2: a slot is held 0.4 s + 0.2 s per waiter behind it
    local server = support.start_scoped { time_scale = 2, args = { "--video-capacity", "1" } }
    local id = "frame" -- the first video of the default seed
    local socks = send_gets(server, "/videos/" .. id, 4)
    client.sleep(0.05) -- one holds the slot, three wait
    local t0 = client.now()
    local r = client.request("POST", server.url .. "/capacity?video=4")
    assert.are.equal(200, r.status)
    assert.are.same({ video = 4, transcript = 20 }, client.json.decode(r.body))
    local got = answers(socks, t0)
    for i, a in ipairs(got) do
      assert.are.equal(200, a.status)
      -- at most 0.4 + 0.2 * 2 after the change; at one slot the last
      -- would come 1.6 s or more after the first started
      assert.is_true(a.at < 1.2, i .. ": " .. a.at)
    end
    assert.are.same({ video = 4, transcript = 20 }, client.get_json(server.url .. "/capacity"))
    assert(support.stop_clean(server))
  end)

  it("POST /capacity shrinks them: requests in service finish, waiters get a slot only below the new capacity", function()
    local server = support.start_scoped { time_scale = 2, args = { "--video-capacity", "4" } }
    local busy = send_gets(server, "/videos/frame", 4) -- each holds its slot 0.4 s
    client.sleep(0.05)
    local waiting = send_gets(server, "/videos/frame", 2)
    client.sleep(0.05)
    local t0 = client.now()
    local r = client.request("POST", server.url .. "/capacity?video=1&transcript=3")
    assert.are.same({ video = 1, transcript = 3 }, client.json.decode(r.body))
    for i, a in ipairs(answers(busy, t0)) do
      assert.are.equal(200, a.status)
      assert.is_true(a.at < 0.6, i .. ": " .. a.at) -- finished as they were
    end
    local late = answers(waiting, t0)
    -- one at a time: the first when the last of the four left (0.3 s
    -- after the change), for 0.4 + 0.2 (one behind it), then the second
    -- for 0.4; at four slots both would have ended by 0.9 s
    assert.are.equal(200, late[1].status)
    assert.are.equal(200, late[2].status)
    assert.is_true(late[1].at >= 0.85, late[1].at)
    assert.is_true(late[2].at >= 1.25, late[2].at)
    assert(support.stop_clean(server))
  end)

  it("refuses a bad POST /capacity with 400 and a clear message, and changes nothing", function()
    local server = support.start_scoped { time_scale = 0 }
    local cases = {
      { "?video=0", "video must be a whole number from 1 to 100000, got '0'" },
      { "?video=100001", "video must be a whole number from 1 to 100000, got '100001'" },
      { "?video=4&transcript=x", "transcript must be a whole number from 1 to 100000, got 'x'" },
      { "?video=-3", "got '-3'" },
      { "?video=2.5", "got '2.5'" },
      { "?video=", "got ''" },
      { "", "give video=N and/or transcript=N, each 1 to 100000" },
      { "?videos=3", "give video=N and/or transcript=N" },
      -- not UTF-8: shown as ASCII, and nothing changes (transcript too)
      { "?video=%FF&transcript=5", "video must be a whole number from 1 to 100000, got '?'" },
      { "?video=" .. ("9"):rep(60), "got '" .. ("9"):rep(40) .. "...'" },
    }
    for _, case in ipairs(cases) do
      local r = client.request("POST", server.url .. "/capacity" .. case[1])
      assert.are.equal(400, r.status, case[1])
      assert.are.equal("application/json", r.headers["content-type"])
      local detail = client.json.decode(r.body).detail
      assert.is_truthy(detail:find(case[2], 1, true), case[1] .. ": " .. detail)
    end
    assert.are.same({ video = 10, transcript = 20 }, client.get_json(server.url .. "/capacity"))
    -- leading zeros are a number like any other
    assert.are.equal(200, client.request("POST", server.url .. "/capacity?video=00000005").status)
    assert.are.same({ video = 5, transcript = 20 }, client.get_json(server.url .. "/capacity"))
    local r = client.request("PUT", server.url .. "/capacity")
    assert.are.equal(405, r.status)
    assert.are.equal("GET, POST", r.headers["allow"])
    assert(support.stop_clean(server))
  end)

  it("never rate limits /capacity", function()
    local server = support.start_scoped { time_scale = 0, args = { "--rate-limit", "1/10" } }
    assert.are.equal(200, client.get(server.url .. "/videos/?n=1").status)
    assert.are.equal(429, client.get(server.url .. "/videos/?n=1").status)
    assert.are.equal(200, client.request("POST", server.url .. "/capacity?video=3").status)
    assert.are.equal(200, client.get(server.url .. "/capacity").status)
    assert(support.stop_clean(server))
  end)

  it("refuses bad capacities and rates with a clear message and status 2", function()
    local cases = {
      { "--video-capacity 0", "bad value for --video-capacity: '0' (want 1..100000)" },
      { "--video-capacity 100001", "bad value for --video-capacity: '100001'" },
      { "--transcript-capacity x", "bad value for --transcript-capacity: 'x'" },
      { "--rate-limit 20", "bad value for --rate-limit: '20' (want N/S" },
      { "--rate-limit 0/1", "bad value for --rate-limit: '0/1'" },
      { "--rate-limit 20/0", "bad value for --rate-limit: '20/0'" },
      { "--rate-limit 20/-1", "bad value for --rate-limit: '20/-1'" },
      { "--rate-limit /1", "bad value for --rate-limit: '/1'" },
      { "--rate-limit 20/1s", "bad value for --rate-limit: '20/1s'" },
      { "--rate-limit", "--rate-limit needs a value" },
    }
    for _, case in ipairs(cases) do
      local code, out = run(case[1])
      assert.are.equal(2, code, case[1])
      assert.is_truthy(out:find(case[2], 1, true), case[1] .. ": " .. out)
      assert.are.equal(1, select(2, out:gsub("\n", "")), out) -- one line
    end
    local code, out = run("--help")
    assert.are.equal(0, code)
    assert.is_truthy(out:find("--rate-limit N/S", 1, true))
  end)
end)
