--- This process's resident set size in KiB (VmRSS), for the soaks.
return function()
  for line in io.lines("/proc/self/status") do
    local kib = line:match("^VmRSS:%s+(%d+)")
    if kib then return tonumber(kib) end
  end
end
