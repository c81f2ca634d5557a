--- Streamed downloads in a process of their own, so that its peak RSS
-- (VmHWM) is avideo's alone; stream_spec runs it and reads what it prints.
--   stream_rss.lua save URL PATH      save URL to PATH: "bytes N peak KIB"
--   stream_rss.lua many URL N         N streamed downloads at once, each read
--                                     in chunks: "bytes N peak KIB"
--   stream_rss.lua slow URL SECONDS   read one 64 KiB piece every 100 ms:
--                                     "bytes N first KIB last KIB peak KIB"
local avideo = require "avideo"
local rss = require "support.rss"

local function peak()
  for line in io.lines("/proc/self/status") do
    local kib = line:match("^VmHWM:%s+(%d+)")
    if kib then return tonumber(kib) end
  end
end

local mode, url = arg[1], arg[2]
if mode == "save" then
  local bytes = avideo.get(url, { stream = true }):save(arg[3])
  print(("bytes %d peak %d"):format(bytes, peak()))
elseif mode == "many" then
  local n = tonumber(arg[3])
  local total = 0
  avideo.run(function()
    local s = avideo.session { limit = n }
    local fs = {}
    for i = 1, n do
      fs[i] = function()
        local r = s:get(url, { stream = true })
        for chunk in r:chunks() do total = total + #chunk end
      end
    end
    avideo.gather(fs)
    s:close()
  end)
  print(("bytes %d peak %d"):format(total, peak()))
elseif mode == "slow" then
  local seconds = tonumber(arg[3])
  local total, first, last = 0, nil, nil
  avideo.run(function()
    local r = avideo.session():get(url, { stream = true })
    local t0 = avideo.now()
    while avideo.now() - t0 < seconds do
      local chunk = r:read(65536)
      if not chunk then break end
      total = total + #chunk
      avideo.sleep(0.1)
      -- after a second the transfer has filled what it may and paused
      if not first and avideo.now() - t0 > 1 then first = rss() end
      last = rss()
    end
    r:close()
  end)
  print(("bytes %d first %d last %d peak %d"):format(total, first, last, peak()))
else
  error("usage: stream_rss.lua save|many|slow URL ...")
end
