-- examples/: every example runs as a subprocess against the real
-- avideo-server at a small time scale, and its output shows the talk's
-- point (100 videos fetched, stages in order or overlapping, the final
-- version's PATCHes visible on the server).
local avideo = require "avideo"
local support = require "support.server"

local LUA = os.getenv("LUA") or "lua5.4"
local TIME_SCALE = 0.02
local LIMIT = 120 -- seconds any one example may run before `timeout` stops it
local DIR = (os.getenv("AVIDEO_SOURCE_DIR") or ".") .. "/examples/"

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- The build this spec's avideo.core comes from, so the examples use it too.
local function binary_dir()
  local so = package.searchpath("avideo.core", package.cpath)
  return os.getenv("AVIDEO_BINARY_DIR") or (so and so:match("^(.*)/lib/avideo/core%.so$"))
end

-- Run examples/<name>.lua with args (and extra environment): its output,
-- stdout and stderr together, and its exit status.
local function run(name, args, env, wrap)
  local words = { "env" }
  local bin = binary_dir()
  if bin then words[#words + 1] = "AVIDEO_BINARY_DIR=" .. quote(bin) end
  for k, v in pairs(env or {}) do words[#words + 1] = k .. "=" .. quote(v) end
  local cmd = { LUA, DIR .. name .. ".lua" }
  for _, a in ipairs(args or {}) do cmd[#cmd + 1] = a end
  for i, w in ipairs(cmd) do cmd[i] = quote(w) end
  local line = table.concat(cmd, " ")
  if wrap then line = wrap(line) end
  local pipe = assert(io.popen(("%s timeout %d %s 2>&1"):format(table.concat(words, " "), LIMIT, line)))
  local out = pipe:read("a")
  local _, _, code = pipe:close()
  return out, code
end

-- The timeline's plain lines: {t, stage, event, id}.
local function timeline(out)
  local events = {}
  for t, stage, event, id in ("\n" .. out):gmatch("\n *([%d.]+) s  (%a+) +(%a+) +(%S+)") do
    events[#events + 1] = { t = tonumber(t), stage = stage, event = event, id = id }
  end
  return events
end

local function count(events, stage, event)
  local n = 0
  for _, e in ipairs(events) do
    if e.stage == stage and e.event == event then n = n + 1 end
  end
  return n
end

-- The most items in a stage at once, by its start/done lines.
local function most_at_once(events, stage)
  local now, most = 0, 0
  for _, e in ipairs(events) do
    if e.stage == stage then
      now = now + (e.event == "start" and 1 or -1)
      most = math.max(most, now)
    end
  end
  return most
end

local function service_args(url, n, model_seconds)
  return { "--url", url, "--n", tostring(n), "--model-seconds", tostring(model_seconds or 0.02) }
end

-- Run a content-warnings version that must succeed: every stage done for
-- each of the n videos. Returns its timeline events and its output.
local function run_service(name, url, n, model_seconds)
  local out, code = run(name, service_args(url, n, model_seconds))
  assert.are.equal(0, code, out)
  local events = timeline(out)
  for _, stage in ipairs { "video", "transcript", "model", "patch" } do
    assert.are.equal(n, count(events, stage, "done"), stage)
  end
  assert.matches("processed " .. n .. " videos in [%d.]+ s", out)
  return events, out
end

-- A server of its own for one test, stopped when the variable goes out of scope.
local function own_server(opts)
  return setmetatable(support.start(opts), { __close = function(s) s.stop() end })
end

local function get_ids(url, n)
  return avideo.get(url .. "/videos/", { params = { n = n } }):raise_for_status():json()
end

-- The talk's rule: the text lowercased, split on whitespace, the word "nasa".
local function mentions_nasa(text)
  for word in text:lower():gmatch("%S+") do
    if word == "nasa" then return true end
  end
  return false
end

describe("examples", function()
  local server, ids

  setup(function()
    server = support.start { time_scale = TIME_SCALE }
    ids = get_ids(server.url, 100)
  end)

  teardown(function()
    server.stop()
  end)

  it("notebook.lua runs the notebook's cells in order, fetching 100 videos twice", function()
    local out, code = run("notebook", { "--url", server.url })
    assert.are.equal(0, code, out)
    local cells, wall, shown = {}, {}, {}
    for n in out:gmatch("In %[(%d+)%]") do cells[#cells + 1] = tonumber(n) end
    assert.are.same({ 3, 4, 5, 6, 8, 9 }, cells)
    for n, body in out:gmatch("In %[(%d+)%]:[^\n]*\n(.-)\n\n") do
      n = tonumber(n)
      wall[n] = tonumber(body:match("wall time ([%d.]+) s$"))
      shown[n] = body:match("^Out%[" .. n .. "%]: (.-)\n *wall time")
      assert.is_number(wall[n], body)
    end
    assert.are.equal(("%q"):format(ids[1]), shown[3])
    assert.matches('^{"id": "' .. ids[1] .. '",', shown[4])
    assert.are.equal(shown[4], shown[5])
    assert.is_nil(shown[6])
    assert.are.equal("100", shown[8])
    assert.are.equal("100", shown[9])
    -- four awaits in a row wait at least four of the server's 0.2 s delays
    assert.is_true(wall[6] >= 4 * 0.2 * TIME_SCALE, out)
    -- the talk's point: 100 at once overload the server, 10 at a time do not
    assert.is_true(wall[8] > 2 * wall[9], out)
  end)

  it("content_warnings_sync.lua does every stage of every video in order", function()
    local events, out = run_service("content_warnings_sync", server.url, 10)
    assert.is_nil(out:find("\27[", 1, true), "plain output when not a terminal")
    local expected = {}
    for i = 1, 10 do
      for _, stage in ipairs { "video", "transcript", "model", "patch" } do
        expected[#expected + 1] = stage .. " start " .. ids[i]
        expected[#expected + 1] = stage .. " done " .. ids[i]
      end
    end
    local got = {}
    for i, e in ipairs(events) do got[i] = e.stage .. " " .. e.event .. " " .. e.id end
    assert.are.same(expected, got)
  end)

  it("content_warnings_async_attempt.lua gathers the videos but runs one model at a time", function()
    local events = run_service("content_warnings_async_attempt", server.url, 20)
    assert.is_true(most_at_once(events, "video") > 1, "gathered")
    assert.are.equal(1, most_at_once(events, "model"), "the model blocks the loop")
  end)

  it("content_warnings_async_final.lua PATCHes every video: the nasa warnings, [] elsewhere", function()
    local fresh <close> = own_server { time_scale = TIME_SCALE }
    local session <close> = avideo.session { base_url = fresh.url, limit_per_host = 10, raise_for_status = true }
    local all = get_ids(fresh.url, 100)
    -- mark every video first, so that a video the example missed shows
    local marks = {}
    for i, id in ipairs(all) do
      marks[i] = function() session:patch("/videos/" .. id, { json = { warnings = { "stale" } } }) end
    end
    avideo.gather(marks)

    local events, out = run_service("content_warnings_async_final", fresh.url, 100)
    assert.is_true(most_at_once(events, "video") <= 5, "video semaphore")
    assert.is_true(most_at_once(events, "transcript") <= 10, "transcript semaphore")
    assert.is_true(most_at_once(events, "model") > 1, "models run in threads while the loop goes on")

    local checks = {}
    for i, id in ipairs(all) do
      checks[i] = function()
        local video = session:get("/videos/" .. id):text()
        local transcript = session:get("/videos/" .. id .. "/transcript"):json()
        return { id = id, video = video, nasa = mentions_nasa(transcript) }
      end
    end
    local flagged = {}
    for _, c in ipairs(avideo.gather(checks)) do
      local expected = c.nasa and '"warnings":["nasa"]' or '"warnings":[]'
      assert.is_truthy(c.video:find(expected, 1, true), c.id .. ": " .. c.video)
      if c.nasa then flagged[#flagged + 1] = c.id .. " (nasa)" end
    end
    assert.is_true(#flagged >= 2, "the data has nasa transcripts among the first 100")
    assert.matches("warnings on " .. #flagged .. ": " .. table.concat(flagged, ", "):gsub("%p", "%%%0"), out)
  end)

  it("reproduces the talk's lesson: a starved loop outlives the keep-alive, the final version does not", function()
    -- connections idle for 1 s are closed; models of 0.3 s run back to back
    local strict <close> = own_server { time_scale = TIME_SCALE, keepalive_timeout = 1 }
    local out, code = run("content_warnings_async_attempt", service_args(strict.url, 20, 0.3))
    assert.are_not.equal(0, code, out)
    assert.matches("avideo%.%a+ error: ", out)
    run_service("content_warnings_async_final", strict.url, 20, 0.3)
  end)

  it("prints the timeline in colour and columns on a terminal, plainly with NO_COLOR", function()
    if not os.execute("command -v script >/dev/null 2>&1") then
      pending("needs script(1) to give the example a terminal")
      return
    end
    local function in_terminal(line) return "script -qec " .. quote(line) .. " /dev/null" end
    local args = service_args(server.url, 2)
    local out, code = run("content_warnings_sync", args, { NO_COLOR = "", TERM = "xterm" }, in_terminal)
    assert.are.equal(0, code, out)
    assert.matches("\27%[36mstart " .. ids[1], out)                    -- video: first column
    assert.matches("\n *[%d.]+ +\27%[33mstart " .. ids[1], out:gsub("\r", ""))
    out, code = run("content_warnings_sync", args, { NO_COLOR = "1", TERM = "xterm" }, in_terminal)
    assert.are.equal(0, code, out)
    assert.is_nil(out:find("\27", 1, true), out)
    assert.are.equal(2, count(timeline(out:gsub("\r", "")), "patch", "done"))
  end)

  it("refuses bad options with the usage and status 2", function()
    local out, code = run("content_warnings_sync", { "--n", "many" })
    assert.are.equal(2, code, out)
    assert.matches("%-%-n wants a whole number", out)
    assert.matches("usage: ", out)
    out, code = run("notebook", { "--model-seconds", "1" })
    assert.are.equal(2, code, out)
    assert.matches("unknown argument: %-%-model%-seconds", out)
  end)

  it("demo.lua runs the notebook on a running server, and leaves it running", function()
    local out, code = run("demo", { "--url", server.url })
    assert.are.equal(0, code, out)
    assert.matches("using the avideo%-server already running at " .. server.url:gsub("%p", "%%%0"), out)
    assert.matches("Out%[9%]: 100", out)
    assert.are.equal(200, avideo.get(server.url .. "/videos/?n=1").status)
  end)

  it("demo.lua starts a server when none answers, and stops it afterwards", function()
    local probe = support.start {}
    local url = probe.url
    probe.stop()
    local out, code = run("demo", { "--url", url, "--time-scale", tostring(TIME_SCALE) })
    assert.are.equal(0, code, out)
    local pid = out:match("started avideo%-server at " .. url:gsub("%p", "%%%0") .. " %(pid (%d+)%)")
    assert.is_string(pid, out)
    assert.matches("Out%[9%]: 100", out)
    assert.matches("stopped the avideo%-server it started %(pid " .. pid .. "%)", out)
    assert.is_not_true(os.execute("kill -0 " .. pid .. " 2>/dev/null"))
    local ok, err = pcall(avideo.get, url .. "/videos/?n=1")
    assert.is_false(ok)
    assert.is_true(avideo.is_error(err, "connect"), tostring(err))
  end)
end)
