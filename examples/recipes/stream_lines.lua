-- Stream a body and handle it line by line as it arrives (JSON lines
-- here: httpbin's /stream/N sends N of them), without holding it whole.
--
--   lua5.4 examples/recipes/stream_lines.lua HTTPBIN_URL
local avideo = require "avideo"

local URL = arg[1] or os.getenv("HTTPBIN_URL") or "http://127.0.0.1:8080"

avideo.run(function()
  local s <close> = avideo.session()
  local r <close> = s:get(URL .. "/stream/5", { stream = true })
  r:raise_for_status()
  local rest = ""
  for chunk in r:chunks() do
    rest = rest .. chunk
    -- every complete line; the unfinished tail waits for the next chunk
    for line in rest:gmatch("([^\n]*)\n") do
      print("line " .. avideo.json.decode(line).id)
    end
    rest = rest:match("[^\n]*$")
  end
end)
