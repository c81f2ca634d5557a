/* libFuzzer target: the module's validation of what a caller hands to
 * session:request (method, URL, header name and value, body, timeouts) and
 * to loop:session (limits, default headers). The input is split at '\n'
 * into fields. The loop is never run, so nothing is ever sent: a request
 * that passes validation is started in libcurl's multi and cancelled.
 * The whole input is also decoded as JSON (core.json_decoder): a value,
 * or a one-line message with a byte inside the text, never anything else. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

int luaopen_avideo_core(lua_State *L);

static lua_State *L;

static const char setup[] =
    "local core = ...\n"
    "local loop = core.loop()\n"
    "local session = assert(loop:session(0, 0, {}))\n"
    "local decode = core.json_decoder(false, setmetatable({}, { __mode = 'k' }))\n"
    "return function(method, url, name, value, body, t, limit)\n"
    "  local s, kind = loop:session(limit, limit, { name, value })\n"
    "  if s then s:close() end\n"
    "  local op, k, msg = session:request(session, method, url, { name, value, 'X-Fixed', value }, body, t, t, t, t, 0)\n"
    "  if op then op:cancel() else assert(k == 'invalid' and type(msg) == 'string') end\n"
    "end, function(text)\n"
    "  local v, msg, at = decode(text)\n"
    "  if v == nil then\n"
    "    assert(type(msg) == 'string' and not msg:find('%c'), msg)\n"
    "    assert(math.type(at) == 'integer' and at >= 1 and at <= #text + 1, msg)\n"
    "  end\n"
    "end\n";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "avideo.core", luaopen_avideo_core, 0);
  if (luaL_loadstring(L, setup) != LUA_OK) return 1;
  lua_pushvalue(L, -2);
  if (lua_pcall(L, 1, 2, 0) != LUA_OK) return 1;
  lua_setglobal(L, "fuzz_json");
  lua_setglobal(L, "fuzz_request");
  lua_pop(L, 1);
  return 0;
}

/* Next field of the input: up to '\n' or the end. */
static const char *field(const uint8_t **p, const uint8_t *end, size_t *len) {
  const uint8_t *start = *p;
  const uint8_t *nl = memchr(start, '\n', (size_t)(end - start));
  const uint8_t *stop = nl ? nl : end;
  *len = (size_t)(stop - start);
  *p = nl ? nl + 1 : end;
  return (const char *)start;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *p = data, *end = data + size;
  lua_getglobal(L, "fuzz_request");
  for (int i = 0; i < 5; i++) {
    size_t len;
    const char *s = field(&p, end, &len);
    lua_pushlstring(L, s, len);
  }
  /* numbers, NaN and negatives included, from the remaining bytes */
  double t = 0;
  int64_t limit = 0;
  if (end - p >= (long)sizeof t) memcpy(&t, p, sizeof t), p += sizeof t;
  if (end - p >= (long)sizeof limit) memcpy(&limit, p, sizeof limit);
  lua_pushnumber(L, t);
  lua_pushinteger(L, limit);
  /* Argument errors (luaL_argerror) are expected for bad numbers; any
   * crash, leak or sanitizer report is what the fuzzer looks for. */
  lua_pcall(L, 7, 0, 0);
  lua_settop(L, 0);
  /* JSON refusals are return values: any error here is a finding */
  lua_getglobal(L, "fuzz_json");
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "json_decoder: %s\n", lua_tostring(L, -1));
    abort();
  }
  return 0;
}
