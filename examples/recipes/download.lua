-- Download to a file: with stream = true the body goes to disk as it
-- comes, so memory stays at a few MiB whatever the size. save() writes
-- PATH.part and renames it to PATH only once the body is complete.
--
--   lua5.4 examples/recipes/download.lua FILE_URL [PATH]
local avideo = require "avideo"

local URL = arg[1] or os.getenv("FILE_URL") or "http://127.0.0.1:8080/bytes/102400"
local path = arg[2] or "download.bin"

local r = avideo.get(URL, { stream = true }):raise_for_status()
local announced = tonumber(r.headers["content-length"])
local written = r:save(path)
print(("saved %d bytes to %s (announced %s)"):format(written, path, tostring(announced)))
