--- A trace as a self-contained SVG waterfall: one row per request in the
-- order they were made, a bar coloured by phase (queued for a slot,
-- redirects, dns, connect, tls, waiting for the first byte, receiving),
-- the status (or the error) after it, a time axis and a legend. Each
-- request is one <g class="request"> group. Past MAX_ROWS requests, rows
-- hold several requests each (drawn over one another, lighter), so 10,000
-- requests still make a picture of readable size. When a limit moved
-- (adaptive, or set at run time), a band under the rows draws it as a step
-- line on the same time axis, one per host and the total (<g class="limits">).
local M = {}

local MAX_ROWS = 400
local WIDTH, LABEL, RIGHT = 1200, 330, 70
local ROW, TOP = 16, 62

local COLOURS = {
  { "queued", "#c9c9c9" }, { "redirect", "#b39ddb" }, { "dns", "#4db6ac" }, { "connect", "#ffb74d" },
  { "tls", "#ba68c8" }, { "waiting", "#64b5f6" }, { "receiving", "#1565c0" },
}
local COLOUR = {}
for _, c in ipairs(COLOURS) do COLOUR[c[1]] = c[2] end

-- The limits band: its height, and at most this many lines in it.
local LIMIT_BAND, LIMIT_LINES = 90, 6
local LIMIT_COLOURS = { "#e65100", "#2e7d32", "#6a1b9a", "#00838f", "#ad1457", "#5d4037" }

local function esc(s)
  return (tostring(s):gsub("[&<>\"]", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;" }))
end

-- The first n bytes of s, or its last n, without splitting a UTF-8
-- character: a cut inside one made the SVG invalid XML, which browsers
-- refuse to draw (URLs may carry raw UTF-8).
local function continues(s, i)
  local b = s:byte(i)
  return b ~= nil and b >= 0x80 and b < 0xC0
end
local function head(s, n)
  while n > 0 and continues(s, n + 1) do n = n - 1 end
  return s:sub(1, n)
end
local function tail(s, n)
  local from = #s - n + 1
  while continues(s, from) do from = from + 1 end
  return s:sub(from)
end

local function fmt(x) return ("%.2f"):format(x) end

-- A tick step of 1, 2 or 5 times a power of ten giving about 8 ticks.
local function tick_step(span)
  if span <= 0 then return 1 end
  local raw = span / 8
  local p = 10 ^ math.floor(math.log(raw) / math.log(10))
  for _, m in ipairs { 1, 2, 5, 10 } do
    if m * p >= raw then return m * p end
  end
  return 10 * p
end

local function seconds_text(t, step)
  if step < 1 then return ("%g ms"):format(math.floor(t * 1000 + 0.5)) end
  return ("%g s"):format(t)
end

-- The phases of q as {name, from, to} in trace seconds.
local function phases(q)
  local out = {}
  local slot = q.started or q.ended
  if slot > q.created then out[#out + 1] = { "queued", q.created, slot } end
  if not q.started then return out end
  local s = q.started
  local marks = {
    { "redirect", 0, q.redirect }, { "dns", q.redirect, q.dns }, { "connect", q.dns, q.connect },
    { "tls", q.connect, q.tls }, { "waiting", q.tls or q.redirect, q.first_byte },
  }
  for _, m in ipairs(marks) do
    if m[2] and m[3] and m[3] > m[2] then out[#out + 1] = { m[1], s + m[2], s + m[3] } end
  end
  local last = q.first_byte or q.tls or q.connect or q.dns or q.redirect
  local name = q.first_byte and "receiving" or "waiting"
  if q.ended > s + last then out[#out + 1] = { name, s + last, q.ended } end
  return out
end

-- The limit samples as lines, the total's first, then the hosts' in the
-- order they appear: { name, points = { {t, limit}, ... } }, and the
-- highest limit (the band's top).
local function limit_lines(samples)
  local lines, by_name, top = {}, {}, 1
  for _, l in ipairs(samples or {}) do
    local name = l.name
    local line = by_name[name]
    if not line then
      line = { name = name, points = {} }
      by_name[name] = line
      if l.key then lines[#lines + 1] = line else table.insert(lines, 1, line) end
    end
    line.points[#line.points + 1] = { l.at, l.limit }
    if l.limit > top then top = l.limit end
  end
  return lines, top
end

-- Draw the limits band at y (its top): a step line per limit, held from
-- each sample to the next and the last one to t_end.
local function limits_band(w, lines, top, y, x, t_end)
  w(('<g class="limits">\n<text x="10" y="%d" font-weight="bold">limit (0 to %d)</text>\n'):format(y + 12, top))
  w(('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#e0e0e0"/>\n'):format(LABEL, y + LIMIT_BAND, WIDTH - RIGHT,
    y + LIMIT_BAND))
  local function ly(v) return y + LIMIT_BAND - v / top * (LIMIT_BAND - 8) end
  for i = 1, math.min(#lines, LIMIT_LINES) do
    local line, colour = lines[i], LIMIT_COLOURS[i]
    local pts, last = {}, nil
    for _, p in ipairs(line.points) do
      if last then pts[#pts + 1] = fmt(x(p[1])) .. "," .. fmt(ly(last)) end
      pts[#pts + 1] = fmt(x(p[1])) .. "," .. fmt(ly(p[2]))
      last = p[2]
    end
    pts[#pts + 1] = fmt(x(t_end)) .. "," .. fmt(ly(last))
    local label = line.name
    if #label > 40 then label = "…" .. tail(label, 39) end
    w(('<text x="10" y="%d" fill="%s">%s: %d</text>\n'):format(y + 12 + 13 * i, colour, esc(label), last))
    w(('<polyline class="limit" fill="none" stroke="%s" stroke-width="1.5" points="%s"><title>limit %s</title>'
      .. '</polyline>\n'):format(colour, table.concat(pts, " "), esc(line.name)))
  end
  if #lines > LIMIT_LINES then
    w(('<text x="10" y="%d" fill="#555555">and %d more</text>\n'):format(y + 12 + 13 * (LIMIT_LINES + 1),
      #lines - LIMIT_LINES))
  end
  w('</g>\n')
end

--- The file's text for recording r (see avideo/trace.lua).
function M.render(r)
  local list = {}
  for i, q in ipairs(r.requests) do list[i] = q end
  table.sort(list, function(a, b) return a.created < b.created end)
  local n = #list
  local per_row = math.max(1, math.ceil(n / MAX_ROWS))
  local rows = math.max(1, math.ceil(n / per_row))
  local t_start, t_end = r.t0, r.t0
  for _, q in ipairs(list) do
    if q.created < t_start then t_start = q.created end
    if q.ended > t_end then t_end = q.ended end
  end
  local lines, top = limit_lines(r.limits)
  for _, l in ipairs(r.limits or {}) do
    if l.at > t_end then t_end = l.at end
  end
  local span = math.max(t_end - t_start, 1e-3)
  local chart = WIDTH - LABEL - RIGHT
  local function x(t) return LABEL + (t - t_start) / span * chart end
  local band = #lines > 0 and LIMIT_BAND + 30 or 0
  local height = TOP + rows * ROW + 40 + band
  local out = {}
  local function w(s) out[#out + 1] = s end
  w(('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
    .. 'font-family="sans-serif" font-size="11">\n'):format(WIDTH, height, WIDTH, height))
  w(('<rect width="%d" height="%d" fill="#ffffff"/>\n'):format(WIDTH, height))
  w(('<text x="10" y="18" font-size="14" font-weight="bold">avideo: %d request%s over %.2f s</text>\n')
    :format(n, n == 1 and "" or "s", span))
  -- legend
  local lx = 10
  for _, c in ipairs(COLOURS) do
    w(('<rect x="%d" y="28" width="12" height="12" fill="%s"/><text x="%d" y="38">%s</text>\n')
      :format(lx, c[2], lx + 16, c[1]))
    lx = lx + 30 + #c[1] * 6
  end
  w(('<text x="%d" y="38" fill="#c62828">■ failed</text>\n'):format(lx))
  -- time axis: grid lines and labels
  local step = tick_step(span)
  w('<g class="axis" stroke="#e0e0e0">\n')
  for t = 0, span + 1e-9, step do
    local gx = fmt(x(t_start + t))
    w(('<line x1="%s" y1="%d" x2="%s" y2="%d"/>\n'):format(gx, TOP - 6, gx, TOP + rows * ROW))
  end
  w('</g>\n<g class="axis-labels" fill="#555555">\n')
  for t = 0, span + 1e-9, step do
    w(('<text x="%s" y="%d" text-anchor="middle">%s</text>\n')
      :format(fmt(x(t_start + t)), TOP - 9, esc(seconds_text(t, step))))
  end
  w('</g>\n')
  local opacity = per_row > 1 and math.max(0.15, 1 / per_row) or 1
  for i, q in ipairs(list) do
    local row = math.floor((i - 1) / per_row)
    local y = TOP + row * ROW
    local failed = q.error_kind ~= ""
    w(('<g class="request"><title>%s %s: %s</title>\n'):format(esc(q.method), esc(q.url),
      esc(failed and (q.error_kind .. ": " .. q.error) or tostring(q.status or "no response"))))
    if (i - 1) % per_row == 0 then
      local label = per_row == 1 and (q.method .. " " .. q.url)
        or ("requests %d–%d"):format(i, math.min(n, i + per_row - 1))
      if #label > 52 then label = head(label, 24) .. "…" .. tail(label, 27) end
      w(('<text x="10" y="%d">%s</text>\n'):format(y + 12, esc(label)))
    end
    for _, p in ipairs(phases(q)) do
      -- a phase under half a pixel is not drawn (a queued wait of a few µs)
      local width = x(p[3]) - x(p[2])
      if width >= 0.5 then
        w(('<rect x="%s" y="%d" width="%s" height="%d" fill="%s" fill-opacity="%.2f"/>\n')
          :format(fmt(x(p[2])), y + 2, fmt(width), ROW - 4, COLOUR[p[1]], opacity))
      end
    end
    if failed then
      w(('<rect x="%s" y="%d" width="%s" height="%d" fill="none" stroke="#c62828"/>\n')
        :format(fmt(x(q.created)), y + 2, fmt(math.max(1, x(q.ended) - x(q.created))), ROW - 4))
    end
    if per_row == 1 then
      w(('<text x="%s" y="%d" fill="%s">%s</text>\n'):format(fmt(x(q.ended) + 4), y + 12,
        failed and "#c62828" or "#333333", esc(failed and q.error_kind or tostring(q.status or ""))))
    end
    w('</g>\n')
  end
  if #lines > 0 then limits_band(w, lines, top, TOP + rows * ROW + 20, x, t_end) end
  w('</svg>\n')
  return table.concat(out)
end

return M
