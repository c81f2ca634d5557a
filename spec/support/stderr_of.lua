--- stderr_of(f): what f wrote to io.stderr while it ran (the reports of
-- failures nobody read); f's error, if any, is raised after io.stderr is
-- given back.
return function(f)
  local path = os.tmpname()
  local saved = io.stderr
  local file = assert(io.open(path, "w"))
  io.stderr = file
  local ok, err = pcall(f)
  io.stderr = saved
  file:close()
  local text = assert(io.open(path)):read("*a") -- ("*a": 5.1 too)
  os.remove(path)
  assert(ok, err)
  return text
end
