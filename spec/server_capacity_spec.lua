-- avideo-server: --video-capacity, --transcript-capacity, --rate-limit
-- (429 with Retry-After) and /stats?reset=1, against the real binary with
-- the curl CLI (never the avideo module).
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
    os.execute("sleep 0.7")
    assert.are.equal(200, client.get(server.url .. "/videos/" .. id).status)
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
