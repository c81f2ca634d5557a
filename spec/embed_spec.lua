-- Embedding: avideo.start / step / backend_fd / backend_timeout (a host's
-- own loop drives the scheduler), avideo.use_loop with luv, and the luv
-- interop example run as a subprocess against the real avideo-server. The
-- C hosts (examples/embed/*.c) are ctest entries of their own, for each Lua
-- as this spec is (embed_host_uv@luajit, ...).
local avideo = require "avideo"
local support = require "support.server"
local uv = require "luv"
local stderr_of = require "support.stderr_of"

local LUA = os.getenv("LUA") or "lua5.4"
local EXAMPLE = (os.getenv("AVIDEO_SOURCE_DIR") or ".") .. "/examples/embed/luv_interop.lua"

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Step until the started tasks end, waiting as a host would: never longer
-- than backend_timeout() says. Returns how many steps it took.
local function drive(limit_s)
  local deadline, steps = avideo.now() + (limit_s or 10), 0
  while avideo.step() do
    steps = steps + 1
    assert(avideo.now() < deadline, "started tasks did not end in time")
    local ms = avideo.backend_timeout()
    if ms > 0 then uv.sleep(math.min(ms, 5)) end
  end
  return steps
end

local function settled()
  assert.is_false(avideo.step())
  local s = avideo.stats()
  assert.are.same({ tasks = 0, ops = 0, transfers = 0 }, { tasks = s.tasks, ops = s.ops, transfers = s.transfers })
end

describe("avideo.start and avideo.step", function()
  after_each(function()
    pcall(drive, 5)
    settled()
  end)

  it("run started tasks one non-blocking turn at a time", function()
    assert.is_false(avideo.step()) -- nothing started: nothing to do
    local order = {}
    local a = avideo.start(function(x)
      avideo.sleep(0.02)
      order[#order + 1] = "a"
      return x * 2
    end, 21)
    local b = avideo.start(function()
      order[#order + 1] = "b"
      return "b done"
    end)
    assert.is_false(a:done())
    assert.are.equal(0, avideo.backend_timeout()) -- they are ready to run
    local t0 = avideo.now()
    assert.is_true(avideo.step())
    if not os.getenv("AVIDEO_SLOW") then assert.is_true(avideo.now() - t0 < 0.015, "step blocked") end
    assert.is_true(b:done())
    local ms = avideo.backend_timeout() -- a sleeps: about 20 ms to wait
    -- (under valgrind the step itself may have used up the 20 ms)
    local least = os.getenv("AVIDEO_SLOW") and 0 or 1
    assert.is_true(ms >= least and ms <= 20, "timeout " .. ms)
    drive()
    assert.are.same({ "b", "a" }, order)
    assert.are.equal(42, a:result())
    assert.are.equal("b done", b:result())
    assert.are.equal(-1, avideo.backend_timeout()) -- nothing left to wait for
  end)

  it("give a pollable descriptor that becomes readable when work is due", function()
    local fd = avideo.backend_fd()
    assert.is_true(math.type(fd) == "integer" and fd >= 0)
    assert.are.equal(fd, avideo.backend_fd())
    local task = avideo.start(function() avideo.sleep(0.01); return "slept" end)
    local steps = 0
    local poll, wake = uv.new_poll(fd), uv.new_timer()
    local function pump()
      steps = steps + 1
      if not avideo.step() then
        poll:close(); wake:close()
        return
      end
      local ms = avideo.backend_timeout()
      wake:start(math.max(ms, 1), 0, pump)
    end
    poll:start("r", pump)
    pump()
    uv.run()
    assert.are.equal("slept", task:result())
    assert.is_true(steps < 20, steps .. " steps for one sleep")
  end)

  it("keep a started task's error in the task", function()
    local e0 = avideo.error("http", "boom")
    local task = avideo.start(function() avideo.sleep(0.001); error(e0) end)
    drive()
    assert.are.equal("failed", task.status)
    local ok, e = pcall(task.result, task)
    assert.is_false(ok)
    assert.are.equal(e0, e)
  end)

  it("let tasks spawn and wait for each other across steps", function()
    local task = avideo.start(function()
      local children = {}
      for i = 1, 5 do children[i] = avideo.spawn(function() avideo.sleep(0.001 * i); return i end) end
      local sum = 0
      for i = 1, 5 do sum = sum + children[i]:wait() end
      return sum, avideo.gather(function() return "x" end, function() avideo.sleep(0); return "y" end)
    end)
    drive()
    local sum, gathered = task:result()
    assert.are.equal(15, sum)
    assert.are.same({ "x", "y" }, gathered)
  end)

  it("let a task wait for what the host's own code gives between steps", function()
    -- avideo.run cancels tasks that all wait on something nothing can
    -- give; a host's code runs between steps and may give it (a timer, a
    -- command releasing a semaphore): the task must wait, not be cancelled
    local sem = avideo.semaphore(1)
    local task = avideo.start(function()
      sem:acquire()
      sem:acquire() -- released by the host below
      return "released"
    end)
    for _ = 1, 20 do
      assert.is_true(avideo.step())
      assert.are.equal(-1, avideo.backend_timeout()) -- nothing due: the host may sleep
    end
    assert.are.equal("pending", task.status)
    sem:release() -- the host's code, between two steps
    drive()
    assert.are.equal("released", task:result())
    -- one that never gets it waits until the host cancels it
    local stuck = avideo.start(function() sem:acquire() sem:acquire() end)
    for _ = 1, 5 do assert.is_true(avideo.step()) end
    stuck:cancel()
    drive()
    assert.are.equal("cancelled", stuck.status)
  end)

  it("report a started task's failure once it is collected unread, not one its owner reads", function()
    local text = stderr_of(function()
      -- read by its owner after the last step: not reported
      local read = avideo.start(function() avideo.sleep(0.001); error("read by the owner", 0) end)
      drive()
      assert.is_false(pcall(read.result, read))
      read = nil -- luacheck: ignore
      -- dropped, as a fire-and-forget start in Neovim: reported when collected
      avideo.start(function() avideo.sleep(0.001); error("nobody read this", 0) end)
      drive()
      collectgarbage()
      collectgarbage()
    end)
    assert.matches("nobody waited for it: nobody read this", text, 1, true)
    assert.is_nil(text:find("read by the owner", 1, true), text)
  end)

  it("refuse what would block or nest, with clear errors", function()
    local task = avideo.start(function() avideo.sleep(0.01) end)
    local ok, e = pcall(avideo.run, function() end)
    assert.is_false(ok)
    assert.matches("started with avideo.start", tostring(e))
    ok, e = pcall(avideo.sleep, 0.01) -- a blocking call outside any task
    assert.is_false(ok)
    assert.is_true(avideo.is_error(e, "invalid"))
    assert.matches("outside any task", tostring(e))
    ok, e = pcall(avideo.start, 42)
    assert.is_false(ok)
    assert.matches("bad argument 'fn'", tostring(e))
    local inner = avideo.start(function() return pcall(avideo.step) end)
    drive()
    local stepped, err = inner:result()
    assert.is_false(stepped)
    assert.matches("inside a task", tostring(err))
    assert.is_true(task:done())
    -- inside avideo.run, step refuses and start is spawn
    local okk, ee, got = avideo.run(function()
      local o, x = pcall(avideo.step)
      return o, tostring(x), avideo.start(function() return "spawned" end):wait()
    end)
    assert.is_false(okk)
    assert.matches("inside avideo.run", ee)
    assert.are.equal("spawned", got)
  end)

  it("leave avideo.run working as before once started tasks ended", function()
    avideo.start(function() avideo.sleep(0.001) end)
    drive()
    assert.are.equal(3, avideo.run(function() avideo.sleep(0.001); return 3 end))
  end)
end)

describe("avideo.use_loop with luv", function()
  after_each(function()
    avideo.use_loop(nil)
    pcall(drive, 5)
    settled()
  end)

  it("runs avideo's tasks on luv's loop, next to luv's timers", function()
    avideo.use_loop(uv)
    local ticks, ticks_while_sleeping, sleeping = 0, 0, false
    local timer = uv.new_timer()
    local task = avideo.start(function()
      sleeping = true
      for _ = 1, 5 do avideo.sleep(0.01) end
      sleeping = false
      return "done"
    end)
    timer:start(2, 2, function()
      ticks = ticks + 1
      if sleeping then ticks_while_sleeping = ticks_while_sleeping + 1 end
      if task:done() then timer:close() end
    end)
    local t0 = avideo.now()
    uv.run()
    assert.are.equal("done", task:result())
    assert.is_true(avideo.now() - t0 < 2)
    assert.is_true(ticks_while_sleeping >= 5, ticks_while_sleeping .. " ticks while avideo slept")
  end)

  it("lets uv.run return once avideo's tasks ended and luv has nothing left", function()
    avideo.use_loop(uv)
    local task = avideo.start(function() avideo.sleep(0.005); return 1 end)
    uv.run()
    assert.is_true(task:done())
    assert.are.equal(1, task:result())
  end)

  it("refuses what is not a loop", function()
    local ok, e = pcall(avideo.use_loop, 42)
    assert.is_false(ok)
    assert.is_true(avideo.is_error(e, "invalid"))
    ok, e = pcall(avideo.use_loop, {})
    assert.is_false(ok)
    assert.matches("luv", tostring(e))
    -- a full userdata passes for a loop in Lua; the core's refusal is one avideo error
    ok, e = pcall(avideo.use_loop, io.stdout)
    assert.is_false(ok)
    assert.is_true(avideo.is_error(e, "invalid"), tostring(e))
    assert.matches("bad argument 'host' to avideo.use_loop", tostring(e), 1, true)
    assert.is_nil(tostring(e):find("attach", 1, true))
  end)
end)

describe("examples/embed/luv_interop.lua", function()
  local server
  setup(function() server = support.start { time_scale = 0.1 } end)
  teardown(function() assert(support.stop_clean(server)) end)

  for _, style in ipairs { "use_loop", "fd" } do
    it("gathers 40 videos while luv's timer and TCP ping-pong keep going (" .. style .. ")", function()
      local args = { LUA, EXAMPLE, server.url }
      if style == "fd" then args[#args + 1] = "--fd" end
      for i, a in ipairs(args) do args[i] = quote(a) end
      local pipe = assert(io.popen("timeout 60 " .. table.concat(args, " ") .. " 2>&1"))
      local out = pipe:read("*a")
      local ok = pipe:close()
      assert.is_true(ok, out)
      assert.matches("style: " .. style, out, 1, true)
      assert.matches("videos: 40 of 40", out, 1, true)
      local ticks = tonumber(out:match("luv timer: %d+ ticks, (%d+) while requests were in flight"))
      local pongs = tonumber(out:match("luv tcp: %d+ round trips, (%d+) while requests were in flight"))
      assert.is_true(ticks and ticks > 0, out)
      assert.is_true(pongs and pongs > 0, out)
    end)
  end
end)
