-- avideo-server: the overload model (capacity, FIFO queue, the delay
-- staircase) and clients that vanish while their answer is delayed.
local support = require "support.server"
local client = require "support.server_client"

local function assert_clean_exit(server)
  assert(support.stop_clean(server))
end

-- The model of docs/server.md ("Overload") for n requests arriving at once:
-- the sorted times at which they finish. A slot taken when `waiting`
-- requests queue behind it is held scale * (min + factor * min(waiting, 10)).
local function model(n, capacity, min, factor, scale)
  local frees, done = {}, {}
  local queued = n
  local function take(now)
    queued = queued - 1
    local finish = now + scale * (min + factor * math.min(queued, 10))
    frees[#frees + 1] = finish
    done[#done + 1] = finish
  end
  -- The first ones find free slots while the queue is still empty.
  for _ = 1, math.min(n, capacity) do
    frees[#frees + 1] = scale * min
    done[#done + 1] = scale * min
    queued = queued - 1
  end
  while queued > 0 do
    table.sort(frees)
    local now = table.remove(frees, 1)
    take(now)
  end
  table.sort(done)
  return done
end

local function urls(server, path, n)
  local list = {}
  for i = 1, n do list[i] = server.url .. path end
  return list
end

-- Under valgrind (AVIDEO_SLOW) the client side is slower: more slack.
local SLOW = os.getenv("AVIDEO_SLOW") and 2 or 1

local function assert_times(expected, results, slack, any_status)
  slack = slack * SLOW
  assert.are.equal(#expected, #results)
  for i, r in ipairs(results) do
    if not any_status then assert.are.equal(200, r.status) end
    local want = expected[i]
    assert.is_true(r.time >= want - 0.005 and r.time <= want + slack + 0.05 * want,
                   ("request %d took %.3f s, the model says %.3f s"):format(i, r.time, want))
  end
end

describe("avideo-server overload #server", function()
  after_each(support.stop_scoped)

  local server, id

  before_each(function()
    server = support.start {}
    id = client.get_json(server.url .. "/videos/?n=1")[1]
  end)
  after_each(function() assert_clean_exit(server) end)

  it("answers 11 concurrent GETs: ten at the base delay, one at twice it", function()
    local results = client.parallel(urls(server, "/videos/" .. id, 11))
    assert_times(model(11, 10, 0.2, 0.1, 1), results, 0.06)
    for i = 1, 10 do assert.is_true(results[i].time < 0.27) end
    assert.is_true(results[11].time >= 0.4 and results[11].time < 0.48)
  end)

  it("holds a slot for an unknown id like for any other", function()
    local list = urls(server, "/videos/nosuchvideo", 10)
    list[11] = server.url .. "/videos/" .. id
    local results = client.parallel(list)
    assert_times(model(11, 10, 0.2, 0.1, 1), results, 0.06, true)
    local found, missing = 0, 0
    for _, r in ipairs(results) do
      if r.status == 200 then found = found + 1 elseif r.status == 404 then missing = missing + 1 end
    end
    assert.are.same({ 1, 10 }, { found, missing })
  end)

  it("gives transcripts 20 slots and the same staircase", function()
    local results = client.parallel(urls(server, "/videos/" .. id .. "/transcript", 30))
    assert_times(model(30, 20, 0.1, 0.1, 1), results, 0.06)
  end)

  it("puts no limit on the list and PATCH: 30 at once all take 50 ms", function()
    local results = client.parallel(urls(server, "/videos/?n=10", 30))
    assert.are.equal(30, #results)
    for _, r in ipairs(results) do
      assert.are.equal(200, r.status)
      assert.is_true(r.time >= 0.05 and r.time < 0.12, r.time)
    end
  end)

  it("keeps a delayed answer alive past the keep-alive timeout", function()
    local slow = support.start_scoped { time_scale = 10, keepalive_timeout = 1 }
    local r = client.get(slow.url .. "/videos/" .. id)
    assert.are.equal(200, r.status)
    assert.is_true(r.time >= 2.0 and r.time < 2.3, r.time)
    assert_clean_exit(slow)
  end)

  it("answers pipelined requests in order, each after its delay", function()
    local sock = client.connect(server)
    local start = client.now()
    assert(sock:send(("GET /videos/%s HTTP/1.1\r\nHost: x\r\n\r\n"):rep(2):format(id, id)))
    for i = 1, 2 do
      local status = client.read_response(sock)
      assert.are.equal(200, status)
      local took = client.now() - start
      assert.is_true(took >= 0.2 * i and took < 0.2 * i + 0.08, took)
    end
    sock:close()
  end)

  -- Ten raw requests take every video slot, then a probe queues behind
  -- them. Returns the request text, the holders, the probe and its start.
  local function fill_then_probe()
    local request = ("GET /videos/%s HTTP/1.1\r\nHost: x\r\n\r\n"):format(id)
    local holders = {}
    for i = 1, 10 do holders[i] = client.connect(server); assert(holders[i]:send(request)) end
    client.sleep(0.03)
    local probe = client.connect(server)
    local start = client.now()
    assert(probe:send(request))
    client.sleep(0.03)
    return request, holders, probe, start
  end

  local function assert_answered(socks, from)
    for i = from or 1, #socks do
      assert.are.equal(200, (client.read_response(socks[i])))
      socks[i]:close()
    end
  end

  it("takes a client that leaves the queue out of it", function()
    -- Five more queue behind the probe and leave: when a slot frees, the
    -- probe must see nobody behind it.
    local request, holders, probe, start = fill_then_probe()
    local leavers = {}
    for i = 1, 5 do leavers[i] = client.connect(server); assert(leavers[i]:send(request)) end
    client.sleep(0.03)
    for _, s in ipairs(leavers) do s:close() end
    assert_answered({ probe })
    local took = client.now() - start
    -- slot free at ~0.17 s after the probe, then 0.2 s (0.7 s if the five counted)
    assert.is_true(took > 0.3 and took < 0.45, took)
    assert_answered(holders)
  end)

  it("gives the slot of a client that leaves while holding it to the next at once", function()
    local _, holders, probe, start = fill_then_probe()
    for i = 1, 5 do holders[i]:close() end
    assert_answered({ probe })
    local took = client.now() - start
    -- a slot frees at ~0.03 s, then 0.2 s; kept slots would free at ~0.17 s
    assert.is_true(took > 0.2 and took < 0.3, took)
    assert_answered(holders, 6)
  end)

  it("loses no slot to clients that vanish at any stage", function()
    local request = ("GET /videos/%s HTTP/1.1\r\nHost: x\r\n\r\n"):format(id)
    local paths = { "/videos/" .. id, "/videos/" .. id .. "/transcript", "/videos/?n=5" }
    local socks = {}
    for round = 1, 3 do
      for i = 1, 40 do
        local s = client.connect(server)
        s:send(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n"):format(paths[i % 3 + 1]))
        socks[#socks + 1] = s
      end
      local patch = client.connect(server)
      patch:send(("PATCH /videos/%s HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{\"a\": 1}"):format(id) .. " ")
      socks[#socks + 1] = patch
      client.sleep(0.05 * round)
      for _, s in ipairs(socks) do s:close() end
      socks = {}
    end
    -- A half-sent request, a reset connection, and a client gone after sending.
    local half = client.connect(server); half:send("GET /videos/" .. id)
    local reset = client.connect(server); reset:send(request); reset:setoption("linger", { on = true, timeout = 0 })
    reset:close()
    half:close()
    -- Whatever was held is released once its delay ends: ten at once take 0.2 s again.
    client.sleep(1.5)
    local results = client.parallel(urls(server, "/videos/" .. id, 10))
    assert_times(model(10, 10, 0.2, 0.1, 1), results, 0.06)
    results = client.parallel(urls(server, "/videos/" .. id .. "/transcript", 20))
    assert_times(model(20, 20, 0.1, 0.1, 1), results, 0.06)
  end)

  it("stops cleanly on SIGTERM with requests queued and sleeping", function()
    local socks = {}
    for i = 1, 30 do
      socks[i] = client.connect(server)
      socks[i]:send(("GET /videos/%s HTTP/1.1\r\nHost: x\r\n\r\n"):format(id))
    end
    client.sleep(0.05)
    local start = client.now()
    assert_clean_exit(server)
    assert.is_true(client.now() - start < 1)
    for _, s in ipairs(socks) do
      local status, err = client.read_response(s)
      assert.is_nil(status)
      assert.is_truthy(err == "closed" or err == "connection reset by peer", err)
      s:close()
    end
    server = support.start {} -- for after_each
  end)
end)

describe("avideo-server staircase of 100 #server", function()
  after_each(support.stop_scoped)

  it("follows the model for 100 concurrent GETs at a smaller time scale", function()
    -- Half the real delays: steps of 0.6 s stay far apart even when a busy
    -- machine delays curl's hundred connections by tens of ms.
    local scale = 0.5
    local server = support.start_scoped { time_scale = scale }
    local id = client.get_json(server.url .. "/videos/?n=1")[1]
    local results = client.parallel(urls(server, "/videos/" .. id, 100))
    local expected = model(100, 10, 0.2, 0.1, scale)
    assert_times(expected, results, 0.12)
    -- the shape: ten at the base delay, then 1.2 s (scaled) steps
    assert.is_true(math.abs(expected[10] - 0.1) < 1e-9 and math.abs(expected[20] - 0.7) < 1e-9)
    assert_clean_exit(server)
  end)
end)
