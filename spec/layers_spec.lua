-- src/core is a one-way stack (docs/architecture.md): each file uses only
-- the files of its own layer and of the layers below, and no file reaches,
-- directly or through others, a file that reaches it back. This spec reads
-- the C sources, finds which file defines each function declared in
-- private.h, and checks every use of one in another file against the
-- layers. Reports upward go through function tables (av_op_vtable,
-- av_xfer_vtable, av_request_owner), which name no function and are not
-- edges here.
local source_dir = assert(os.getenv("AVIDEO_SOURCE_DIR"), "AVIDEO_SOURCE_DIR is not set")
local core = source_dir .. "/src/core/"

-- Bottom to top, as private.h's opening comment lists them.
local LAYERS = {
  { name = "leaves", files = { "buf", "errors", "headers", "url", "redirect", "json", "json_decode", "codec", "inflate" } },
  { name = "loop", files = { "ops", "host" } },
  { name = "op kinds", files = { "timer", "work" } },
  { name = "transport", files = { "transport" } },
  { name = "request", files = { "request", "receive", "multipart", "client", "trace" } },
  { name = "limiter", files = { "limiter", "adapt", "bucket" } },
  { name = "top", files = { "loop", "session", "module" } },
}

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- Comments and string literals blanked, so that names in them count for nothing.
local function code_of(text)
  text = text:gsub("/%*.-%*/", function(c) return (c:gsub("[^\n]", " ")) end)
  text = text:gsub("//[^\n]*", "")
  text = text:gsub('"[^"\n]*"', '""')
  return text
end

local function c_files()
  local files = {}
  local p = assert(io.popen("ls '" .. core .. "'"))
  for name in p:lines() do
    local base = name:match("^(.+)%.c$")
    if base then files[#files + 1] = base end
  end
  p:close()
  table.sort(files)
  return files
end

-- file -> code, and function name -> the file that defines it.
local function scan()
  local code, definer = {}, {}
  local declared = {}
  for name in code_of(read(core .. "private.h")):gmatch("(av_[%w_]+)%s*%(") do declared[name] = true end
  for _, file in ipairs(c_files()) do
    local text = code_of(read(core .. file .. ".c"))
    code[file] = text
    -- a definition starts in column 0 and its parameter list is followed by '{'
    for line_start, name in text:gmatch("\n()[%a_][^\n;{}=]-%f[%w_](av_[%w_]+)%s*%(") do
      if declared[name] then
        local after = text:match("^.-%b()%s*(.)", text:find(name .. "%s*%(", line_start))
        if after == "{" then definer[name] = file end
      end
    end
  end
  return code, definer
end

-- file -> { used file = an example name }
local function edges(code, definer)
  local out = {}
  for file, text in pairs(code) do
    out[file] = {}
    for name in text:gmatch("%f[%w_](av_[%w_]+)%f[^%w_]") do
      local to = definer[name]
      if to and to ~= file then out[file][to] = out[file][to] or name end
    end
  end
  return out
end

describe("src/core's layers", function()
  local code, definer = scan()
  local uses = edges(code, definer)
  local rank = {}
  for i, layer in ipairs(LAYERS) do
    for _, f in ipairs(layer.files) do rank[f] = i end
  end

  it("finds the definitions (the scan itself works)", function()
    assert.equal("request", definer.av_request_run)
    assert.equal("transport", definer.av_xfer_start)
    assert.equal("limiter", definer.av_limiter_admit)
    assert.equal("ops", definer.av_op_finish)
    assert.truthy(uses.request.transport, "request.c uses the transport")
  end)

  it("places every C file of src/core in a layer", function()
    for file in pairs(code) do
      assert(rank[file], file .. ".c is in no layer: add it to LAYERS here and to private.h's list")
    end
  end)

  it("has every file use only its own layer and the ones below", function()
    local bad = {}
    for file, to in pairs(uses) do
      for target, name in pairs(to) do
        if rank[target] > rank[file] then
          bad[#bad + 1] = ("%s.c (%s) uses %s.c (%s): %s"):format(file, LAYERS[rank[file]].name,
            target, LAYERS[rank[target]].name, name)
        end
      end
    end
    table.sort(bad)
    assert(#bad == 0, table.concat(bad, "\n"))
  end)

  it("has no file reach, through others, a file that reaches it back", function()
    local state, path, cycle = {}, {}, nil
    local function visit(f)
      state[f] = "open"
      path[#path + 1] = f
      for target in pairs(uses[f]) do
        if state[target] == "open" then
          local from
          for i, p in ipairs(path) do if p == target then from = i end end
          cycle = table.concat(path, " -> ", from) .. " -> " .. target
          return true
        elseif not state[target] and visit(target) then
          return true
        end
      end
      path[#path] = nil
      state[f] = "done"
      return false
    end
    for f in pairs(uses) do
      if not state[f] and visit(f) then break end
    end
    assert(cycle == nil, "a cycle: " .. tostring(cycle))
  end)

  it("keeps the limiter pure and the transport ignorant of requests", function()
    -- the limiter's files use the leaves and each other only: arithmetic
    -- and queues, no libuv, libcurl or request
    local pure = { adapt = true, bucket = true }
    for _, file in ipairs { "limiter", "adapt", "bucket" } do
      for target, name in pairs(uses[file]) do
        assert(rank[target] == 1 or (file == "limiter" and pure[target]), file .. ".c uses " .. target .. ".c: " .. name)
      end
    end
    assert.falsy(code.transport:find("av_request", 1, true), "transport.c names a request")
    assert.falsy(code.transport:find("av_session", 1, true), "transport.c names a session")
  end)
end)
