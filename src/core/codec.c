/* The value codec of run_in_thread: Lua values to flat bytes and back,
 * so that arguments and results cross between Lua states (and threads)
 * without either state touching the other. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "private.h"

#define AV_COPY_DEPTH 100 /* nesting levels a copied table may have */
/* Tables one copy may hold. A table reachable twice is copied twice (the
 * copy is a tree), so a few shared levels ({t, t} forty deep) would be
 * 2^40 tables: the loop would stop for good and memory run out. */
#define AV_COPY_TABLES 1000000

/* ------------------------------------------------------------- encoding
 * A value is a tag byte and its payload in native layout (both ends are one
 * process): integers and floats raw, so integer/float and NaN survive;
 * strings as a size_t length and the bytes; tables as two size_t counts
 * (positive integer keys, all pairs), patched in after the walk, then
 * key, value, key, value... */
enum {
  AV_T_NIL = 'n',
  AV_T_FALSE = 'f',
  AV_T_TRUE = 't',
  AV_T_INT = 'i',
  AV_T_FLOAT = 'd',
  AV_T_STRING = 's',
  AV_T_LIGHT = 'p',
  AV_T_TABLE = 'T'
};

/* Record why the copy stopped; always false. */
static bool av_copy_fail(av_copy *c, const char *fmt, ...) {
  int n = snprintf(c->msg, sizeof c->msg, "%s #%d%s: ", c->what, c->pos, c->path);
  if (n < 0 || (size_t)n >= sizeof c->msg) return false;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->msg + n, sizeof c->msg - (size_t)n, fmt, ap);
  va_end(ap);
  return false;
}

static bool av_copy_put(av_copy *c, const void *p, size_t n) {
  if (av_buf_append(c->out, p, n)) return true;
  c->oom = true;
  return av_copy_fail(c, "out of memory");
}

static bool av_copy_tag(av_copy *c, char tag) { return av_copy_put(c, &tag, 1); }

/* Append the key at idx to the path, Lua-style; "..." once it is full. */
static void av_copy_path_push(av_copy *c, int idx) {
  lua_State *L = c->L;
  size_t room = sizeof c->path - c->plen;
  char *p = c->path + c->plen;
  int n;
  if (lua_type(L, idx) == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    static const char word[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789";
    bool ident = len > 0 && len <= 40 && strspn(s, word) == len && !(s[0] >= '0' && s[0] <= '9');
    if (ident)
      n = snprintf(p, room, ".%s", s);
    else
      n = snprintf(p, room, "[\"%.*s%s\"]", len > 24 ? 24 : (int)len, s, len > 24 ? "..." : "");
  } else if (lua_isinteger(L, idx)) {
    n = snprintf(p, room, "[%lld]", (long long)lua_tointeger(L, idx));
  } else if (lua_type(L, idx) == LUA_TNUMBER) {
    n = snprintf(p, room, "[%.14g]", (double)lua_tonumber(L, idx));
  } else if (lua_type(L, idx) == LUA_TBOOLEAN) {
    n = snprintf(p, room, "[%s]", lua_toboolean(L, idx) ? "true" : "false");
  } else {
    n = snprintf(p, room, "[<%s>]", luaL_typename(L, idx));
  }
  if (n < 0 || (size_t)n >= room) { /* full: end it with "..." and add no more */
    memcpy(c->path + sizeof c->path - 4, "...", 4);
    c->plen = sizeof c->path - 1;
  } else {
    c->plen += (size_t)n;
  }
}

static bool av_copy_value(av_copy *c, int idx, int depth);

static bool av_copy_table(av_copy *c, int idx, int depth) {
  lua_State *L = c->L;
  if (lua_getmetatable(L, idx)) {
    lua_pop(L, 1);
    return av_copy_fail(c, "a table with a metatable cannot be copied %s (only plain tables)", c->where);
  }
  if (depth >= AV_COPY_DEPTH)
    return av_copy_fail(c, "tables nested more than %d levels deep cannot be copied", AV_COPY_DEPTH);
  if (++c->tables > AV_COPY_TABLES)
    return av_copy_fail(c, "more than %d tables cannot be copied (a table found in several places counts each time)",
                        AV_COPY_TABLES);
  if (!lua_checkstack(L, 4)) return av_copy_fail(c, "Lua stack overflow");
  lua_pushvalue(L, idx);
  if (lua_rawget(L, c->seen) != LUA_TNIL) {
    lua_pop(L, 1);
    return av_copy_fail(c, "a table that contains itself (a cycle) cannot be copied");
  }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushboolean(L, 1);
  lua_rawset(L, c->seen);

  size_t counts[2] = {0, 0}; /* positive integer keys, all pairs */
  size_t at = c->out->len + 1;
  if (!av_copy_tag(c, AV_T_TABLE) || !av_copy_put(c, counts, sizeof counts)) return false;
  size_t plen = c->plen;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int k = lua_gettop(L) - 1;
    av_copy_path_push(c, k);
    int kt = lua_type(L, k);
    if (kt != LUA_TSTRING && kt != LUA_TNUMBER && kt != LUA_TBOOLEAN) {
      av_copy_fail(c, "a %s key cannot be copied (keys must be booleans, numbers or strings)", lua_typename(L, kt));
      lua_pop(L, 2);
      return false;
    }
    if (!av_copy_value(c, k, depth + 1) || !av_copy_value(c, k + 1, depth + 1)) {
      lua_pop(L, 2);
      return false;
    }
    if (lua_isinteger(L, k) && lua_tointeger(L, k) > 0) counts[0]++;
    counts[1]++;
    c->plen = plen;
    c->path[plen] = '\0';
    lua_pop(L, 1);
  }
  memcpy(c->out->data + at, counts, sizeof counts);
  lua_pushvalue(L, idx);
  lua_pushnil(L);
  lua_rawset(L, c->seen);
  return true;
}

/* Encode the value at idx (absolute) into c->out; false with c->msg set
 * when it cannot be copied. Raises only on Lua memory errors. */
static bool av_copy_value(av_copy *c, int idx, int depth) {
  lua_State *L = c->L;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    return av_copy_tag(c, AV_T_NIL);
  case LUA_TBOOLEAN:
    return av_copy_tag(c, lua_toboolean(L, idx) ? AV_T_TRUE : AV_T_FALSE);
  case LUA_TNUMBER:
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx)) {
      lua_Integer i = lua_tointeger(L, idx);
      return av_copy_tag(c, AV_T_INT) && av_copy_put(c, &i, sizeof i);
    }
#endif
    { /* before 5.3 every number: compat's "integer" would turn -0.0 into 0 */
      lua_Number n = lua_tonumber(L, idx);
      return av_copy_tag(c, AV_T_FLOAT) && av_copy_put(c, &n, sizeof n);
    }
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    return av_copy_tag(c, AV_T_STRING) && av_copy_put(c, &len, sizeof len) && av_copy_put(c, s, len);
  }
  case LUA_TTABLE:
    return av_copy_table(c, idx, depth);
  case LUA_TLIGHTUSERDATA: {
    /* a plain pointer, the same value in every state of the process:
     * json.null (cjson's NULL) is one, so decoded JSON crosses whole */
    void *p = lua_touserdata(L, idx);
    return av_copy_tag(c, AV_T_LIGHT) && av_copy_put(c, &p, sizeof p);
  }
  default:
    return av_copy_fail(c, "a %s cannot be copied %s (only nil, booleans, numbers, strings, plain tables and light userdata such as json.null can)",
                        luaL_typename(L, idx), c->where);
  }
}

/* Encode the values at first..last into out, numbering them from pos;
 * false with c->msg set on the first that cannot be copied. */
bool av_copy_values(av_copy *c, lua_State *L, av_buf *out, int first, int last) {
  c->L = L;
  c->out = out;
  c->oom = false;
  c->tables = 0;
  lua_newtable(L);
  c->seen = lua_gettop(L);
  for (int i = first; i <= last; i++, c->pos++) {
    c->plen = 0;
    c->path[0] = '\0';
    if (!av_copy_value(c, i, 0)) {
      lua_pop(L, 1);
      return false;
    }
  }
  lua_pop(L, 1);
  return true;
}

/* ------------------------------------------------------------- decoding
 * Only ever reads what av_copy_value wrote, so it trusts the layout. */

static void av_reader_take(av_reader *r, void *dst, size_t n) {
  memcpy(dst, r->p, n);
  r->p += n;
}

/* Push the next encoded value; raises only on Lua memory errors. */
void av_value_push(lua_State *L, av_reader *r) {
  char tag = *r->p++;
  switch (tag) {
  case AV_T_NIL:
    lua_pushnil(L);
    break;
  case AV_T_FALSE:
  case AV_T_TRUE:
    lua_pushboolean(L, tag == AV_T_TRUE);
    break;
  case AV_T_INT: {
    lua_Integer i;
    av_reader_take(r, &i, sizeof i);
    lua_pushinteger(L, i);
    break;
  }
  case AV_T_FLOAT: {
    lua_Number n;
    av_reader_take(r, &n, sizeof n);
    lua_pushnumber(L, n);
    break;
  }
  case AV_T_STRING: {
    size_t len;
    av_reader_take(r, &len, sizeof len);
    lua_pushlstring(L, r->p, len);
    r->p += len;
    break;
  }
  case AV_T_LIGHT: {
    void *p;
    av_reader_take(r, &p, sizeof p);
    lua_pushlightuserdata(L, p);
    break;
  }
  default: { /* AV_T_TABLE */
    size_t counts[2];
    av_reader_take(r, counts, sizeof counts);
    luaL_checkstack(L, 3, "copied table nested too deeply");
    size_t nrec = counts[1] - counts[0];
    lua_createtable(L, counts[0] < INT32_MAX ? (int)counts[0] : 0, nrec < INT32_MAX ? (int)nrec : 0);
    for (size_t i = 0; i < counts[1]; i++) {
      av_value_push(L, r);
      av_value_push(L, r);
      lua_rawset(L, -3);
    }
    break;
  }
  }
}
