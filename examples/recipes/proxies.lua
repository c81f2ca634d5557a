-- Proxies: a session's `proxy` carries its requests; without the option
-- the environment's http_proxy, https_proxy, all_proxy and no_proxy apply,
-- as for curl (read once, when the session is made); proxy = false
-- ignores them.
--
--   lua5.4 examples/recipes/proxies.lua PROXY_URL HTTPBIN_URL
-- (the spec's proxy is nginx, which marks what it carried with a response
-- header X-Proxied-By and passes Proxy-Authorization on as X-Proxy-Auth)
local avideo = require "avideo"

local PROXY = arg[1] or os.getenv("PROXY_URL") or "http://127.0.0.1:3128"
local URL = arg[2] or os.getenv("HTTPBIN_URL") or "http://127.0.0.1:8080"

-- proxy_auth = { user, password }: Basic credentials for the proxy
local s <close> = avideo.session { proxy = PROXY, proxy_auth = { "proxyuser", "pw" } }
local r = s:get(URL .. "/headers"):raise_for_status()
print("via proxy: X-Proxied-By " .. tostring(r.headers["x-proxied-by"]))
print("proxy saw credentials: " .. tostring(r:json().headers["X-Proxy-Auth"]))

-- a request's own proxy = false goes direct
r = s:get(URL .. "/headers", { proxy = false }):raise_for_status()
print("direct: X-Proxied-By " .. tostring(r.headers["x-proxied-by"]))
