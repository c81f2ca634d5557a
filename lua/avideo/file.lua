--- avideo.file(path [, opts]): a file to send as a request body
-- (`data = avideo.file(path)`), read from disk as it goes out, never whole
-- into memory. opts: filename and content_type (the Content-Type it goes
-- out with; application/octet-stream when not given). The file is checked
-- when the request is made (a missing or unreadable one is an `invalid`
-- error before anything is sent) and opened when it runs; it goes out at
-- the length it had when checked.
local errors = require "avideo.errors"

local File = { __name = "avideo.File" }
File.__index = File

function File.__tostring(f)
  return ("avideo.file(%q)"):format(f.path)
end

local M = {}

function M.new(path, opts)
  if type(path) ~= "string" then errors.bad_argument("avideo.file", "path", "string", path) end
  local filename, content_type
  if opts ~= nil then
    if type(opts) ~= "table" then errors.bad_argument("avideo.file", "opts", "table", opts) end
    for k, v in pairs(opts) do
      if k ~= "filename" and k ~= "content_type" then
        errors.raise("invalid", ("unknown option '%s' to avideo.file (filename, content_type)"):format(tostring(k)))
      end
      if type(v) ~= "string" then errors.bad_argument("avideo.file", k, "string", v) end
    end
    filename, content_type = opts.filename, opts.content_type
  end
  return setmetatable({ path = path, filename = filename, content_type = content_type }, File)
end

function M.is_file(v)
  return getmetatable(v) == File
end

return M
