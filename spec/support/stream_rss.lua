--- Streamed downloads in a process of their own, so that its peak memory
-- is avideo's alone; stream_spec runs it and reads what it prints.
--   stream_rss.lua save URL PATH      save URL to PATH: "bytes N peak KIB"
--   stream_rss.lua many URL N         N streamed downloads at once, each read
--                                     in chunks: "bytes N peak KIB"
--   stream_rss.lua slow URL SECONDS   read one 64 KiB piece every 100 ms:
--                                     "bytes N first KIB last KIB peak KIB"
--   stream_rss.lua upload URL PATH    PUT the file at PATH (avideo.file):
--                                     "status N peak KIB"
-- Memory is RSS (peak: VmHWM). In ASan builds, where RSS measures the
-- sanitizer's quarantine, it is the live heap instead, sampled every 10 ms
-- (peak: the largest sample), as the soaks do.
local avideo = require "avideo"
local rss = require "support.rss"
local allocated_bytes = require("avideo.core").allocated_bytes

local heap_peak = 0

local function now_kib()
  if allocated_bytes then return allocated_bytes() // 1024 end
  return rss()
end

local function peak()
  if allocated_bytes then return heap_peak end
  for line in io.lines("/proc/self/status") do
    local kib = line:match("^VmHWM:%s+(%d+)")
    if kib then return tonumber(kib) end
  end
end

-- Runs fn in avideo.run beside a task that samples the live heap (ASan).
local function run(fn)
  avideo.run(function()
    local sampler = allocated_bytes and avideo.spawn(function()
      while true do
        local kib = now_kib()
        if kib > heap_peak then heap_peak = kib end
        avideo.sleep(0.01)
      end
    end)
    fn()
    if sampler then sampler:cancel() end
  end)
end

local mode, url = arg[1], arg[2]
if mode == "save" then
  local bytes
  run(function() bytes = avideo.get(url, { stream = true }):save(arg[3]) end)
  print(("bytes %d peak %d"):format(bytes, peak()))
elseif mode == "many" then
  local n = tonumber(arg[3])
  local total = 0
  run(function()
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
  run(function()
    local r = avideo.session():get(url, { stream = true })
    local t0 = avideo.now()
    while avideo.now() - t0 < seconds do
      local chunk = r:read(65536)
      if not chunk then break end
      total = total + #chunk
      avideo.sleep(0.1)
      -- after a second the transfer has filled what it may and paused
      if not first and avideo.now() - t0 > 1 then first = now_kib() end
      last = now_kib()
    end
    r:close()
  end)
  print(("bytes %d first %d last %d peak %d"):format(total, first, last, peak()))
elseif mode == "upload" then
  local status
  run(function() status = avideo.put(url, { data = avideo.file(arg[3]) }).status end)
  print(("status %d peak %d"):format(status, peak()))
else
  error("usage: stream_rss.lua save|many|slow|upload URL ...")
end
