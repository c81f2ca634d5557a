-- avideo inside Neovim, on Neovim's own loop: nvim (LuaJIT) runs
-- spec/nvim/gather.lua, which gathers 100 videos from avideo-server at
-- limit_per_host = 10 while a vim.loop timer ticks. Registered by
-- spec/lua_versions.cmake when the LuaJIT module is built and nvim exists.
local support = require "support.server"

local SRC = os.getenv("AVIDEO_SOURCE_DIR") or "."

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

describe("Neovim", function()
  local server
  -- a video takes 50 ms: ten rounds of ten, about half a second in all
  setup(function() server = support.start { time_scale = 0.25 } end)
  teardown(function() assert(support.stop_clean(server)) end)

  it("gathers 100 videos on vim.loop while the editor's timer keeps ticking", function()
    local out = os.tmpname()
    local cmd = table.concat({
      "AVIDEO_URL=" .. quote(server.url), "AVIDEO_OUT=" .. quote(out),
      -- under AVIDEO_SANITIZE the module is instrumented: nvim keeps the
      -- ASan runtime preload the specs have
      "timeout 60 nvim --headless -u NONE -i NONE",
      "-c", quote("luafile " .. SRC .. "/spec/nvim/gather.lua"), "2>&1 </dev/null",
    }, " ")
    local pipe = assert(io.popen(cmd))
    local log = pipe:read("*a")
    local ok, how, code = pipe:close()
    local f = io.open(out, "r")
    local result = f and f:read("*a") or ""
    if f then f:close() end
    os.remove(out)
    assert.is_true(ok == true and how == "exit" and code == 0, ("nvim ended by %s %s: %s%s"):format(how, code, log, result))
    assert.matches("videos: 100 of 100", result, 1, true)
    local ticks, gap = result:match("ticks: (%d+), max gap ([%d.]+) ms")
    assert.is_truthy(ticks, result)
    -- the editor's loop was never blocked: its 10 ms timer kept ticking
    assert.is_true(tonumber(ticks) >= 10, result)
    assert.is_true(tonumber(gap) <= 50, result)
  end)
end)
