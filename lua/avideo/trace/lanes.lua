--- Lanes for a trace's pictures: intervals put on the fewest rows so that
-- none overlap on a row (interval partitioning). Taken in start order,
-- each goes to the lowest-numbered free row, so the picture fills from
-- the top as slots do. O(n log n): 20,000 queued requests stay quick.
local M = {}

-- A binary min-heap of values ordered by key(v).
local function heap(key)
  local h = { n = 0 }
  function h.push(v)
    local n = h.n + 1
    h.n = n
    h[n] = v
    while n > 1 do
      local p = (n - n % 2) / 2 -- parent (no // : ports to 5.1)
      if key(h[p]) <= key(h[n]) then break end
      h[p], h[n] = h[n], h[p]
      n = p
    end
  end
  function h.top() return h[1] end
  function h.pop()
    local top, n = h[1], h.n
    h[1], h[n] = h[n], nil
    n = n - 1
    h.n = n
    local i = 1
    while true do
      local l, r, m = 2 * i, 2 * i + 1, i
      if l <= n and key(h[l]) < key(h[m]) then m = l end
      if r <= n and key(h[r]) < key(h[m]) then m = r end
      if m == i then break end
      h[i], h[m] = h[m], h[i]
      i = m
    end
    return top
  end
  return h
end

--- items: a list; span(item) -> start, finish. Returns the lane
-- (1-based) of each item by index, and the number of lanes.
function M.assign(items, span)
  local n = #items
  local order, s, f = {}, {}, {}
  for i = 1, n do
    order[i] = i
    s[i], f[i] = span(items[i])
  end
  table.sort(order, function(a, b)
    if s[a] ~= s[b] then return s[a] < s[b] end
    return a < b
  end)
  local lane_of, lanes = {}, 0
  local busy = heap(function(i) return f[i] end) -- items on a lane, by finish
  local free = heap(function(l) return l end)     -- lanes free again
  for _, i in ipairs(order) do
    while busy.n > 0 and f[busy.top()] <= s[i] do free.push(lane_of[busy.pop()]) end
    local lane
    if free.n > 0 then
      lane = free.pop()
    else
      lanes = lanes + 1
      lane = lanes
    end
    lane_of[i] = lane
    busy.push(i)
  end
  return lane_of, lanes
end

return M
