--- Client settings: auth, proxies, cookies sent to every host, redirect
-- control. Checked here, once, with the messages users see; the core
-- takes the result as a plain table (fields below) and applies it to each
-- transfer. A session has one; a request that gives any of these options
-- gets a copy with its own on top.
--
-- The table the core reads: user, password, auth ("basic" | "digest"),
-- proxy_http, proxy_https, no_proxy, proxy_user, proxy_password, cookie
-- ("a=b; c=d"), follow, max_redirects. `seeds` (name -> value) is ours.
local errors = require "avideo.errors"

local raise = errors.raise
local getenv = os.getenv

local M = {}

-- The options this module reads, by the name users give them.
M.OPTIONS = { auth = true, proxy = true, proxy_auth = true, cookies = true,
  allow_redirects = true, max_redirects = true }

local PROXY_SCHEMES = { http = true, https = true, socks4 = true, socks4a = true, socks5 = true, socks5h = true }
local AUTH_TYPES = { basic = true, digest = true }
local MAX_REDIRECTS_CAP = 1000

local function invalid(fmt, ...) raise("invalid", fmt:format(...)) end

local show = errors.show

-- A string the core hands to libcurl as a C string: no NUL in it.
local function c_string(v, what)
  if type(v) ~= "string" then invalid("%s must be a string, got %s", what, type(v)) end
  if v:find("\0", 1, true) then invalid("%s must not contain a NUL byte", what) end
  return v
end

-- {user, password [, type = "basic" | "digest"]} -> user, password, type
local function credentials(v, opt, typed)
  if type(v) ~= "table" then invalid("%s must be { user, password }, got %s", opt, type(v)) end
  for k in pairs(v) do
    if not (k == 1 or k == 2 or (typed and k == "type")) then
      invalid("unknown field '%s' in %s (give { user, password%s })", tostring(k), opt,
        typed and ', type = "basic" | "digest"' or "")
    end
  end
  local user = c_string(v[1], opt .. "'s user (item 1)")
  local password = c_string(v[2], opt .. "'s password (item 2)")
  local kind = v.type or "basic"
  if not AUTH_TYPES[kind] then invalid('%s type must be "basic" or "digest", got %s', opt, show(v.type)) end
  -- Basic joins them with a colon: one in the user would move the split
  if kind == "basic" and user:find(":", 1, true) then invalid("%s's user must not contain ':' for Basic auth", opt) end
  -- Digest writes them into its header line as they are (Basic encodes
  -- them): a CR or LF would end that line and start a header of its own
  if kind == "digest" then
    if user:find("%c") then invalid("%s's user must not contain control characters for Digest auth", opt) end
    if password:find("%c") then invalid("%s's password must not contain control characters for Digest auth", opt) end
  end
  return user, password, kind
end

-- A proxy URL: a scheme libcurl speaks and a host. `what` names where it
-- came from (the option or an environment variable).
local function proxy_url(v, what)
  c_string(v, what)
  local scheme, rest = v:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then
    -- "host:port" alone is an HTTP proxy, as curl and requests read it
    if v:find("^[%w.%-%[]") then scheme, rest, v = "http", v, "http://" .. v end
  end
  if not scheme or not PROXY_SCHEMES[scheme:lower()] then
    invalid("%s must be an http://, https://, socks4://, socks4a://, socks5:// or socks5h:// URL, got %s", what, show(v))
  end
  if not rest:match("^[^/?#]*[%w%]]") then invalid("%s has no host: %s", what, show(v)) end
  return v
end

local function env(name)
  local v = getenv(name)
  if v ~= nil and v ~= "" then return v, name end
end

-- The proxy the environment gives a scheme, and the variable's name:
-- lower case first, as curl and requests read them; HTTP_PROXY is not
-- read when REQUEST_METHOD is set (a CGI program: a request's Proxy
-- header arrives as HTTP_PROXY, so it cannot be trusted, "httpoxy").
local function env_proxy(scheme)
  local v, name = env(scheme .. "_proxy")
  if not v and (scheme == "https" or not getenv("REQUEST_METHOD")) then v, name = env(scheme:upper() .. "_PROXY") end
  if not v then v, name = env("all_proxy") end
  if not v then v, name = env("ALL_PROXY") end
  if v then return proxy_url(v, "the environment's " .. name) end
end

-- name=value pairs as one Cookie line. Names are tokens and values cookie
-- octets (RFC 6265 4.1.1): anything else would break the line.
local function cookie_line(seeds)
  local names = {}
  for k in pairs(seeds) do names[#names + 1] = k end
  if #names == 0 then return nil end
  table.sort(names)
  for i, k in ipairs(names) do names[i] = k .. "=" .. seeds[k] end
  return table.concat(names, "; ")
end

-- Two Cookie lines' texts as one ("a=1; b=2"); either may be nil.
local function cookie_join(a, b)
  if a and b then return a .. "; " .. b end
  return a or b
end
M.cookie_join = cookie_join

--- Settings s's cookie texts from its seeds (`cookies`, sent to every
-- host) and its Cookie header's text (header_cookie: sent to the request's
-- origin only; the core gives another origin seed_cookie).
function M.set_cookie(s)
  s.seed_cookie = cookie_line(s.seeds or {})
  local header = s.header_cookie
  s.cookie = cookie_join(s.seed_cookie, header ~= "" and header or nil)
end

local function check_cookies(v, opt)
  if type(v) ~= "table" then invalid("%s must be a table { name = value }, got %s", opt, type(v)) end
  local out = {}
  for k, x in pairs(v) do
    if type(k) ~= "string" or not k:find("^[!#$%%&'*+%-.^_`|~%w]+$") then
      invalid("%s names must be tokens (letters, digits, !#$%%&'*+-.^_`|~), got %s", opt, show(k))
    end
    if type(x) == "number" then
      if x ~= x or x == math.huge or x == -math.huge then
        invalid("cookie '%s' must be a finite number, got %s", k, tostring(x))
      end
      x = tostring(x)
    end
    if type(x) ~= "string" then invalid("cookie '%s' must be a string or number, got %s", k, type(x)) end
    -- cookie-octet: printable ASCII but space, DQUOTE, comma, semicolon, backslash
    if x:find('[%c%s",;\\\128-\255]') then
      invalid("cookie '%s' has a character a Cookie header cannot carry: %s", k, show(x))
    end
    out[k] = x
  end
  return out
end

-- Puts the options in `opts` (checked) over the settings `into`.
local function apply(into, opts, fn, session)
  if opts.auth ~= nil then
    if opts.auth == false and not session then
      into.user, into.password, into.auth = nil, nil, nil
    else
      into.user, into.password, into.auth = credentials(opts.auth, "auth", true)
    end
  end
  if opts.proxy ~= nil then
    if opts.proxy == false then
      into.proxy_http, into.proxy_https, into.no_proxy = nil, nil, nil
    else
      local p = proxy_url(opts.proxy, "proxy")
      -- a session's proxy_auth is for its own proxy: another one named by
      -- a request must not see those credentials (curl's --proxy-user
      -- goes with -x; requests puts them in the proxy's URL)
      if not session and opts.proxy_auth == nil and (p ~= into.proxy_http or p ~= into.proxy_https) then
        into.proxy_user, into.proxy_password = nil, nil
      end
      into.proxy_http, into.proxy_https = p, p
    end
  end
  if opts.proxy_auth ~= nil then
    if opts.proxy_auth == false then
      into.proxy_user, into.proxy_password = nil, nil
    else
      into.proxy_user, into.proxy_password = credentials(opts.proxy_auth, "proxy_auth", false)
    end
  end
  if opts.cookies ~= nil then
    local seeds = {}
    for k, x in pairs(into.seeds or {}) do seeds[k] = x end
    for k, x in pairs(check_cookies(opts.cookies, "cookies")) do seeds[k] = x end
    into.seeds = seeds
    M.set_cookie(into)
  end
  if opts.allow_redirects ~= nil then
    if type(opts.allow_redirects) ~= "boolean" then
      invalid("allow_redirects must be a boolean, got %s", show(opts.allow_redirects))
    end
    into.follow = opts.allow_redirects
  end
  if opts.max_redirects ~= nil then
    local n = opts.max_redirects
    if type(n) ~= "number" or n < 0 or n > MAX_REDIRECTS_CAP or n ~= math.floor(n) then
      invalid("max_redirects must be a whole number from 0 to %d, got %s", MAX_REDIRECTS_CAP, show(n))
    end
    into.max_redirects = math.floor(n) -- an integer for the core (5.3+: 10.0 is a float)
  end
  return into
end

--- The settings of a session from its options. Proxies not given come
-- from the environment (read now, once: as httpx's trust_env); proxy =
-- false ignores it.
function M.session(opts, fn)
  local s = { follow = true, max_redirects = 10, seeds = {} }
  if opts.proxy == nil then
    s.proxy_http, s.proxy_https = env_proxy("http"), env_proxy("https")
  end
  -- no_proxy holds whatever the proxy came from: curl reads it for -x too
  s.no_proxy = env("no_proxy") or env("NO_PROXY")
  if s.no_proxy then c_string(s.no_proxy, "the environment's no_proxy") end
  if opts.auth == false then invalid("auth must be { user, password }, got false (in %s)", fn) end
  return apply(s, opts, fn, true)
end

--- A session's settings with the text of its Cookie header: sent with the
-- cookies of `cookies` and of the jar, in libcurl's one Cookie line.
function M.with_header_cookie(s, header_cookie)
  s.header_cookie = header_cookie
  M.set_cookie(s)
  return s
end

--- The settings of a request that gives any of OPTIONS, or a Cookie
-- header (header_cookie: its text), on top of its session's; nil when it
-- gives none (it then uses the session's).
function M.request(base, opts, fn, header_cookie)
  local any = header_cookie ~= nil
  for k in pairs(M.OPTIONS) do
    if opts[k] ~= nil then any = true break end
  end
  if not any then return nil end
  local s = {}
  for k, v in pairs(base) do s[k] = v end
  if header_cookie then
    -- a request's Cookie header replaces its session's, as any header
    s.header_cookie = header_cookie
    M.set_cookie(s)
  end
  return apply(s, opts, fn, false)
end

--- The cookies given as `cookies` (sent to every host) as jar entries.
function M.seed_entries(settings)
  local out = {}
  for name, value in pairs(settings.seeds or {}) do
    out[#out + 1] = { name = name, value = value, domain = "", path = "/", secure = false, http_only = false }
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

return M
