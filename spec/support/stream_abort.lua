--- A loop closed while a streamed response is still being received (a host
-- shutting down): run in a process of its own by stream_spec, since it
-- closes the state's loop. Prints what the reader sees, one line each.
local avideo = require "avideo"
local sched = require "avideo.scheduler"

local r = avideo.get(arg[1], { stream = true })
print("first " .. #r:read(100))
print("transfers " .. avideo.stats().transfers)
sched.loop:close()
-- what had come is still read; then the transfer's end
local n = 0
while true do
  local ok, piece = pcall(r.read, r)
  if not ok then
    print("error " .. tostring(piece.kind))
    break
  end
  if piece == nil then
    print("end")
    break
  end
  n = n + #piece
end
print("buffered " .. n)
r:close()
r = nil
collectgarbage()
collectgarbage()
print("done")
