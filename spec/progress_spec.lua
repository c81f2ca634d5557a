-- Progress of a gather and an as_completed loop (issue 17): a line on
-- stderr redrawn in place when it is a terminal (seen through a
-- pseudo-terminal made by `script`, from bsdutils), only a plain final
-- line when it is a file, nothing when not asked; or a function given
-- the numbers. Requests against avideo-server at a small time scale.
local avideo = require "avideo"
local settled = require "support.settled"

local server, dir
lazy_setup(function()
  server = avideo.testing.server { time_scale = 0.05 }
  dir = assert(io.popen("mktemp -d"):read("l"))
end)
lazy_teardown(function()
  if server then server:close() end
  if dir then os.execute("rm -rf " .. dir) end
end)
after_each(settled)

-- A child program: 40 gets at limit_per_host 4 in a gather (or an
-- as_completed loop) with `progress = <opts>`.
local function program(kind, opts)
  local path = dir .. "/" .. kind .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write(([[
local avideo = require "avideo"
local url = %q
avideo.run(function()
  local s <close> = avideo.session { limit_per_host = 4, timeout = 10 }
  local ids = s:get(url .. "/videos?n=40"):json()
  local items = {}
  for i, id in ipairs(ids) do items[i] = function() return s:get(url .. "/videos/" .. id).status end end
  if %q == "gather" then
    avideo.gather(items, { progress = %s })
  else
    for _ in avideo.as_completed(items, { progress = %s }) do end
  end
end)
print("finished")
]]):format(server.url, kind, opts, opts))
  f:close()
  return path
end

local function run(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end

describe("the progress line", function()
  it("names at most three adaptive limits, then how many more", function()
    local line = require("avideo.progress").line
    local st = { what = "gather", done = 1, total = 9, failed = 0, in_flight = 2, queued = 3, rate = 1, eta = 8,
      finished = false, limits = {} }
    assert.equal("gather: 1/9 done, 2 in flight, 3 queued, 1.0/s, ETA 8.0 s", line(st))
    st.limits = { { key = "a", limit = 10 }, { key = "b", limit = 40 }, { key = "c", limit = 3 }, { key = "d", limit = 1 } }
    assert.equal("gather: 1/9 done, 2 in flight, 3 queued, limits 10 40 3 +1, 1.0/s, ETA 8.0 s", line(st))
  end)
end)

for _, kind in ipairs { "gather", "as_completed" } do
  describe(kind .. " progress", function()
    it("redraws one line on a terminal and ends it", function()
      local out = run(("script -qec %q /dev/null </dev/null"):format("timeout 60 lua5.4 " .. program(kind, "true")))
      assert.matches("finished", out)
      local redraws = select(2, out:gsub("\r" .. kind .. ": ", ""))
      assert.is_true(redraws >= 2, "redrawn in place: " .. redraws .. " times in " .. ("%q"):format(out))
      assert.matches(kind .. ": %d+/40 done, %d+ in flight, %d+ queued, [%d.]+/s, ETA ", out)
      assert.matches("\r" .. kind .. ": 40/40 done in [%d.]+ s %([%d.]+/s%)\27%[K\r?\n", out)
    end)

    it("writes only a plain final line when stderr is a file", function()
      local err = dir .. "/stderr"
      local out = run(("timeout 60 lua5.4 %s 2>%s"):format(program(kind, "true"), err))
      assert.matches("finished", out)
      local f = assert(io.open(err))
      local text = f:read("a")
      f:close()
      assert.matches("^" .. kind .. ": 40/40 done in [%d.]+ s %([%d.]+/s%)\n$", text)
    end)

    it("writes nothing when not asked", function()
      local err = dir .. "/quiet"
      run(("timeout 60 lua5.4 %s 2>%s"):format(program(kind, "nil"), err))
      local f = assert(io.open(err))
      assert.equal("", f:read("a"))
      f:close()
    end)

    it("hands a function the numbers instead", function()
      local states = {}
      avideo.run(function()
        local s <close> = avideo.session { limit_per_host = 4, timeout = 10 }
        local ids = s:get(server.url .. "/videos?n=40"):json()
        local items = {}
        for i, id in ipairs(ids) do
          items[i] = function()
            if i % 10 == 0 then error("item " .. i) end
            return s:get(server.url .. "/videos/" .. id).status
          end
        end
        local opts = { progress = function(st) states[#states + 1] = st end }
        if kind == "gather" then
          opts.return_exceptions = true
          avideo.gather(items, opts)
        else
          for _ in avideo.as_completed(items, opts) do end
        end
      end)
      assert.is_true(#states >= 2)
      local last = states[#states]
      assert.is_true(last.finished)
      assert.same({ 40, 40, 4 }, { last.done, last.total, last.failed })
      local saw_flight = false
      for _, st in ipairs(states) do
        assert.is_true(st.done <= st.total and st.running >= 0)
        assert.equal(st.running, st.in_flight + st.queued)
        assert.is_true(st.in_flight <= 4 + 1) -- the session's limit (and its list request)
        if st.in_flight > 0 then saw_flight = true end
        if not st.finished and st.done > 0 then assert.is_true(st.eta >= 0) end
      end
      assert.is_true(saw_flight)
    end)

    it("shows what an adaptive limit found while it runs", function()
      local states = {}
      avideo.run(function()
        local s <close> = avideo.session { limit_per_host = "auto", timeout = 10 }
        local ids = s:get(server.url .. "/videos?n=40"):json()
        local items = {}
        for i, id in ipairs(ids) do items[i] = function() return s:get(server.url .. "/videos/" .. id).status end end
        local opts = { progress = function(st) states[#states + 1] = st end }
        if kind == "gather" then
          avideo.gather(items, opts)
        else
          for _ in avideo.as_completed(items, opts) do end
        end
      end)
      local seen
      for _, st in ipairs(states) do
        for _, l in ipairs(st.limits) do
          assert.equal(server.url, l.key)
          assert.is_true(l.limit >= 1)
          seen = st
        end
      end
      assert.is_truthy(seen, "no state showed the limit")
      seen.what = "gather"
      assert.matches(", limit %d+, ", require("avideo.progress").line(seen))
      assert.same({}, states[#states].limits) -- nothing in flight at the end
    end)

    it("a progress function that raises fails the " .. kind .. ", not the whole run", function()
      local ok, err, other_done, calls
      avideo.run(function()
        local other = avideo.spawn(function()
          avideo.sleep(0.2)
          other_done = true
        end)
        -- the first item to end fails: its end is reported from the
        -- scheduler's own stack, where an error used to end the run
        local items = { function() error("first item", 0) end }
        for i = 2, 10 do items[i] = function() avideo.sleep(0.02) return i end end
        calls = 0
        local opts = { progress = function() calls = calls + 1; error("progress broke", 0) end }
        ok, err = pcall(function()
          if kind == "gather" then
            opts.return_exceptions = true
            return avideo.gather(items, opts)
          end
          for _ in avideo.as_completed(items, opts) do end
        end)
        other:wait()
      end)
      assert.is_false(ok)
      assert.are.equal("progress broke", err)
      assert.is_true(other_done)
      assert.are.equal(1, calls) -- never called again
    end)

    it("refuses anything but true or a function", function()
      local ok, err = pcall(avideo.run, function()
        if kind == "gather" then
          avideo.gather({ function() end }, { progress = 1 })
        else
          for _ in avideo.as_completed({ function() end }, { progress = "yes" }) do end
        end
      end)
      assert.is_false(ok)
      assert.is_true(avideo.is_error(err, "invalid"), tostring(err))
      assert.matches("progress must be true or a function", err.message)
    end)
  end)
end
