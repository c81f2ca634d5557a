-- Post an HTML form: `data` as a table is sent as
-- application/x-www-form-urlencoded, encoded exactly as `params` is
-- (a list repeats its name, booleans and numbers become text, names sorted).
--
--   lua5.4 examples/recipes/form_post.lua HTTPBIN_URL
local avideo = require "avideo"

local URL = arg[1] or os.getenv("HTTPBIN_URL") or "http://127.0.0.1:8080"

local r = avideo.post(URL .. "/post", {
  params = { draft = true },                                    -- ?draft=true
  data = { title = "talk", tags = { "lua", "async" }, minutes = 30 },
}):raise_for_status()

-- httpbin echoes what it received
local echo = r:json()
print("query: draft=" .. echo.args.draft)
print("content-type: " .. echo.headers["Content-Type"])
print("title: " .. echo.form.title .. ", minutes: " .. echo.form.minutes)
print("tags: " .. table.concat(echo.form.tags, ","))
