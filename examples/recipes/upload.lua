-- Upload files: a file as the whole body (read from disk as it is sent,
-- never whole in memory), or files and fields as multipart/form-data.
--
--   lua5.4 examples/recipes/upload.lua HTTPBIN_URL
local avideo = require "avideo"

local URL = arg[1] or os.getenv("HTTPBIN_URL") or "http://127.0.0.1:8080"

-- a small file to send (any size works the same)
local path = os.tmpname()
local f = assert(io.open(path, "wb"))
f:write(("0123456789"):rep(1000))
f:close()

-- PUT the file as the body, with its Content-Length and type
local put = avideo.put(URL .. "/put", {
  data = avideo.file(path, { content_type = "text/plain" }),
}):raise_for_status():json()
print("put: " .. #put.data .. " bytes as " .. put.headers["Content-Type"])

-- POST a multipart form: file parts (from disk, or a string as content)
-- and plain fields beside them
local post = avideo.post(URL .. "/post", {
  files = { video = avideo.file(path, { filename = "talk.txt" }), notes = "plain text" },
  data = { title = "talk" },
}):raise_for_status():json()
print("multipart: video " .. #post.files.video .. " bytes, notes '" .. post.files.notes
  .. "', title '" .. post.form.title .. "'")

os.remove(path)
