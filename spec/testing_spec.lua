-- avideo.testing (issue 17): the installed emulator for a program's own
-- specs, started on a free port and stopped on close, <close> and
-- garbage collection; clear errors when it cannot start.
local avideo = require "avideo"
local settled = require "support.settled"

after_each(settled)

local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if not f then return false end
  local state = f:read("a"):match("^%d+ %b() (%a)")
  f:close()
  return state ~= "Z" and state ~= "X"
end

describe("avideo.testing.server", function()
  it("works under Lua 5.1 and LuaJIT as well", function()
    -- os.execute gives a status number there, and read() wants "*l"
    local src = os.getenv("AVIDEO_SOURCE_DIR") or "."
    local bin = os.getenv("AVIDEO_BINARY_DIR") or (src .. "/build")
    local server = os.getenv("AVIDEO_SERVER") or (bin .. "/src/server/avideo-server")
    local script = "local avideo = require 'avideo' local s = avideo.testing.server { time_scale = 0, videos = 3 } "
      .. "local n = #avideo.get(s.url .. '/videos?n=10', { timeout = 10 }):json() "
      .. "print('videos', n, 'closed', s:close())"
    for _, v in ipairs { { "lua5.1", "lua-5.1" }, { "luajit", "lua-luajit" } } do
      local cmd = ("LUA_PATH=%q LUA_CPATH=%q AVIDEO_SERVER=%q timeout 60 %s -e %q 2>&1"):format(
        src .. "/lua/?.lua;" .. src .. "/lua/?/init.lua;;", bin .. "/" .. v[2] .. "/?.so;;", server, v[1], script)
      local p = assert(io.popen(cmd))
      local out = p:read("a")
      p:close()
      assert.matches("videos\t3\tclosed\ttrue", out, 1, true)
    end
  end)

  it("starts the emulator on a free port and stops it cleanly", function()
    local server = avideo.testing.server { time_scale = 0, videos = 20 }
    assert.matches("^http://127%.0%.0%.1:%d+$", server.url)
    local ids = avideo.get(server.url .. "/videos?n=100", { timeout = 10 }):json()
    assert.equal(20, #ids) -- videos = 20 reached it
    local st = server:stats()
    assert.equal(2, st.requests) -- the list, and this /stats itself
    assert.is_true(alive(server.pid))
    assert.is_true(server:close())
    assert.is_false(alive(server.pid))
    assert.is_true(server:close()) -- twice is fine
  end)

  it("is stopped by <close> and by garbage collection", function()
    local pid
    do
      local server <close> = avideo.testing.server { time_scale = 0 }
      pid = server.pid
      assert.is_true(alive(pid))
    end
    assert.is_false(alive(pid))
    pid = avideo.testing.server({ time_scale = 0 }).pid
    collectgarbage()
    collectgarbage()
    -- SIGKILL is asynchronous: give the kernel a moment
    for _ = 1, 100 do
      if not alive(pid) then break end
      os.execute("sleep 0.01")
    end
    assert.is_false(alive(pid))
  end)

  it("dies with the Lua process that started it", function()
    local p = assert(io.popen([[lua5.4 -e 'local s = require("avideo").testing.server{time_scale = 0}
      print(s.pid) io.stdout:flush() os.exit(true, false)']]))
    local pid = tonumber(p:read("l"))
    p:close()
    for _ = 1, 200 do
      if not alive(pid) then break end
      os.execute("sleep 0.01")
    end
    assert.is_false(alive(pid))
  end)

  it("says clearly why it cannot start", function()
    -- each an `invalid` error object, as every error of avideo's
    local function refused(opts, pattern)
      local ok, err = pcall(avideo.testing.server, opts)
      assert.is_false(ok)
      assert.is_true(avideo.is_error(err, "invalid"), tostring(err))
      assert.matches(pattern, err.message)
      return err
    end
    refused({ binary = "/nonexistent/avideo-server" }, "is not an executable file")
    refused({ speed = 1 }, "unknown option 'speed'")
    refused({ time_scale = "fast" }, "time_scale must be a number")
    refused({ args = { "--no-such-flag" } }, "did not start: .*no%-such%-flag")
    -- a binary that exits without a word: said so, not "nil"
    local e = refused({ binary = "/bin/false" }, "did not start")
    assert.matches("exited without a word", e.message)
  end)
end)
