--- Sessions: aiohttp's ClientSession and TCPConnector in one object.
-- A session holds the limits (`limit` requests in flight in total, default
-- 100; `limit_per_host`, default none), default headers, base_url, timeouts
-- and raise_for_status. Inside a task a request yields; outside avideo.run
-- it blocks until done, like `requests`.
local errors = require "avideo.errors"
local json = require "avideo.json"
local response = require "avideo.response"
local sched = require "avideo.scheduler"
local is_file = require("avideo.file").is_file
local client = require "avideo.client"
local retry = require "avideo.retry"

local new_response = response.new
local waiting_task, await_op = sched.waiting_task, sched.await_op
local YIELD, RESUME, refuse_foreign, check_cancel = sched.YIELD, sched.RESUME, sched.refuse_foreign, sched.check_cancel
local current_task = sched.current
local compat = require "avideo.compat"
local file_refusal = require("avideo.core").file_refusal
local co_yield, co_running, co_isyieldable = coroutine.yield, compat.running, compat.isyieldable
local tointeger, math_type, int_text = compat.tointeger, compat.math_type, compat.int_text
local setmetatable = setmetatable
local raise, bad_argument = errors.raise, errors.bad_argument

local Session = { __name = "avideo.Session" }
Session.__index = Session

local DEFAULT_TOTAL_TIMEOUT = 300            -- seconds, as aiohttp
local DEFAULT_MAX_BODY_SIZE = 64 * 1024 * 1024

local SESSION_OPTIONS = {
  limit = true, limit_per_host = true, base_url = true, headers = true,
  timeout = true, raise_for_status = true, max_body_size = true, read_bufsize = true,
  ssl = true, ca_file = true, cookie_jar = true, retry = true, rate = true, rate_per_host = true,
}
local REQUEST_OPTIONS = {
  params = true, headers = true, json = true, data = true, timeout = true,
  raise_for_status = true, max_body_size = true, stream = true, files = true,
  retry = true,
}
-- auth, proxy, proxy_auth, cookies, allow_redirects, max_redirects (client.lua)
for k in pairs(client.OPTIONS) do SESSION_OPTIONS[k], REQUEST_OPTIONS[k] = true, true end
local TIMEOUT_FIELDS = { total = true, connect = true, sock_read = true, pool = true }

local function check_options(opts, allowed, fn)
  if opts == nil then return {} end
  if type(opts) ~= "table" then bad_argument(fn, "opts", "table", opts) end
  for k in pairs(opts) do
    if not allowed[k] then raise("invalid", ("unknown option '%s' to %s"):format(tostring(k), fn)) end
  end
  return opts
end

local show = errors.show

local function check_count(v, name, default)
  if v == nil then return default end
  if type(v) ~= "number" or v < 0 or not tointeger(v) then
    raise("invalid", ("%s must be a whole number >= 0 (0 = no limit), got %s"):format(name, show(v)))
  end
  return tointeger(v)
end

local function check_seconds(v, name)
  if v == nil or v == false then return v end
  if type(v) ~= "number" or v ~= v or v < 0 then
    raise("invalid", ("timeout %s must be a number of seconds >= 0 (or false for none), got %s")
      :format(name, show(v)))
  end
  return v
end

-- {total, connect, sock_read, pool} from a number (total) or a table,
-- over the defaults in `base`.
local function merge_timeout(base, t, fn)
  if t == nil then return base end
  local out = { total = base.total, connect = base.connect, sock_read = base.sock_read, pool = base.pool }
  if type(t) == "number" or t == false then
    out.total = check_seconds(t, "total")
  elseif type(t) == "table" then
    for k, v in pairs(t) do
      if not TIMEOUT_FIELDS[k] then
        raise("invalid", ("unknown timeout field '%s' to %s (total, connect, sock_read, pool)"):format(tostring(k), fn))
      end
      out[k] = check_seconds(v, k)
    end
  else
    bad_argument(fn, "timeout", "number or table", t)
  end
  return out
end

-- A header given as a list, {"1", "2"}: one line each, in order. An empty
-- list is refused rather than sending nothing: a request's header replaces
-- the session's of that name, and "nothing" would read as either.
-- A number as a header value: finite (NaN went out as "-nan").
local function header_number(k, v)
  if v ~= v or v == math.huge or v == -math.huge then
    raise("invalid", ("header '%s' must be a finite number, got %s"):format(k, tostring(v)))
  end
  return tostring(v)
end

local function header_list(into, k, list)
  local n, count = #list, 0
  for key in pairs(list) do
    if type(key) ~= "number" or key < 1 or key > n or key ~= math.floor(key) then
      n = -1
      break
    end
    count = count + 1
  end
  if n <= 0 or count ~= n then
    raise("invalid", ("header '%s' must be a string, number or a non-empty list of them, got %s"):format(k,
      n == 0 and "an empty list" or "a table that is not a list"))
  end
  for i = 1, n do
    local v = list[i]
    if type(v) == "number" then v = header_number(k, v) end
    if type(v) ~= "string" then
      raise("invalid", ("header '%s' list item #%d must be a string or number, got %s"):format(k, i, type(v)))
    end
    into[#into + 1] = k
    into[#into + 1] = v
  end
end

-- Headers as the flat list {name1, value1, ...} the core takes.
local function flat_headers(h, fn, into)
  into = into or {}
  if h == nil then return into end
  if type(h) ~= "table" then bad_argument(fn, "headers", "table", h) end
  for k, v in pairs(h) do
    if type(k) ~= "string" then raise("invalid", "header names must be strings (in " .. fn .. ")") end
    if type(v) == "number" then v = header_number(k, v) end
    if type(v) == "table" then
      header_list(into, k, v)
    else
      if type(v) ~= "string" then
        raise("invalid", ("header '%s' must be a string, number or a list of them, got %s"):format(k, type(v)))
      end
      into[#into + 1] = k
      into[#into + 1] = v
    end
  end
  return into
end

-- Takes every Cookie header out of a flat list; the text of them joined
-- ("a=1; b=2"), or nil. libcurl sends a Cookie header given as a header
-- on a line of its own beside the jar's: RFC 6265 allows one, and servers
-- read "j=2,h=1". Given to libcurl as its cookie text, they share a line.
local function take_cookie_headers(flat)
  local text, j = nil, 0
  for i = 1, #flat, 2 do
    local name, value = flat[i], flat[i + 1]
    if name:lower() == "cookie" then
      -- the core's check of every header value (headers.c), which this one
      -- no longer meets: no control character but tab, no DEL
      local bad = value:gsub("\t", " "):find("[%c\127]")
      if bad then
        local b = value:byte(bad)
        if b == 13 or b == 10 or b == 0 then
          raise("invalid", ("header '%s' value contains CR, LF or NUL"):format(name))
        end
        raise("invalid", ("header '%s' value contains a control character (byte %d)"):format(name, b))
      end
      -- (an empty one counts: a request's replaces its session's)
      if text == nil or text == "" then
        text = value
      elseif value ~= "" then
        text = client.cookie_join(text, value)
      end
    else
      flat[j + 1], flat[j + 2] = name, value
      j = j + 2
    end
  end
  for i = #flat, j + 1, -1 do flat[i] = nil end
  return text
end

local function has_header(flat, name)
  for i = 1, #flat, 2 do
    if flat[i]:lower() == name then return true end
  end
  return false
end

local function encode_component(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- What a field is called in messages, by the option it is in.
local FIELD_WORD = { params = "param", data = "data field" }

-- A number as text: a float as the shortest text that reads back equal
-- (0.1, not the 0.10000000000000001 of %.17g), as requests and aiohttp
-- write it; integers as integers (on 5.1 and LuaJIT: whole numbers within
-- 2^53, see compat.lua). nil for NaN and the infinities.
local function number_text(v)
  if math_type(v) == "integer" then return int_text(v) end
  if v ~= v or v == math.huge or v == -math.huge then return nil end
  for digits = 15, 16 do
    local s = ("%." .. digits .. "g"):format(v)
    if tonumber(s) == v then return s end
  end
  return ("%.17g"):format(v)
end

-- One scalar value of field k as text; `got` words what it is in the
-- message when it is not a scalar.
local function field_value(v, k, opt, got)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then
    local s = number_text(v)
    if s then return s end
    raise("invalid", ("%s '%s' must be a finite number, got %s"):format(FIELD_WORD[opt], k, tostring(v)))
  end
  if t == "boolean" then return tostring(v) end
  raise("invalid", ("%s '%s' must be a string, number, boolean or a list of them, got %s")
    :format(FIELD_WORD[opt], k, got or t))
end

-- True if t's keys are exactly 1..#t (an empty table is an empty list).
local function is_list(t)
  local n, count = #t, 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k > n or k ~= math.floor(k) then return false end
    count = count + 1
  end
  return count == n
end

-- The fields of `opt` (params or data: one encoder, so a query and a form
-- body read the same) as name=value&..., percent-encoded, names sorted for
-- stable output; a list value repeats its name (a=1&a=2). A nested table
-- or a list of {name, value} pairs is refused naming the key: silently
-- dropping or flattening it would send something else than was meant.
-- The fields of `opt` (params or data) as a list of name, text, name,
-- text ..., names sorted for stable output, a list value repeating its
-- name. A nested table or a list of {name, value} pairs is refused naming
-- the key: silently dropping or flattening it would send something else
-- than was meant.
local function form_fields(fields, opt)
  if is_file(fields) then
    -- its path would go as a field: say where a file goes instead
    raise("invalid", ("%s must be a table of fields, not %s; a file goes in files (or alone as data)")
      :format(opt, tostring(fields)))
  end
  local keys, names = {}, {}
  for k, v in pairs(fields) do
    if is_file(v) then
      raise("invalid", ("%s field '%s' is %s: a file goes in files = { [name] = avideo.file(path) }")
        :format(opt, tostring(k), tostring(v)))
    end
    local tk = type(k)
    if tk == "number" then
      if type(v) == "table" then
        raise("invalid", ("%s must be { name = value, ... }, not a list of pairs (item %s is a table)")
          :format(opt, tostring(k)))
      end
      names[k] = number_text(k) or tostring(k)
    elseif tk == "string" then
      names[k] = k
    else
      raise("invalid", ("%s names must be strings, got %s"):format(FIELD_WORD[opt], tk))
    end
    keys[#keys + 1] = k
  end
  if #keys > 0 and #keys == #fields and is_list(fields) then
    -- {"a", "b"} went as 1=a&2=b
    raise("invalid", ("%s must be { name = value, ... }, not a list of values"):format(opt))
  end
  table.sort(keys, function(a, b) return names[a] < names[b] end)
  local out = {}
  for _, k in ipairs(keys) do
    local v, name = fields[k], names[k]
    if type(v) ~= "table" then
      out[#out + 1], out[#out + 2] = name, field_value(v, name, opt)
    elseif not is_list(v) then
      field_value(v, name, opt, "a table that is not a list")
    else
      for _, x in ipairs(v) do
        out[#out + 1], out[#out + 2] = name, field_value(x, name, opt,
          type(x) == "table" and "a list holding a table" or nil)
      end
    end
  end
  return out
end

-- The fields as name=value&..., percent-encoded: one encoder for params
-- and data, so a query and a form body read the same.
local function form_encode(fields, opt)
  local flat, parts = form_fields(fields, opt), {}
  for i = 1, #flat, 2 do
    parts[#parts + 1] = encode_component(flat[i]) .. "=" .. encode_component(flat[i + 1])
  end
  return table.concat(parts, "&")
end

-- url with params appended as a query string.
local function with_params(url, params)
  if type(params) ~= "table" then bad_argument("request", "params", "table", params) end
  local query = form_encode(params, "params")
  if query == "" then return url end
  local base, frag = url:match("^([^#]*)(#?.*)$")
  local last = base:sub(-1)
  local sep = base:find("?", 1, true) and ((last == "?" or last == "&") and "" or "&") or "?"
  return base .. sep .. query .. frag
end

-- The body of `json` or `data` and the Content-Type that says what it is.
-- A string goes as is, as bytes (never as libcurl's form-urlencoded
-- default); a table of fields is a form.
-- The body the core is told a function's pieces make (see send_pulled).
local PULL = { pull = true }

local function encode_body(json_value, data, url, method)
  if json_value ~= nil then
    if data ~= nil then raise("invalid", "give json or data, not both", { url = url, method = method }) end
    if is_file(json_value) then
      raise("invalid", "json must be a value to encode, not " .. tostring(json_value)
        .. ": a file's bytes go as data = avideo.file(path)", { url = url, method = method })
    end
    return json.encode(json_value), "application/json"
  end
  local t = type(data)
  if t == "string" then return data, "application/octet-stream" end
  -- a file: the core opens it and reads it as it sends (see file.lua)
  if is_file(data) then return data, data.content_type or "application/octet-stream" end
  -- a function: the task hands its pieces over as they are sent (send_pulled)
  if t == "function" then return PULL, "application/octet-stream" end
  if t == "table" then return form_encode(data, "data"), "application/x-www-form-urlencoded" end
  raise("invalid", "data must be a string, a table of form fields, avideo.file(path) or a function, got " .. t,
    { url = url, method = method })
end

-- The parts of a multipart/form-data body: `data`'s fields (as a form's,
-- a list value repeating its name), then `files`' (avideo.file(path), or a
-- string sent as a file's content under the field's name), names sorted;
-- the core makes them a libcurl mime body, file parts read from disk.
local function multipart_parts(files, data, url, method)
  local where = { url = url, method = method }
  if type(files) ~= "table" then bad_argument("session:request", "files", "table", files) end
  if is_file(files) then
    raise("invalid", "files must be { [name] = avideo.file(path), ... }, not " .. tostring(files) .. " alone", where)
  end
  if data ~= nil and type(data) ~= "table" then
    raise("invalid", "data beside files must be a table of form fields, got " .. type(data), where)
  end
  local parts = { multipart = true }
  -- data's fields as a form's (the same checks, the same order)
  local flat = form_fields(data or {}, "data")
  for i = 1, #flat, 2 do parts[#parts + 1] = { name = flat[i], data = flat[i + 1] } end
  local names = {}
  for k in pairs(files) do
    if type(k) ~= "string" then raise("invalid", "files field names must be strings, got " .. type(k), where) end
    names[#names + 1] = k
  end
  table.sort(names)
  for _, k in ipairs(names) do
    local v = files[k]
    if is_file(v) then
      -- the core's check, a file body's: readable and a regular file (a
      -- FIFO would block the loop, a directory fail mid-upload)
      local why = file_refusal(v.path)
      if why then raise("invalid", ("files field '%s': %s"):format(k, why), where) end
      parts[#parts + 1] = { name = k, path = v.path, filename = v.filename, content_type = v.content_type }
    elseif type(v) == "string" then
      parts[#parts + 1] = { name = k, data = v, filename = k }
    else
      raise("invalid", ("files field '%s' must be avideo.file(path) or a string, got %s"):format(k, type(v)), where)
    end
  end
  return parts
end

-- headers (a flat list of the request's own) with Content-Type added,
-- unless the request or the session gives one: theirs wins.
local function with_content_type(self, headers, ctype)
  if not has_header(headers, "content-type") and not has_header(self._headers, "content-type") then
    headers[#headers + 1] = "Content-Type"
    headers[#headers + 1] = ctype
  end
  return headers
end

local function join_url(base, url)
  if base == nil or url:find("^%a[%w+.-]*:") then return url end
  if base:sub(-1) == "/" and url:sub(1, 1) == "/" then return base .. url:sub(2) end
  if base:sub(-1) ~= "/" and url:sub(1, 1) ~= "/" and url ~= "" then return base .. "/" .. url end
  return base .. url
end

--- avideo.session(opts) -> session
function Session.new(loop, opts)
  opts = check_options(opts, SESSION_OPTIONS, "avideo.session")
  local max_body = check_count(opts.max_body_size, "max_body_size", DEFAULT_MAX_BODY_SIZE)
  if opts.base_url ~= nil and type(opts.base_url) ~= "string" then
    bad_argument("avideo.session", "base_url", "string", opts.base_url)
  end
  if opts.base_url and opts.base_url:find("[?#]") then
    -- a path joined after it would land in its query or fragment
    raise("invalid", "base_url must not have a query or fragment, got " .. errors.show(opts.base_url)
      .. ": give the query as params")
  end
  local headers = flat_headers(opts.headers, "avideo.session")
  -- TLS: verified against the system's CAs unless told otherwise, as aiohttp
  if opts.ssl ~= nil and type(opts.ssl) ~= "boolean" then bad_argument("avideo.session", "ssl", "boolean", opts.ssl) end
  if opts.raise_for_status ~= nil and type(opts.raise_for_status) ~= "boolean" then
    bad_argument("avideo.session", "raise_for_status", "boolean", opts.raise_for_status)
  end
  local ca_file = opts.ca_file
  if ca_file ~= nil then
    if type(ca_file) ~= "string" then bad_argument("avideo.session", "ca_file", "string", ca_file) end
    if opts.ssl == false then raise("invalid", "give ssl = false or ca_file, not both: ca_file is for verifying") end
    local f, why = io.open(ca_file, "rb")
    if not f then raise("invalid", "ca_file cannot be read: " .. tostring(why)) end
    f:close()
  end
  if opts.cookie_jar ~= nil and type(opts.cookie_jar) ~= "boolean" then
    bad_argument("avideo.session", "cookie_jar", "boolean", opts.cookie_jar)
  end
  local settings = client.session(opts, "avideo.session")
  local header_cookie = take_cookie_headers(headers)
  if header_cookie then client.with_header_cookie(settings, header_cookie) end
  local policy = retry.policy(opts.retry, "avideo.session")
  -- limit, limit_per_host, rate, rate_per_host and read_bufsize are
  -- checked (and defaulted) by the core alone: it hands back the limits it
  -- took (a number, or "auto"), or nil, kind, message
  local core, limit, per_host = loop:session(opts.limit, opts.limit_per_host, headers, opts.read_bufsize,
    opts.ssl ~= false, ca_file, settings, opts.cookie_jar ~= false, opts.rate, opts.rate_per_host)
  if not core then raise(limit, per_host) end -- here: the kind and the message
  local self = setmetatable({
    _core = core,
    _headers = headers,
    _timeout = merge_timeout({ total = DEFAULT_TOTAL_TIMEOUT }, opts.timeout, "avideo.session"),
    _raise = opts.raise_for_status and true or false,
    _max_body = max_body,
    _client = settings,
    _retry = policy, -- false: none
    base_url = opts.base_url,
    limit = limit,
    limit_per_host = per_host,
    closed = false,
  }, Session)
  if limit == "auto" or per_host == "auto" then sched.adaptive[self] = true end
  return self
end

local function check_session(self, fn)
  if getmetatable(self) ~= Session then
    raise("invalid", ("%s must be called as a method: session:%s(...)"):format(fn, fn))
  end
end

-- "session:get" and the like, for messages, made once per method.
local call_names = setmetatable({}, { __index = function(t, method)
  local name = "session:" .. method:lower()
  t[method] = name
  return name
end })

-- The request a task is starting: send() sets these, then yields, and the
-- scheduler calls start_request at once, before any other task runs.
local s_self, s_method, s_url, s_headers, s_body, s_timeout, s_max_body, s_stream, s_client

-- Makes the request op on the scheduler's stack, not the task's (see
-- resume in scheduler.lua): the op, or nil and the error to raise.
local function start_request(task)
  local timeout = s_timeout
  local op, kind, message = s_self._core:request(task, s_method, s_url, s_headers, s_body,
    timeout.total, timeout.connect, timeout.sock_read, timeout.pool, s_max_body, s_stream, s_client)
  local err = not op and errors.new(kind, message, { url = s_url, method = s_method })
  -- not kept alive until the next request
  s_self, s_url, s_headers, s_body, s_client = nil, nil, nil, nil, nil
  return op, err
end

-- The response of a finished request op.
local function make_response(op, url, method, raise_status)
  -- true: the body stays in the op until the response asks for it
  local status, kind, final_url, extra = op:result(true)
  if not status then
    -- final_url is the message here; extra names a timeout's clock, or
    -- is "reset" (the peer reset or closed the connection)
    errors.raise_failed(kind, final_url, { url = url, method = method, timings = (op:timings()) }, extra)
  end
  -- extra: a streamed response's max_body_size (nil: buffered)
  if raise_status and status >= 400 then
    local r = new_response(status, final_url or url, op, extra ~= nil, extra)
    r:close() -- a stream nobody will read gives its slot back now
    r:raise_for_status()
  end
  -- a tail call: a frame more here would put new_response's setmetatable
  -- (a C call wants 20 free slots) past a waiting task's initial 40-slot
  -- stack, and every task of the talk's one gather would then grow its
  -- stack (+640 B, 25% of what such a request allocates)
  return new_response(status, final_url or url, op, extra ~= nil, extra)
end

-- Waits for the request the task has asked for. Tail-called, and
-- tail-calls make_response: the whole request path is one small frame,
-- low on the task's stack, so that a waiting coroutine keeps Lua's
-- initial 40-slot stack (a C function call needs 20 free slots above it).
local function wait_response(task, url, method, raise_status)
  local token, op = co_yield(YIELD, start_request)
  if token ~= RESUME then op = refuse_foreign() end
  task.op = false
  if task.cancel_pending then check_cancel(task) end
  if type(op) ~= "userdata" then error(op, 0) end -- start_request's error
  return make_response(op, url, method, raise_status)
end

-- The second half of a request, once its options are checked and encoded:
-- start it and wait for the response. Outside any task it runs itself as
-- the main task of avideo.run (the blocking form), so nothing is checked or
-- encoded twice. request() tail-calls it, so request()'s many locals are
-- not kept alive on the stack of a waiting task.
local function send(self, method, url, headers, body, timeout, max_body, raise_status)
  -- waiting_task's common case inline: its call would be one more call
  -- frame (64 B) kept by every waiting coroutine
  local task = current_task()
  if task == nil or task.cancel_pending or co_running() ~= task.co or not co_isyieldable() then
    task = waiting_task(call_names[method])
  end
  if task == nil then
    return sched.run(send, self, method, url, headers, body, timeout, max_body, raise_status)
  end
  -- one statement each: a multiple assignment moves every value twice
  s_self = self
  s_method = method
  s_url = url
  s_headers = headers
  s_body = body
  s_timeout = timeout
  s_max_body = max_body
  return wait_response(task, url, method, raise_status)
end

-- One attempt of a retried request (retry.lua's loop): send() as request()
-- calls it, the status never raised (the loop does that at the end).
local function attempt(self, method, url, headers, body, timeout, max_body, carry)
  s_stream = carry and carry.stream
  s_client = carry and carry.client
  return send(self, method, url, headers, body, timeout, max_body, false)
end

-- send() for data = fn: the task calls fn for each piece of the body as
-- libcurl is ready to send it (fn may wait: it runs in the task), until fn
-- returns nil; then it waits for the response as send() does. An error in
-- fn ends the transfer and is raised as it is. compat.pcall lets fn yield
-- on every version (PUC 5.1's pcall cannot).
local function send_pulled(self, method, url, headers, fn, timeout, max_body, raise_status)
  local task = waiting_task(call_names[method])
  if task == nil then
    return sched.run(send_pulled, self, method, url, headers, fn, timeout, max_body, raise_status)
  end
  s_self, s_method, s_url, s_headers, s_body, s_timeout, s_max_body = self, method, url, headers, PULL, timeout, max_body
  local token, op = co_yield(YIELD, start_request)
  if token ~= RESUME then op = refuse_foreign() end
  task.op = false
  if task.cancel_pending then check_cancel(task) end
  if type(op) ~= "userdata" then error(op, 0) end -- start_request's error
  while op:wants_body() do
    local ok, piece = compat.pcall(fn)
    if ok and piece ~= nil and type(piece) ~= "string" then
      ok, piece = false, errors.new("invalid", "a body function must return strings, then nil at the end; got "
        .. type(piece), { url = url, method = method })
    end
    if not ok then
      op:close() -- the transfer stops, its slot frees
      error(piece, 0)
    end
    if op:write(piece, task) then await_op(task, op) end
  end
  return make_response(op, url, method, raise_status)
end

-- The request path shared by every verb; method is upper case already.
local function request(self, method, url, opts)
  if type(url) ~= "string" then bad_argument(call_names[method], "url", "string", url) end
  if self.base_url then url = join_url(self.base_url, url) end
  local headers, body, timeout, raise_status, max_body = nil, nil, self._timeout, self._raise, self._max_body
  local stream, own, policy = nil, nil, self._retry
  if opts ~= nil then
    check_options(opts, REQUEST_OPTIONS, "session:request")
    local header_cookie
    if opts.headers ~= nil then
      headers = flat_headers(opts.headers, "session:request")
      header_cookie = take_cookie_headers(headers)
    end
    own = client.request(self._client, opts, "session:request", header_cookie)
    if opts.retry ~= nil then policy = retry.policy(opts.retry, "session:request") end
    if opts.params ~= nil then url = with_params(url, opts.params) end
    if opts.files ~= nil then
      if opts.json ~= nil then raise("invalid", "give json or files, not both", { url = url, method = method }) end
      -- libcurl writes its Content-Type, with the boundary
      body = multipart_parts(opts.files, opts.data, url, method)
    elseif opts.json ~= nil or opts.data ~= nil then
      local ctype
      body, ctype = encode_body(opts.json, opts.data, url, method)
      headers = with_content_type(self, headers or {}, ctype)
    end
    timeout = merge_timeout(timeout, opts.timeout, "session:request")
    if opts.raise_for_status ~= nil then
      if type(opts.raise_for_status) ~= "boolean" then
        bad_argument("session:request", "raise_for_status", "boolean", opts.raise_for_status)
      end
      raise_status = opts.raise_for_status
    end
    max_body = check_count(opts.max_body_size, "max_body_size", max_body)
    if opts.stream ~= nil and type(opts.stream) ~= "boolean" then
      bad_argument("session:request", "stream", "boolean", opts.stream)
    end
    if opts.stream then stream = true end
  end
  -- set here, not passed: one parameter more on send's frame would grow
  -- every waiting coroutine's stack (see wait_response)
  s_stream = stream
  s_client = own
  -- a body function cannot be sent twice: never retried
  if body == PULL then return send_pulled(self, method, url, headers, opts.data, timeout, max_body, raise_status) end
  if policy and policy.methods[method] then
    -- what request() sets for send, carried to every attempt
    local carry = (stream or own) and { stream = stream, client = own } or nil
    return retry.send(policy, attempt, self, method, url, headers, body, timeout, max_body, raise_status, carry)
  end
  return send(self, method, url, headers, body, timeout, max_body, raise_status)
end


--- session:request(method, url [, opts]) -> response
function Session:request(method, url, opts)
  check_session(self, "request")
  if type(method) ~= "string" then bad_argument("session:request", "method", "string", method) end
  return request(self, method:upper(), url, opts)
end

for _, m in ipairs { "get", "post", "put", "patch", "delete", "head" } do
  local M = m:upper()
  Session[m] = function(self, url, opts)
    if getmetatable(self) ~= Session then check_session(self, m) end
    if opts ~= nil or self._retry then return request(self, M, url, opts) end
    -- without options or a retry policy (the common case) straight to
    -- send: no option locals on the stack, one call less
    if type(url) ~= "string" then bad_argument("session:" .. m, "url", "string", url) end
    if self.base_url then url = join_url(self.base_url, url) end
    s_stream = nil
    s_client = nil
    return send(self, M, url, nil, nil, self._timeout, self._max_body, self._raise)
  end
end

--- Close the session: new requests are refused, queued ones fail.
function Session:close()
  check_session(self, "close")
  if not self.closed then
    self.closed = true
    self._core:close()
  end
end
Session.__close = Session.close

--- The session's cookies: those given as `cookies` (sent to every host:
-- domain "") and those servers set, as a list of { name, value, domain,
-- path, expires (nil: until the session ends), secure, http_only }.
function Session:cookies()
  check_session(self, "cookies")
  local out = client.seed_entries(self._client)
  for _, c in ipairs(self._core:cookies()) do out[#out + 1] = c end
  return out
end

--- Forget every cookie of the session, the given ones too.
function Session:clear_cookies()
  check_session(self, "clear_cookies")
  -- (a Cookie header given as a header stays: it is a header, not a cookie)
  self._client.seeds = {}
  client.set_cookie(self._client)
  self._core:clear_cookies(self._client.header_cookie)
end

--- In flight, queued, and hosts tracked by this session's limiter.
function Session:stats()
  check_session(self, "stats")
  local in_flight, queued, hosts = self._core:stats()
  return { in_flight = in_flight, queued = queued, hosts = hosts }
end

--- Change a limit at runtime: a whole number >= 0 (0 = none), fixed from
-- now on (an adaptive one stops adapting); queued requests that now fit
-- start at once. The core checks n.
local function set_limit(self, which, n)
  local ok, kind, message = self._core:set_limit(which, n)
  if not ok then raise(kind, message) end
  self[which] = n
end

function Session:set_limit(n)
  check_session(self, "set_limit")
  set_limit(self, "limit", n)
end

function Session:set_limit_per_host(n)
  check_session(self, "set_limit_per_host")
  set_limit(self, "limit_per_host", n)
end

--- Per host ("scheme://host:port") the limiter tracks: { limit (0 =
-- none), in_flight, queued, latency_min, latency_recent (seconds, nil
-- until measured) }. With an adaptive limit or rate_per_host a host stays
-- after its requests ended (its state is kept); else only while busy.
function Session:limits()
  check_session(self, "limits")
  return self._core:limits()
end

function Session:__tostring()
  return ("avideo.Session (limit %s, limit_per_host %s%s)"):format(self.limit, self.limit_per_host,
    self.closed and ", closed" or "")
end

return Session
