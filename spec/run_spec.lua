-- avideo.run, spawn, gather, sleep, now, timeout, semaphore: the scheduler
-- without HTTP, plus every misuse that must give a clear error.
local avideo = require "avideo"

local settled = require "support.settled"

describe("avideo.run", function()
  after_each(settled)

  it("returns the main task's results", function()
    local a, b, c = avideo.run(function(x, y) return x + y, nil, "z" end, 1, 2)
    assert.are.equal(3, a)
    assert.is_nil(b)
    assert.are.equal("z", c)
  end)

  it("re-raises the same error object, with the task's traceback", function()
    local e0 = avideo.error("http", "boom")
    local ok, e = pcall(avideo.run, function() avideo.sleep(0.001); error(e0) end)
    assert.is_false(ok)
    assert.are.equal(e0, e)
    assert.is_true(avideo.is_error(e, "http"))
    assert.matches("run_spec", e.traceback)
  end)

  it("re-raises string errors unchanged", function()
    local ok, e = pcall(avideo.run, function() error("plain", 0) end)
    assert.is_false(ok)
    assert.are.equal("plain", e)
  end)

  it("waits for every task the main task spawned", function()
    local done = {}
    avideo.run(function()
      for i = 1, 3 do avideo.spawn(function() avideo.sleep(0.01 * i); done[#done + 1] = i end) end
    end)
    assert.are.same({ 1, 2, 3 }, done)
  end)

  it("cancels the other tasks when the main task fails", function()
    local seen
    local t0 = avideo.now()
    local ok, e = pcall(avideo.run, function()
      avideo.spawn(function()
        local ok2, err = pcall(avideo.sleep, 5)
        seen = not ok2 and err.kind
      end)
      avideo.sleep(0.01)
      error("main failed", 0)
    end)
    assert.is_false(ok)
    assert.are.equal("main failed", e)
    assert.are.equal("cancelled", seen)
    assert.is_true(avideo.now() - t0 < 1)
  end)

  it("refuses nesting and bad arguments with clear errors", function()
    local ok, e = pcall(avideo.run, function() return avideo.run(function() end) end)
    assert.is_false(ok)
    assert.matches("inside a running avideo.run", tostring(e))
    ok, e = pcall(avideo.run, 42)
    assert.is_false(ok)
    assert.is_true(avideo.is_error(e, "invalid"))
    assert.matches("bad argument 'fn'", tostring(e))
  end)

  it("turns a bare coroutine.yield in a task into an error, not a lost task", function()
    local ok, e = pcall(avideo.run, function() coroutine.yield("x") end)
    assert.is_false(ok)
    assert.is_true(avideo.is_error(e, "invalid"))
    assert.matches("coroutine.yield called directly", e.message)
  end)

  it("refuses to wait inside a C function such as table.sort's comparator", function()
    local ok, e = pcall(avideo.run, function()
      table.sort({ 3, 2, 1 }, function(a, b) avideo.sleep(0.001); return a < b end)
    end)
    assert.is_false(ok)
    assert.matches("cannot wait here", tostring(e))
  end)

  it("refuses to wait from a plain coroutine inside a task", function()
    local ok, e = pcall(avideo.run, function()
      coroutine.wrap(function() avideo.sleep(0.001) end)()
    end)
    assert.is_false(ok)
    assert.matches("not an avideo task", tostring(e))
  end)

  it("refuses spawn outside run", function()
    local ok, e = pcall(avideo.spawn, function() end)
    assert.is_false(ok)
    assert.matches("outside avideo.run", tostring(e))
  end)

  it("breaks a deadlock with an error instead of hanging", function()
    local ok, e = pcall(avideo.run, function()
      local sem = avideo.semaphore(1)
      sem:acquire()
      sem:acquire()
    end)
    assert.is_false(ok)
    assert.is_true(avideo.is_error(e, "cancelled"))
    assert.matches("deadlock", e.message)
  end)

  it("runs 10,000 sleeping tasks at once", function()
    local t0 = avideo.now()
    local n = avideo.run(function()
      local fs = {}
      for i = 1, 10000 do fs[i] = function() avideo.sleep(0.05); return 1 end end
      local r = avideo.gather(fs)
      local sum = 0
      for i = 1, #r do sum = sum + r[i] end
      return sum
    end)
    assert.are.equal(10000, n)
    if os.getenv("AVIDEO_SLOW") ~= "1" then assert.is_true(avideo.now() - t0 < 2) end
  end)
end)

describe("many tasks", function()
  after_each(settled)

  it("spawns and gathers 100,000 tasks; Lua memory returns to its baseline", function()
    collectgarbage("collect")
    collectgarbage("collect")
    local before = collectgarbage("count")
    local sum = avideo.run(function()
      local tasks = {}
      for i = 1, 100000 do
        tasks[i] = avideo.spawn(function(x) avideo.sleep(0); return x end, i)
      end
      local r = avideo.gather(tasks)
      local total = 0
      for i = 1, #r do total = total + r[i] end
      return total
    end)
    assert.are.equal(100000 * 100001 / 2, sum)
    collectgarbage("collect")
    collectgarbage("collect")
    local after = collectgarbage("count")
    -- within 64 KiB of where it started: nothing per task is kept
    assert.is_true(after - before < 64, ("Lua heap grew by %.0f KiB"):format(after - before))
  end)
end)

describe("avideo.sleep and avideo.now", function()
  after_each(settled)

  it("sleeps about the time asked, in and out of tasks", function()
    local t0 = avideo.now()
    avideo.sleep(0.05)
    local t1 = avideo.now()
    assert.is_true(t1 - t0 >= 0.049 and t1 - t0 < 0.2)
    avideo.run(function() avideo.sleep(0.05) end)
    assert.is_true(avideo.now() - t1 >= 0.049)
  end)

  it("sleep(0) lets other ready tasks run", function()
    local order = {}
    avideo.run(function()
      avideo.spawn(function() order[#order + 1] = "b" end)
      avideo.sleep(0)
      order[#order + 1] = "a"
    end)
    assert.are.same({ "b", "a" }, order)
  end)

  it("refuses negative, NaN and non-number delays", function()
    for _, bad in ipairs { -1, 0 / 0, "1", {} } do
      local ok, e = pcall(avideo.sleep, bad)
      assert.is_false(ok)
      assert.is_true(avideo.is_error(e, "invalid"))
    end
  end)
end)

describe("avideo.gather", function()
  after_each(settled)

  it("returns results in order whatever the finishing order", function()
    local r = avideo.run(function()
      return avideo.gather {
        function() avideo.sleep(0.03); return "slow" end,
        function() return "instant" end,
        function() avideo.sleep(0.01); return "fast" end,
      }
    end)
    assert.are.same({ "slow", "instant", "fast" }, r)
  end)

  it("takes functions as varargs, and tasks", function()
    local r = avideo.run(function()
      local t = avideo.spawn(function() avideo.sleep(0.01); return "task" end)
      return avideo.gather(function() return 1 end, t, function() return 3 end)
    end)
    assert.are.same({ 1, "task", 3 }, r)
  end)

  it("raises the first error and cancels the others", function()
    local cancelled, finished = 0, 0
    local ok, e = pcall(avideo.run, function()
      local fs = {}
      for i = 1, 5 do
        fs[i] = function()
          local ok2, err = pcall(avideo.sleep, 1)
          if not ok2 then
            if avideo.is_error(err, "cancelled") then cancelled = cancelled + 1 end
            error(err, 0)
          end
          finished = finished + 1
        end
      end
      fs[6] = function() avideo.sleep(0.01); error(avideo.error("http", "first failure")) end
      return avideo.gather(fs)
    end)
    assert.is_false(ok)
    assert.are.equal("first failure", e.message)
    assert.are.equal(5, cancelled)
    assert.are.equal(0, finished)
  end)

  it("puts errors in the list with return_exceptions", function()
    local r = avideo.run(function()
      return avideo.gather({
        function() return 1 end,
        function() error(avideo.error("timeout", "x")) end,
        function() return 3 end,
      }, { return_exceptions = true })
    end)
    assert.are.equal(1, r[1])
    assert.is_true(avideo.is_error(r[2], "timeout"))
    assert.are.equal(3, r[3])
  end)

  it("one worker records each failure at its own index and goes on", function()
    local ran = {}
    local r = avideo.run(function()
      local fs = {}
      for i = 1, 6 do
        fs[i] = function()
          ran[#ran + 1] = i
          avideo.sleep(0)
          if i % 2 == 0 then error(avideo.error("protocol", "item " .. i)) end
          return i
        end
      end
      return avideo.gather(fs, { limit = 1, return_exceptions = true })
    end)
    assert.are.same({ 1, 2, 3, 4, 5, 6 }, ran)
    for i = 1, 6 do
      if i % 2 == 0 then
        assert.is_true(avideo.is_error(r[i], "protocol"))
        assert.are.equal("item " .. i, r[i].message)
        assert.is_string(r[i].traceback)
      else
        assert.are.equal(i, r[i])
      end
    end
  end)

  it("one worker stops at the first failure without return_exceptions", function()
    local ran = {}
    local ok, e = pcall(avideo.run, function()
      local fs = {}
      for i = 1, 5 do
        fs[i] = function()
          ran[#ran + 1] = i
          if i == 2 then error(avideo.error("protocol", "second")) end
          return i
        end
      end
      return avideo.gather(fs, { limit = 1 })
    end)
    assert.is_false(ok)
    assert.are.equal("second", e.message)
    assert.are.same({ 1, 2 }, ran)
  end)

  it("runs at most `limit` at a time", function()
    local active, max_active = 0, 0
    local r = avideo.run(function()
      local fs = {}
      for i = 1, 20 do
        fs[i] = function()
          active = active + 1
          max_active = math.max(max_active, active)
          avideo.sleep(0.005)
          active = active - 1
          return i
        end
      end
      return avideo.gather(fs, { limit = 3 })
    end)
    assert.are.equal(3, max_active)
    assert.are.equal(20, #r)
    assert.are.equal(20, r[20])
  end)

  it("returns an empty list for no items and blocks outside run", function()
    assert.are.same({}, avideo.run(function() return avideo.gather({}) end))
    assert.are.same({ 1, 2 }, avideo.gather(function() return 1 end, function() return 2 end))
  end)

  it("refuses bad items and options", function()
    for _, args in ipairs { { { 1 } }, { { function() end }, { limit = -1 } }, { { function() end }, "x" } } do
      local ok, e = pcall(avideo.gather, table.unpack(args))
      assert.is_false(ok)
      assert.is_true(avideo.is_error(e, "invalid"))
    end
  end)

  it("cancelling a gather cancels its children", function()
    local seen = 0
    avideo.run(function()
      local g = avideo.spawn(avideo.gather, {
        function() local ok, e = pcall(avideo.sleep, 5); if not ok then seen = seen + 1; error(e, 0) end end,
        function() local ok, e = pcall(avideo.sleep, 5); if not ok then seen = seen + 1; error(e, 0) end end,
      })
      avideo.sleep(0.01)
      g:cancel()
      local ok, e = pcall(g.wait, g)
      assert.is_false(ok)
      assert.is_true(avideo.is_error(e, "cancelled"))
    end)
    assert.are.equal(2, seen)
  end)
end)

describe("tasks", function()
  after_each(settled)

  it("wait() returns results; done() tells; cancel() stops a sleeper at once", function()
    avideo.run(function()
      local t = avideo.spawn(function(x) avideo.sleep(0.01); return x * 2 end, 21)
      assert.is_false(t:done())
      assert.are.equal(42, t:wait())
      assert.is_true(t:done())
      local s = avideo.spawn(avideo.sleep, 10)
      avideo.sleep(0)
      local t0 = avideo.now()
      assert.is_true(s:cancel())
      local ok, e = pcall(s.wait, s)
      assert.is_false(ok)
      assert.is_true(avideo.is_error(e, "cancelled"))
      assert.is_true(avideo.now() - t0 < 0.05)
      assert.is_false(s:cancel())
    end)
  end)

  it("reports a failed task nobody waited for on stderr", function()
    local path = os.tmpname()
    local saved = io.stderr
    local f = assert(io.open(path, "w"))
    io.stderr = f
    avideo.run(function() avideo.spawn(function() error("lost failure") end) end)
    io.stderr = saved
    f:close()
    local text = assert(io.open(path)):read("a")
    os.remove(path)
    assert.matches("lost failure", text)
    assert.matches("traceback", text)
  end)
end)

describe("avideo.timeout and avideo.semaphore", function()
  after_each(settled)

  it("timeout raises a timeout error naming its phase, within 50 ms", function()
    local t0 = avideo.now()
    local ok, e = pcall(avideo.timeout, 0.1, avideo.sleep, 5)
    local late = avideo.now() - t0 - 0.1
    assert.is_false(ok)
    assert.is_true(avideo.is_error(e, "timeout"))
    assert.are.equal("total", e.phase)
    assert.is_true(late >= 0 and late < 0.05, "late by " .. late)
    assert.are.equal(7, avideo.timeout(1, function() return 7 end))
  end)

  it("semaphore caps concurrency exactly and serves FIFO", function()
    local sem = avideo.semaphore(2)
    local order, active, max_active = {}, 0, 0
    avideo.run(function()
      local fs = {}
      for i = 1, 8 do
        fs[i] = function()
          sem:with(function()
            order[#order + 1] = i
            active = active + 1
            max_active = math.max(max_active, active)
            avideo.sleep(0.005)
            active = active - 1
          end)
        end
      end
      avideo.gather(fs)
    end)
    assert.are.equal(2, max_active)
    assert.are.same({ 1, 2, 3, 4, 5, 6, 7, 8 }, order)
    assert.are.same({ 2, 0 }, { sem:available() })
  end)

  it("semaphore releases on error and on cancellation", function()
    local sem = avideo.semaphore(1)
    avideo.run(function()
      pcall(sem.with, sem, function() error("x") end)
      local holder = avideo.spawn(sem.with, sem, avideo.sleep, 5)
      local waiter = avideo.spawn(sem.with, sem, function() return "got it" end)
      avideo.sleep(0.01)
      holder:cancel()
      assert.are.equal("got it", waiter:wait())
    end)
    assert.are.same({ 1, 0 }, { sem:available() })
  end)

  it("refuses bad sizes and over-release", function()
    assert.is_false(pcall(avideo.semaphore, 0))
    assert.is_false(pcall(avideo.semaphore, 1.5))
    local sem = avideo.semaphore(1)
    local ok, e = pcall(sem.release, sem)
    assert.is_false(ok)
    assert.matches("released more times", tostring(e))
  end)
end)
