-- avideo client of the download section: one body streamed, through
-- response:chunks() (blocking, at the top of a script, or inside
-- avideo.run: "task") or response:save("/dev/null") (as `curl -o
-- /dev/null`: the body's cost, not the disk's).
--   lua5.4 avideo_download.lua URL chunks|task|save
-- Prints "RESULT requests=1 finished=1 errors=0 bytes=N".
local avideo = require "avideo"

local url, mode = arg[1], arg[2]
if not url or (mode ~= "chunks" and mode ~= "task" and mode ~= "save") then
  io.stderr:write("usage: avideo_download.lua URL chunks|task|save\n")
  os.exit(2)
end
local bytes = 0
if mode == "task" then
  avideo.run(function()
    local r = avideo.get(url, { stream = true }):raise_for_status()
    for chunk in r:chunks() do bytes = bytes + #chunk end
  end)
else
  local r = avideo.get(url, { stream = true }):raise_for_status()
  if mode == "save" then
    bytes = r:save("/dev/null")
  else
    for chunk in r:chunks() do bytes = bytes + #chunk end
  end
end
print(("RESULT requests=1 finished=1 errors=0 bytes=%d"):format(bytes))
