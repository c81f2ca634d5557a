--- A trace as Chrome's Trace Event Format (JSON: opens in Perfetto and
-- chrome://tracing). Three processes:
--   1 "requests": one track per connection slot in use, so the picture
--     looks like the talk's; one complete event per request, "METHOD URL",
--     with its phases nested (redirect, dns, connect, tls, waiting,
--     receiving), the counters "in flight" and "queued", and a counter
--     "limit KEY" per host (and "limit total") whose limit moved;
--   2 "queue": the wait of each request for a slot (and those that never
--     got one), on as many tracks as waited at once;
--   3 "tasks": tasks, with their sleeps and run_in_thread jobs nested.
local json = require "avideo.json"
local lanes = require "avideo.trace.lanes"

local M = {}

local function us(t, t0) return (t - t0) * 1e6 end

local function complete(events, name, cat, pid, tid, t0, start, finish, args)
  events[#events + 1] = { name = name, cat = cat, ph = "X", pid = pid, tid = tid,
    ts = us(start, t0), dur = math.max(0, (finish - start) * 1e6), args = args }
end

local function meta(events, pid, tid, what, name)
  events[#events + 1] = { name = what, ph = "M", pid = pid, tid = tid, args = { name = name } }
end

-- The phases of a request that ran, as [from, to] offsets from its slot.
local PHASES = {
  { "redirect", nil, "redirect" }, { "dns", "redirect", "dns" }, { "connect", "dns", "connect" },
  { "tls", "connect", "tls" }, { "waiting", "tls", "first_byte" },
}

local function request_args(q)
  return {
    status = q.status, error = q.error_kind ~= "" and q.error_kind or nil,
    message = q.error ~= "" and q.error or nil, final_url = q.final_url ~= q.url and q.final_url or nil,
    bytes_received = q.down, bytes_sent = q.up, reused_connection = q.reused,
    queued_ms = ((q.started or q.ended) - q.created) * 1e3, redirects = q.redirects > 0 and q.redirects or nil,
  }
end

local function requests(events, r)
  local t0, ran = r.t0, {}
  for _, q in ipairs(r.requests) do
    if q.started then ran[#ran + 1] = q end
  end
  local lane_of, n = lanes.assign(ran, function(q) return q.started, q.ended end)
  meta(events, 1, 0, "process_name", "requests: one track per slot in use")
  for l = 1, n do meta(events, 1, l, "thread_name", "slot " .. l) end
  for i, q in ipairs(ran) do
    local name, lane = q.method .. " " .. q.url, lane_of[i]
    complete(events, name, "request", 1, lane, t0, q.started, q.ended, request_args(q))
    local total = q.ended - q.started
    for _, p in ipairs(PHASES) do
      local from, to = p[2] and q[p[2]] or 0, q[p[3]]
      if to and from and to > from then complete(events, p[1], "phase", 1, lane, t0, q.started + from, q.started + to) end
    end
    local first = q.first_byte or q.tls
    if first and total > first then complete(events, "receiving", "phase", 1, lane, t0, q.started + first, q.ended) end
  end
  -- what waited: from the call to the slot (or to the end, for one that never got it)
  local waited = {}
  for _, q in ipairs(r.requests) do
    if (q.started or q.ended) > q.created then waited[#waited + 1] = q end
  end
  local qlane, qn = lanes.assign(waited, function(q) return q.created, q.started or q.ended end)
  meta(events, 2, 0, "process_name", "queue: requests waiting for a slot")
  for l = 1, qn do meta(events, 2, l, "thread_name", "waiting " .. l) end
  for i, q in ipairs(waited) do
    complete(events, q.method .. " " .. q.url, "queued", 2, qlane[i], t0, q.created, q.started or q.ended,
      { got_slot = q.started ~= nil, error = not q.started and q.error_kind or nil })
  end
  -- counters: requests in flight and queued, at every change
  local changes = {}
  for _, q in ipairs(r.requests) do
    changes[#changes + 1] = { q.created, 0, 1 }
    if q.started then
      changes[#changes + 1] = { q.started, 1, -1 }
      changes[#changes + 1] = { q.ended, -1, 0 }
    else
      changes[#changes + 1] = { q.ended, 0, -1 }
    end
  end
  table.sort(changes, function(a, b) return a[1] < b[1] end)
  local flying, queued = 0, 0
  for i, c in ipairs(changes) do
    flying, queued = flying + c[2], queued + c[3]
    if i == #changes or changes[i + 1][1] ~= c[1] then
      events[#events + 1] = { name = "requests", ph = "C", pid = 1, tid = 0, ts = us(c[1], t0),
        args = { ["in flight"] = flying, queued = queued } }
    end
  end
end

-- The limits that moved: one counter per host and one for the total,
-- a sample at each change.
local function limits(events, r)
  for _, l in ipairs(r.limits or {}) do
    events[#events + 1] = { name = "limit " .. l.name, ph = "C", pid = 1, tid = 0,
      ts = us(l.at, r.t0), args = { limit = l.limit } }
  end
end

local function tasks(events, r)
  local t0, t1 = r.t0, r.t1
  local lane_of, n = lanes.assign(r.tasks, function(t) return t.start, t.finish or t1 end)
  meta(events, 3, 0, "process_name", "tasks")
  for l = 1, n do meta(events, 3, l, "thread_name", "task lane " .. l) end
  for i, t in ipairs(r.tasks) do
    complete(events, t.name, "task", 3, lane_of[i], t0, t.start, t.finish or t1,
      { status = t.status or "still running at the end of the trace" })
  end
  for _, s in ipairs(r.spans) do
    -- on its task's track, nested in it; a span of a task started before the trace gets track 0
    complete(events, s.name, s.kind, 3, s.task and lane_of[s.task] or 0, t0, s.start, s.finish)
  end
end

--- The file's text for recording r (see avideo/trace.lua).
function M.render(r)
  local events = {}
  requests(events, r)
  limits(events, r)
  tasks(events, r)
  return json.encode({ traceEvents = events, displayTimeUnit = "ms",
    otherData = { producer = "avideo", started = r.wall0 } })
end

return M
