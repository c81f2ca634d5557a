-- Cookies and a login: a session keeps the cookies servers set (per
-- domain and path, as browsers do) and sends them back; a one-off
-- avideo.get keeps none.
--
--   lua5.4 examples/recipes/cookies_login.lua HTTPBIN_URL
local avideo = require "avideo"

local URL = arg[1] or os.getenv("HTTPBIN_URL") or "http://127.0.0.1:8080"

-- name=value pairs, sorted: a table's order is Lua's own
local function show(cookies)
  local list = {}
  for name, value in pairs(cookies) do list[#list + 1] = name .. "=" .. value end
  table.sort(list)
  return "{" .. table.concat(list, ", ") .. "}"
end

-- cookies = {...}: sent with every request of the session, to any host
local s <close> = avideo.session { base_url = URL, cookies = { lang = "en" } }

-- "log in": the server answers with Set-Cookie (httpbin sets what the
-- query names, then redirects to /cookies, which shows what it got)
local r = s:get("/cookies/set", { params = { sessionid = "abc123" } })
print("after login the server sees: " .. show(r:json().cookies))
print("login redirected: " .. r.history[1].status .. " -> " .. r.url:match("/cookies$"))

-- the jar, as a list of { name, value, domain, path, expires, secure, http_only }
for _, c in ipairs(s:cookies()) do
  print(("jar: %s=%s domain '%s'"):format(c.name, c.value, c.domain))
end

-- "log out": forget them all (the given ones too)
s:clear_cookies()
print("after clear_cookies: " .. show(s:get("/cookies"):json().cookies))
