-- Traces (issue 17): avideo.trace.start/stop and AVIDEO_TRACE, in the
-- three formats, checked as their readers would: the Chrome trace as
-- Trace Event Format JSON, the HAR against HAR 1.2's required fields, the
-- SVG as XML and then as a picture, rendered by headless Chromium.
-- Against avideo-server at a small time scale.
local avideo = require "avideo"
local settled = require "support.settled"
local json = avideo.json

local SOURCE = os.getenv("AVIDEO_SOURCE_DIR") or "."

local server, dir, ids
lazy_setup(function()
  server = avideo.testing.server { time_scale = 0.05 }
  dir = assert(io.popen("mktemp -d"):read("l"))
  ids = avideo.get(server.url .. "/videos?n=12", { timeout = 10 }):json()
end)
lazy_teardown(function()
  if server then server:close() end
  if dir then os.execute("rm -rf " .. dir) end
end)
after_each(function()
  if avideo.trace.active() then avideo.trace.stop() end
  settled()
end)

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- The talk's pattern at a small scale, plus a failure, a sleep and a
-- thread job: what every format must show.
local function run_workload()
  avideo.run(function()
    local s <close> = avideo.session { limit_per_host = 3, timeout = 10 }
    local tasks = {}
    for i, id in ipairs(ids) do tasks[i] = function() return s:get(server.url .. "/videos/" .. id):json() end end
    avideo.gather(tasks)
    avideo.sleep(0.01)
    avideo.run_in_thread(function() return 1 end)
    pcall(s.get, s, "http://127.0.0.1:1/")
  end)
end

-- Trace `workload` (run_workload by default, whose request count is
-- checked) into dir/name; returns the file's path.
local function traced(name, workload)
  local path = dir .. "/" .. name
  local run = workload or run_workload
  avideo.trace.start(path)
  run()
  local written, count = avideo.trace.stop()
  assert.equal(path, written)
  if not workload then assert.equal(#ids + 1, count) end
  return path
end

describe("a chrome trace", function()
  it("has one complete event per request on slot tracks, with its phases inside", function()
    local doc = json.decode(read(traced("run.json")))
    local requests, phases, tasks, sleeps, threads, counters, slots = {}, {}, 0, 0, 0, 0, {}
    for _, e in ipairs(doc.traceEvents) do
      if e.cat == "request" then
        requests[#requests + 1] = e
        slots[e.tid] = true
        assert.equal("X", e.ph)
        assert.matches("^GET http://127%.0%.0%.1:%d+/", e.name)
        assert.is_true(e.dur > 0)
      elseif e.cat == "phase" then
        phases[#phases + 1] = e
      elseif e.cat == "task" then
        tasks = tasks + 1
      elseif e.cat == "sleep" then
        sleeps = sleeps + 1
      elseif e.cat == "thread" then
        threads = threads + 1
      elseif e.ph == "C" then
        counters = counters + 1
        assert.is_true(e.args["in flight"] <= 3)
      end
    end
    -- the refused connection got a slot too, on a track of its own or not
    assert.equal(#ids + 1, #requests)
    local n = 0
    for _ in pairs(slots) do n = n + 1 end
    assert.is_true(n <= 3, "one track per slot: " .. n) -- limit_per_host = 3 per host, one host at a time
    -- every phase lies inside a request on its track
    for _, p in ipairs(phases) do
      local inside = false
      for _, r in ipairs(requests) do
        if r.tid == p.tid and p.ts >= r.ts - 1 and p.ts + p.dur <= r.ts + r.dur + 1 then inside = true end
      end
      assert.is_true(inside, p.name .. " outside its request")
    end
    local names = {}
    for _, p in ipairs(phases) do names[p.name] = true end
    assert.is_true(names.waiting and names.receiving, "waiting and receiving phases")
    assert.is_true(tasks >= #ids + 1, "the tasks")
    assert.equal(1, sleeps)
    assert.equal(1, threads)
    assert.is_true(counters > 0)
    -- requests that waited for a slot are on the queue process
    local queued = 0
    for _, e in ipairs(doc.traceEvents) do
      if e.cat == "queued" then queued = queued + 1 end
    end
    assert.is_true(queued >= #ids - 3)
  end)
end)

describe("a HAR", function()
  local REQUIRED = {
    entry = { "startedDateTime", "time", "request", "response", "cache", "timings" },
    request = { "method", "url", "httpVersion", "cookies", "headers", "queryString", "headersSize", "bodySize" },
    response = { "status", "statusText", "httpVersion", "cookies", "headers", "content", "redirectURL",
      "headersSize", "bodySize" },
    timings = { "send", "wait", "receive" },
  }
  local function has(t, fields, what)
    for _, f in ipairs(fields) do assert.is_not_nil(t[f], what .. " lacks " .. f) end
  end

  it("has HAR 1.2's required fields, timings that add up, blocked = queued", function()
    local doc = json.decode(read(traced("run.har")))
    assert.equal("1.2", doc.log.version)
    has(doc.log.creator, { "name", "version" }, "creator")
    local entries = doc.log.entries
    assert.equal(#ids + 1, #entries)
    local ok_count = 0
    for _, e in ipairs(entries) do
      has(e, REQUIRED.entry, "entry")
      has(e.request, REQUIRED.request, "request")
      has(e.response, REQUIRED.response, "response")
      has(e.response.content, { "size", "mimeType" }, "content")
      has(e.timings, REQUIRED.timings, "timings")
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", e.startedDateTime)
      local sum = 0
      for k, v in pairs(e.timings) do
        assert.is_true(v >= 0 or (v == -1 and k ~= "send" and k ~= "wait" and k ~= "receive"), k .. " = " .. v)
        if v > 0 and k ~= "ssl" then sum = sum + v end
      end
      assert.is_true(math.abs(sum - e.time) < 0.01, "time is the sum of the timings")
      if e.response.status == 200 then
        ok_count = ok_count + 1
        assert.equal("application/json", e.response.content.mimeType:match("^[^;]+"))
        assert.is_true(e.response.content.size > 0)
      end
    end
    assert.equal(#ids, ok_count)
    -- blocked is the wait for a slot: the later ones of a gather at 3 waited
    local waited = 0
    for _, e in ipairs(entries) do
      if e.timings.blocked > 0.05 * 0.2 * 1000 * 0.5 then waited = waited + 1 end
    end
    assert.is_true(waited >= #ids - 3 - 1, "requests that waited for a slot: " .. waited)
    assert.matches("^connect: ", entries[#entries].response._error)
  end)

  it("blocked equals response.timings.queued", function()
    local path = dir .. "/one.har"
    avideo.trace.start(path)
    local r = avideo.get(server.url .. "/videos?n=1", { timeout = 10 })
    avideo.trace.stop()
    local e = json.decode(read(path)).log.entries[1]
    assert.is_true(math.abs(e.timings.blocked - r.timings.queued * 1000) < 1e-6)
    assert.is_true(math.abs(e.time - r.elapsed * 1000) < 1e-6)
  end)
end)

describe("an SVG waterfall", function()
  it("parses as XML with one bar group per request, and Chromium draws it", function()
    local path = traced("run.svg")
    local png = dir .. "/run.png"
    local py = assert(io.popen(("python3 - %q <<'EOF'\n"
      .. "import sys, xml.etree.ElementTree as ET\n"
      .. "root = ET.parse(sys.argv[1]).getroot()\n"
      .. "ns = '{http://www.w3.org/2000/svg}'\n"
      .. "print(sum(1 for g in root.iter(ns + 'g') if g.get('class') == 'request'))\n"
      .. "EOF"):format(path)))
    local groups = tonumber(py:read("a"))
    py:close()
    assert.equal(#ids + 1, groups)
    local r = assert(io.popen(("timeout 120 python3 %s/spec/support/svg_render.py %q %q 2>&1")
      :format(SOURCE, path, png)))
    local out = r:read("a")
    r:close()
    local colours, dark = out:match("colours (%d+) dark ([%d.]+)")
    assert.is_not_nil(colours, out)
    -- the phases' colours, text and the axis: far from a blank page
    assert.is_true(tonumber(colours) >= 8, out)
    assert.is_true(tonumber(dark) > 0.01, out)
  end)

  it("cuts a long label between characters, never inside one", function()
    local path = dir .. "/utf8.svg"
    avideo.trace.start(path)
    -- the last 27 bytes of "GET <url>" begin inside the "é"
    pcall(avideo.get, server.url .. "/v/" .. ("x"):rep(40) .. "é" .. ("y"):rep(26), { timeout = 10 })
    avideo.trace.stop()
    local py = assert(io.popen(("python3 - %q <<'EOF'\n"
      .. "import sys, xml.etree.ElementTree as ET\n"
      .. "root = ET.parse(sys.argv[1]).getroot()\n"
      .. "print('parsed', sum(1 for t in root.iter('{http://www.w3.org/2000/svg}text') if 'y' * 20 in (t.text or '')))\n"
      .. "EOF"):format(path)))
    local out = py:read("a")
    py:close()
    assert.matches("parsed 1", out, 1, true)
  end)

  it("stays a picture of readable size for 10,000 requests", function()
    local path = dir .. "/many.svg"
    avideo.trace.start(path)
    avideo.run(function()
      local s <close> = avideo.session { limit_per_host = 50, timeout = 30 }
      local tasks = {}
      for i = 1, 10000 do tasks[i] = function() return s:get(server.url .. "/stats").status end end
      avideo.gather(tasks, { limit = 200 })
    end)
    local _, count = avideo.trace.stop()
    assert.equal(10000, count)
    local text = read(path)
    local height = tonumber(text:match('height="(%d+)"'))
    assert.is_true(height < 8000, "height " .. height)
    local _, groups = text:gsub('<g class="request">', "")
    assert.equal(10000, groups)
  end)
end)

describe("limits in a trace", function()
  -- An adaptive host limit and total, then the total set at run time.
  local function adaptive_run()
    avideo.run(function()
      local s <close> = avideo.session { limit_per_host = "auto", limit = "auto", timeout = 10 }
      local tasks = {}
      for i, id in ipairs(ids) do tasks[i] = function() return s:get(server.url .. "/videos/" .. id).status end end
      for _ = 1, 3 do avideo.gather(tasks) end
      s:set_limit(7)
    end)
  end

  -- The "limit ..." counter events of a chrome trace, by name.
  local function limit_counters(path)
    local by_name = {}
    for _, e in ipairs(json.decode(read(path)).traceEvents) do
      if e.ph == "C" and e.name:match("^limit ") then
        by_name[e.name] = by_name[e.name] or {}
        table.insert(by_name[e.name], e)
      end
    end
    return by_name
  end

  it("are counters in a chrome trace, per host and the total, one sample per change", function()
    local counters = limit_counters(traced("limits.json", adaptive_run))
    local host, total = counters["limit " .. server.url], counters["limit total"]
    assert.is_not_nil(host, "a counter for the host")
    assert.is_not_nil(total, "a counter for the total")
    assert.equal(4, host[1].args.limit) -- "auto" starts at 4
    for _, series in ipairs { host, total } do
      for i = 2, #series do
        assert.are_not.equal(series[i - 1].args.limit, series[i].args.limit) -- only changes
        assert.is_true(series[i].ts >= series[i - 1].ts)
      end
    end
    assert.is_true(#host > 1 and #host <= 3 * #ids, #host) -- it moved, and not a sample per request
    print(("\nlimit samples: host %d, total %d, for %d requests"):format(#host, #total, 3 * #ids))
    assert.equal(7, total[#total].args.limit) -- set_limit(7)
    -- a fixed limit never set at run time is not shown
    local fixed = limit_counters(traced("fixed.json"))
    assert.is_nil(next(fixed))
  end)

  it("name their session when two sessions' limits moved", function()
    local counters = limit_counters(traced("two.json", function()
      avideo.run(function()
        local a <close> = avideo.session { limit_per_host = "auto", timeout = 10 }
        local b <close> = avideo.session { limit_per_host = "auto", timeout = 10 }
        local tasks = {}
        for i, id in ipairs(ids) do
          local s = i % 2 == 0 and a or b
          tasks[i] = function() return s:get(server.url .. "/videos/" .. id).status end
        end
        avideo.gather(tasks)
      end)
    end))
    local names = {}
    for name in pairs(counters) do names[#names + 1] = name end
    table.sort(names)
    assert.equal(2, #names, table.concat(names, ", "))
    for _, name in ipairs(names) do
      assert.matches("^limit " .. server.url:gsub("%p", "%%%0") .. " %(session %d+%)$", name)
    end
    assert.are_not.equal(names[1], names[2])
  end)

  it("are shown again in the next trace, though unchanged", function()
    avideo.run(function()
      local s <close> = avideo.session { limit_per_host = 2, timeout = 10 }
      s:set_limit_per_host(3)
      for n = 1, 2 do
        local path = dir .. "/again" .. n .. ".json"
        avideo.trace.start(path)
        -- at once: a fixed limit forgets an idle host (and shows its
        -- limit again when it comes back)
        avideo.gather(function() s:get(server.url .. "/videos/" .. ids[1]) end,
          function() s:get(server.url .. "/videos/" .. ids[2]) end)
        avideo.trace.stop()
        local host = limit_counters(path)["limit " .. server.url]
        assert.equal(1, #host) -- once, at its first request: then it stayed
        assert.equal(3, host[1].args.limit)
      end
    end)
  end)

  it("are a step line under the SVG waterfall", function()
    local path = traced("limits.svg", adaptive_run)
    local text = read(path)
    assert.equal(1, select(2, text:gsub('<g class="limits">', "")))
    local lines = {}
    for points in text:gmatch('<polyline class="limit"[^>]-points="([^"]*)"') do lines[#lines + 1] = points end
    assert.equal(2, #lines) -- the total and the host
    for _, points in ipairs(lines) do
      local _, n = points:gsub(",", "")
      assert.is_true(n >= 3, points)
    end
    assert.matches("total: 7", text, 1, true)
    -- well-formed, and no band without a limit that moved
    local py = assert(io.popen(("python3 -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' %q 2>&1")
      :format(path)))
    assert.equal("", py:read("a"))
    py:close()
    assert.is_nil(read(traced("fixed.svg")):find('class="limits"', 1, true))
  end)
end)

describe("the README's waterfalls", function()
  it("are made by examples/waterfalls.lua: all at once at 100, ten waves at 10", function()
    local out = assert(io.popen(("timeout 60 lua5.4 %s/examples/waterfalls.lua --url %s --out %s 2>&1")
      :format(SOURCE, server.url, dir)))
    local text = out:read("a")
    out:close()
    assert.matches("limit_per_host = 100: 100 requests", text)
    assert.matches("limit_per_host = 10: 100 requests", text)
    local function queued_bars(name)
      local svg = read(dir .. "/" .. name)
      local _, groups = svg:gsub('<g class="request">', "")
      assert.equal(100, groups)
      return select(2, svg:gsub('fill="#c9c9c9"', "")) - 1 -- the legend's
    end
    -- at 100 nothing waits for a slot (a bar is drawn from half a pixel,
    -- a third of a ms here: a busy machine may show a few slivers); at
    -- 10, the 90 after the first wave do
    assert.is_true(queued_bars("gather-limit-100.svg") < 10)
    assert.is_true(queued_bars("gather-limit-10.svg") >= 90)
  end)
end)

describe("the examples' --trace", function()
  it("writes the run of a content-warnings program", function()
    local path = dir .. "/service.har"
    local cmd = ("timeout 60 lua5.4 %s/examples/content_warnings_async_final.lua --url %s --n 5 --model-seconds 0"
      .. " --trace %s >/dev/null 2>&1"):format(SOURCE, server.url, path)
    assert.is_true(os.execute(cmd))
    local entries = json.decode(read(path)).log.entries
    -- the list, then a video, its transcript and a PATCH for each of the 5
    assert.equal(1 + 3 * 5, #entries)
  end)
end)

describe("tracing", function()
  it("AVIDEO_TRACE traces a whole process and writes at its end", function()
    local path = dir .. "/env.json"
    local script = dir .. "/env.lua"
    local f = assert(io.open(script, "w"))
    f:write(("local avideo = require 'avideo'\nfor i = 1, 3 do avideo.get(%q) end\n")
      :format(server.url .. "/videos?n=1"))
    f:close()
    assert.is_true(os.execute(("AVIDEO_TRACE=%q timeout 30 lua5.4 %q"):format(path, script)))
    local doc = json.decode(read(path))
    local n = 0
    for _, e in ipairs(doc.traceEvents) do
      if e.cat == "request" then n = n + 1 end
    end
    assert.equal(3, n)
  end)

  it("leaves out a task an earlier trace saw, when it ends in the next one", function()
    local a, b = dir .. "/earlier.json", dir .. "/next.json"
    avideo.run(function()
      avideo.trace.start(a)
      local t = avideo.spawn(avideo.sleep, 0.05)
      avideo.trace.stop()
      avideo.trace.start(b)
      t:wait() -- it ends here, where its place in the first trace's list names no task
      local mine = avideo.spawn(avideo.sleep, 0.2)
      mine:wait()
      avideo.trace.stop()
    end)
    local names = {}
    for _, e in ipairs(json.decode(read(b)).traceEvents) do
      if e.cat == "task" then names[#names + 1] = e end
    end
    assert.is_true(#names >= 1)
    for _, e in ipairs(names) do assert.is_true(e.dur >= 0.15 * 1e6, "a task of the earlier trace took its place") end
  end)

  it("refuses bad input with one-line errors and keeps the trace going", function()
    local function invalid(pattern, ...)
      local ok, err = pcall(...)
      assert.is_false(ok)
      assert.is_true(avideo.is_error(err, "invalid"), tostring(err))
      assert.matches(pattern, err.message)
    end
    invalid("path must be a file name", avideo.trace.start, 42)
    invalid("cannot tell the format", avideo.trace.start, dir .. "/x.txt")
    invalid('format must be "chrome", "har" or "svg"', avideo.trace.start, dir .. "/x.json", { format = "pdf" })
    invalid("unknown option 'fmt'", avideo.trace.start, dir .. "/x.json", { fmt = "har" })
    -- a full disk at stop: an error, not a cut file said to be written
    avideo.trace.start("/dev/full", { format = "chrome" })
    invalid("cannot write '/dev/full': No space left on device", avideo.trace.stop)
    assert.is_false((avideo.trace.active()))
    invalid("cannot write", avideo.trace.start, dir .. "/no/such/dir/x.json")
    invalid("no trace is being recorded", avideo.trace.stop)
    avideo.trace.start(dir .. "/x.json")
    invalid("already being recorded", avideo.trace.start, dir .. "/y.json")
    assert.is_true((avideo.trace.active()))
    avideo.trace.stop()
    assert.is_false((avideo.trace.active()))
  end)

  it("costs nothing when off: no records are kept", function()
    avideo.get(server.url .. "/videos?n=1", { timeout = 10 })
    local requests, limits = require("avideo.scheduler").loop:trace_take()
    assert.same({}, requests)
    assert.same({}, limits)
  end)
end)
