-- Run inside Neovim (LuaJIT) by spec/nvim/neovim_spec.lua:
--   nvim --headless -u NONE -i NONE -c "luafile spec/nvim/gather.lua"
-- with AVIDEO_SOURCE_DIR, AVIDEO_LUAJIT_CPATH (the LuaJIT build of
-- avideo.core), AVIDEO_URL (avideo-server) and AVIDEO_OUT (the result file).
--
-- avideo runs on Neovim's own loop (use_loop(vim.loop)): an avideo.start
-- task gathers 100 videos, ten per host at a time, while a vim.loop timer
-- ticks every 10 ms. The result file says how many videos came back and
-- the longest gap between ticks while the gather ran; nvim then quits (0).
local src = assert(os.getenv("AVIDEO_SOURCE_DIR"), "AVIDEO_SOURCE_DIR not set")
package.path = src .. "/lua/?.lua;" .. src .. "/lua/?/init.lua;" .. package.path
package.cpath = assert(os.getenv("AVIDEO_LUAJIT_CPATH"), "AVIDEO_LUAJIT_CPATH not set") .. "/?.so;" .. package.cpath
local url = assert(os.getenv("AVIDEO_URL"), "AVIDEO_URL not set")
local out = assert(os.getenv("AVIDEO_OUT"), "AVIDEO_OUT not set")
local N = 100

local uv = vim.loop
local avideo = require "avideo"
avideo.use_loop(uv)

local function finish(lines, code)
  local f = assert(io.open(out, "w"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
  -- quitting is an editor command: not from a luv callback (a fast event)
  vim.schedule(function() vim.cmd(code == 0 and "qall!" or "cquit " .. code) end)
end

-- the editor's loop keeps running: a timer ticks, its gaps are measured
local gathering, ticks, max_gap, last = false, 0, 0, nil
local timer = uv.new_timer()
timer:start(10, 10, function()
  local now = uv.hrtime()
  if gathering then
    ticks = ticks + 1
    if last then max_gap = math.max(max_gap, (now - last) / 1e6) end
  end
  last = now
end)

local task = avideo.start(function()
  local session = avideo.session { limit_per_host = 10 }
  local ids = session:get(url .. "/videos", { params = { n = N } }):raise_for_status():json()
  local fetch = {}
  for i, id in ipairs(ids) do
    fetch[i] = function() return session:get(url .. "/videos/" .. id):raise_for_status():json().id end
  end
  gathering = true
  local t0 = uv.hrtime()
  local got = avideo.gather(fetch)
  local seconds = (uv.hrtime() - t0) / 1e9
  gathering = false
  session:close()
  local same = 0
  for i = 1, #ids do if got[i] == ids[i] then same = same + 1 end end
  return same, seconds
end)

-- the task's end, seen from the editor's loop (a check handle runs once per turn)
local watch = uv.new_check()
watch:start(function()
  if not task:done() then return end
  watch:stop()
  watch:close()
  timer:stop()
  timer:close()
  local ok, same, seconds = pcall(task.result, task)
  if not ok then return finish({ "error: " .. tostring(same) }, 1) end
  finish({
    ("videos: %d of %d"):format(same, N),
    ("gather: %.3f s"):format(seconds),
    ("ticks: %d, max gap %.1f ms"):format(ticks, max_gap),
  }, 0)
end)
