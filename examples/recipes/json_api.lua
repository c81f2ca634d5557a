-- A JSON API with auth and pagination: one session carries the base URL,
-- the credentials and the JSON headers, so each call names only its path.
--
--   lua5.4 examples/recipes/json_api.lua HTTPBIN_URL AVIDEO_URL
--
-- httpbin checks the credentials; avideo-server holds the data to page
-- through: its list of ids, then each video, a page of them at a time.
local avideo = require "avideo"

local HTTPBIN = arg[1] or os.getenv("HTTPBIN_URL") or "http://127.0.0.1:8080"
local API = arg[2] or os.getenv("AVIDEO_URL") or "http://127.0.0.1:8000"

-- Basic auth for every request of the session (type = "digest" for Digest);
-- raise_for_status: a 401 or 404 is an error, not a response to check.
local basic <close> = avideo.session {
  base_url = HTTPBIN, auth = { "alice", "s3cret" }, raise_for_status = true,
}
local who = basic:get("/basic-auth/alice/s3cret"):json()
print("basic auth: " .. who.user .. " authenticated=" .. tostring(who.authenticated))

-- A bearer token is a header like any other.
local token <close> = avideo.session {
  base_url = HTTPBIN, raise_for_status = true,
  headers = { Authorization = "Bearer t0ken", Accept = "application/json" },
}
print("bearer token: " .. token:get("/bearer"):json().token)

-- Pagination: walk the list PER_PAGE ids at a time, fetching each page's
-- items together (one page in flight at a time: the server is not flooded
-- and the caller sees pages in order).
local PER_PAGE = 4
avideo.run(function()
  local api <close> = avideo.session { base_url = API, raise_for_status = true, limit_per_host = PER_PAGE }
  local ids = api:get("/videos", { params = { n = 10 } }):json()
  for first = 1, #ids, PER_PAGE do
    local gets = {}
    for i = first, math.min(first + PER_PAGE - 1, #ids) do
      gets[#gets + 1] = function() return api:get("/videos/" .. ids[i]):json() end
    end
    local page, names = avideo.gather(gets), {}
    for i, video in ipairs(page) do names[i] = video.id end
    print(("page %d: %s"):format((first - 1) // PER_PAGE + 1, table.concat(names, " ")))
  end
end)
