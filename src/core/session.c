/* Sessions: the Lua binding that joins the limiter and the request
 * layer. A session core holds a limiter, the defaults its requests take
 * (headers, TLS settings, read_bufsize) and an origin cache;
 * session:request() makes a request op, and the limiter says whether it
 * runs now or waits. When a running request ends (its owner's `ended`),
 * its slot frees and the longest waiters that now fit start. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "private.h"

typedef struct av_session {
  av_request_owner owner;     /* first: a request's owner is its session */
  av_loop *loop;
  av_limiter lim;
  av_url_cache origin;        /* the last origin checked and its key */
  bool closed;
} av_session;

/* A request op made by a session: the request and its place in the limiter. */
typedef struct av_call {
  av_request req;             /* first: the op userdata is an av_request */
  av_lnode node;
} av_call;

static av_session *av_session_of(av_request *req) { return (av_session *)req->owner; }

/* Start c, which has its slot; a start that fails gives the slot back. */
static void av_session_start(av_session *s, av_call *c) {
  if (!av_request_run(&c->req)) av_limiter_release(&s->lim, &c->node);
}

/* Start the longest-waiting requests whose keys have room. */
static void av_session_wake(av_session *s) {
  av_lnode *n;
  while ((n = av_limiter_next(&s->lim))) {
    av_call *c = (av_call *)((char *)n - offsetof(av_call, node));
    av_deadline_clear(&c->req.op); /* pool */
    av_session_start(s, c);
  }
}

/* The request layer's report: a running request gave its slot up. */
static void av_session_ended(av_request *req) {
  av_session *s = av_session_of(req);
  av_limiter_release(&s->lim, &((av_call *)req)->node);
  if (!s->loop->closing) av_session_wake(s);
}

/* The op's cancel: a queued request leaves its queue, a running one stops. */
static void av_call_cancel(av_op *op) {
  av_call *c = (av_call *)op;
  if (c->node.queued) {
    av_limiter_unqueue(&av_session_of(&c->req)->lim, &c->node);
    av_request_cancelled(&c->req);
  } else if (c->req.phase == AV_REQ_RUNNING) {
    av_request_stop(&c->req);
  } else {
    av_request_cancelled(&c->req);
  }
}

/* The op's deadline: the pool timeout while queued, else the request's. */
static void av_call_expire(av_op *op) {
  av_call *c = (av_call *)op;
  if (c->node.queued) {
    av_limiter_unqueue(&av_session_of(&c->req)->lim, &c->node);
    av_request_timeout(&c->req, "pool", "no connection slot within", c->req.pool_ms);
  } else {
    av_request_expire(&c->req);
  }
}

static const av_op_vtable av_call_vt = {av_call_cancel, av_call_expire};

/* ------------------------------------------------------------ Lua side */

static av_session *av_session_check(lua_State *L, int idx) {
  av_session *s = luaL_checkudata(L, idx, AV_SESSION_MT);
  if (!s->loop || s->loop->closed) luaL_error(L, "avideo loop is closed");
  return s;
}

/* Push nil, "invalid", "<name> must be <rule>, got <value>": a session
 * option refused, for the Lua layer to raise as an error object. */
static int av_session_refuse(lua_State *L, int arg, const char *name, const char *rule) {
  const char *got = lua_type(L, arg) == LUA_TSTRING ? lua_pushfstring(L, "\"%s\"", lua_tostring(L, arg))
                                                    : luaL_tolstring(L, arg, NULL);
  lua_pushnil(L);
  lua_pushliteral(L, "invalid");
  lua_pushfstring(L, "%s must be %s, got %s", name, rule, got);
  return 3;
}

/* The whole number at arg, or dflt for nil; false if it is not one, or
 * out of [min, max]. lua_tointegerx, not a cast: a float out of range
 * (2^63, inf, NaN) must be refused, and casting it is undefined behaviour. */
static bool av_whole_arg(lua_State *L, int arg, lua_Integer dflt, lua_Integer min, lua_Integer max, lua_Integer *out) {
  if (lua_isnoneornil(L, arg)) {
    *out = dflt;
    return true;
  }
  int exact = 0;
  *out = lua_type(L, arg) == LUA_TNUMBER ? lua_tointegerx(L, arg, &exact) : 0;
  return exact && *out >= min && *out <= max;
}

/* loop:session(limit, limit_per_host, headers, read_bufsize, tls_verify,
 *              ca_file, client, jar) -> session core, limit, limit_per_host
 *                        | nil, "invalid", message
 * The one place these options are checked and their defaults set (limit
 * 100 in flight, as aiohttp's connector; no per-host limit). */
static int av_session_new(lua_State *L) {
  av_loop *lp = av_loop_check(L, 1);
  static const char whole[] = "a whole number >= 0 (0 = no limit)";
  lua_Integer limit, per_host, bufsize;
  if (!av_whole_arg(L, 2, 100, 0, LUA_MAXINTEGER, &limit)) return av_session_refuse(L, 2, "limit", whole);
  if (!av_whole_arg(L, 3, 0, 0, LUA_MAXINTEGER, &per_host))
    return av_session_refuse(L, 3, "limit_per_host", whole);
  if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TTABLE);
  /* libcurl's own bounds for its receive buffer */
  if (!av_whole_arg(L, 5, AV_DEFAULT_BUFSIZE, 1024, CURL_MAX_READ_SIZE, &bufsize)) {
    const char *rule = lua_pushfstring(L, "a whole number of bytes from 1024 to %d", CURL_MAX_READ_SIZE);
    return av_session_refuse(L, 5, "read_bufsize", rule);
  }
  bool tls_verify = lua_isnoneornil(L, 6) || lua_toboolean(L, 6);
  const char *ca_file = luaL_optstring(L, 7, NULL);
  if (!lua_isnoneornil(L, 8)) luaL_checktype(L, 8, LUA_TTABLE);
  bool jar = lua_isnoneornil(L, 9) || lua_toboolean(L, 9);
  av_session *s = lua_newuserdatauv(L, sizeof *s, 1);
  int idx = lua_gettop(L);
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, AV_SESSION_MT);
  av_transport *t = &((av_core_loop *)lp)->transport;
  s->owner.transport = t;
  s->owner.trace = &((av_core_loop *)lp)->trace;
  s->owner.trace_headers = &((av_core_loop *)lp)->trace_headers;
  s->owner.ended = av_session_ended;
  s->owner.tls.verify = tls_verify;
  if (ca_file && !(s->owner.tls.ca_file = strdup(ca_file))) return luaL_error(L, "out of memory");
  /* sessions with libcurl's default TLS settings share id 0 */
  s->owner.tls.id = tls_verify && !ca_file ? 0 : av_transport_id(t);
  if (!av_client_read(L, 8, &s->owner.client, av_transport_id(t)) || (jar && !(s->owner.jar = av_transport_jar())))
    return luaL_error(L, "out of memory");
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, idx, 1);
  s->loop = lp;
  s->lim.limit = limit;
  s->lim.limit_per_host = per_host;
  s->owner.read_bufsize = (long)bufsize;
  if (!lua_isnoneornil(L, 4) && !av_headers_append(L, 4, &s->owner.headers, -1)) {
    lua_pushnil(L);
    lua_pushliteral(L, "invalid");
    lua_rotate(L, -3, 2); /* nil, "invalid", message */
    return 3;
  }
  if (!av_headers_defaults(&s->owner.headers) ||
      !av_headers_bodyless(s->owner.headers, true, &s->owner.headers_bodyless) ||
      !av_headers_bodyless(s->owner.headers, false, &s->owner.headers_nobody))
    return luaL_error(L, "out of memory");
  lua_pushvalue(L, idx);
  lua_pushinteger(L, limit);
  lua_pushinteger(L, per_host);
  return 3;
}

/* session:request(token, method, url, headers, body, total, connect,
 *                 sock_read, pool, max_body) -> op | nil, "invalid", message */
static int av_session_request(lua_State *L) {
  av_session *s = av_session_check(L, 1);
  if (s->closed) return av_refuse(L, "session is closed");
  lua_getiuservalue(L, 1, 1); /* the loop */
  int loopidx = lua_gettop(L);
  const char *key;
  av_call *c = (av_call *)av_request_new(L, sizeof *c, s->loop, loopidx, &av_call_vt, &s->owner, &s->origin, &key);
  if (!c) return 3;
  switch (av_limiter_admit(&s->lim, &c->node, key)) {
  case AV_ADMIT_RUN:
    av_session_start(s, c);
    break;
  case AV_ADMIT_QUEUED:
    if (c->req.pool_ms) av_deadline_set(&c->req.op, (uint64_t)c->req.pool_ms);
    break;
  case AV_ADMIT_NO_MEMORY:
    av_request_fail(&c->req, "invalid", "out of memory");
    break;
  }
  return 1;
}

/* session:cookies() -> { {name, value, domain, path, expires, secure,
 * http_only}, ... }: the jar's cookies, from libcurl's Netscape lines
 * (tab-separated: domain, tailmatch, path, secure, expires, name, value;
 * "#HttpOnly_" before the domain). expires is nil for a session cookie. */
static int av_session_cookies(lua_State *L) {
  av_session *s = av_session_check(L, 1);
  lua_newtable(L);
  if (!s->owner.jar) return 1;
  struct curl_slist *lines = NULL;
  CURL *h = curl_easy_init(); /* a handle only to ask the jar: rarely called */
  if (!h || curl_easy_setopt(h, CURLOPT_SHARE, s->owner.jar) != CURLE_OK ||
      curl_easy_getinfo(h, CURLINFO_COOKIELIST, &lines) != CURLE_OK) {
    curl_easy_cleanup(h);
    return luaL_error(L, "out of memory");
  }
  int n = 0;
  for (struct curl_slist *l = lines; l; l = l->next) {
    const char *f[7], *p = l->data;
    size_t len[7];
    bool http_only = strncmp(p, "#HttpOnly_", 10) == 0;
    if (http_only) p += 10;
    int i = 0;
    for (; i < 7; i++) {
      const char *tab = i < 6 ? strchr(p, '	') : p + strlen(p);
      if (!tab) break;
      f[i] = p;
      len[i] = (size_t)(tab - p);
      p = tab + 1;
    }
    if (i < 7) continue; /* not a cookie line */
    if (len[0] && f[0][0] == '.') f[0]++, len[0]--; /* a domain cookie: the domain itself */
    lua_createtable(L, 0, 7);
    lua_pushlstring(L, f[5], len[5]);
    lua_setfield(L, -2, "name");
    lua_pushlstring(L, f[6], len[6]);
    lua_setfield(L, -2, "value");
    lua_pushlstring(L, f[0], len[0]);
    lua_setfield(L, -2, "domain");
    lua_pushlstring(L, f[2], len[2]);
    lua_setfield(L, -2, "path");
    long long expires = strtoll(f[4], NULL, 10);
    if (expires > 0 && expires <= (long long)time(NULL)) {
      lua_pop(L, 1); /* expired (Max-Age=0 deletes so): libcurl drops it at its next use */
      continue;
    }
    if (expires > 0) {
      lua_pushinteger(L, (lua_Integer)expires);
      lua_setfield(L, -2, "expires");
    }
    lua_pushboolean(L, len[3] == 4 && strncmp(f[3], "TRUE", 4) == 0);
    lua_setfield(L, -2, "secure");
    lua_pushboolean(L, http_only);
    lua_setfield(L, -2, "http_only");
    lua_rawseti(L, -2, ++n);
  }
  curl_slist_free_all(lines);
  curl_easy_cleanup(h);
  return 1;
}

/* session:clear_cookies(cookie): empty the jar; cookie (or nil) becomes
 * the line of cookies sent to every host. */
static int av_session_clear_cookies(lua_State *L) {
  av_session *s = av_session_check(L, 1);
  const char *cookie = luaL_optstring(L, 2, NULL);
  if (s->owner.jar) {
    CURL *h = curl_easy_init();
    if (!h || curl_easy_setopt(h, CURLOPT_SHARE, s->owner.jar) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_COOKIELIST, "ALL") != CURLE_OK) {
      curl_easy_cleanup(h);
      return luaL_error(L, "out of memory");
    }
    curl_easy_cleanup(h);
  }
  av_transport *t = &((av_core_loop *)s->loop)->transport;
  if (!av_client_set_cookie(&s->owner.client, cookie, av_transport_id(t))) return luaL_error(L, "out of memory");
  return 0;
}

/* session:stats() -> in flight, queued, keys */
static int av_session_stats(lua_State *L) {
  av_session *s = luaL_checkudata(L, 1, AV_SESSION_MT);
  lua_pushinteger(L, s->lim.in_flight);
  lua_pushinteger(L, (lua_Integer)s->lim.queued);
  lua_pushinteger(L, (lua_Integer)s->lim.nkeys);
  return 3;
}

/* session:close(): refuse new requests and fail the queued ones. Requests
 * already running finish normally: their tasks still get their answers. */
static int av_session_close(lua_State *L) {
  av_session *s = luaL_checkudata(L, 1, AV_SESSION_MT);
  if (s->closed) return 0;
  s->closed = true;
  av_lnode *n;
  while ((n = av_limiter_drop(&s->lim))) {
    av_call *c = (av_call *)((char *)n - offsetof(av_call, node));
    av_deadline_clear(&c->req.op);
    av_request_fail(&c->req, "cancelled", "session closed while the request waited for a connection slot");
  }
  return 0;
}

static void av_session_free(av_session *s) {
  av_limiter_free(&s->lim);
  av_client_free(&s->owner.client);
  /* the loop's handles may still use the jar (a closed loop has none) */
  av_transport_drop_jar(s->loop && !s->loop->closed ? s->owner.transport : NULL, s->owner.jar);
  s->owner.jar = NULL;
  curl_slist_free_all(s->owner.headers);
  curl_slist_free_all(s->owner.headers_bodyless);
  curl_slist_free_all(s->owner.headers_nobody);
  s->owner.headers = s->owner.headers_bodyless = s->owner.headers_nobody = NULL;
  av_url_cache_free(&s->origin);
  free(s->owner.tls.ca_file);
  s->owner.tls.ca_file = NULL;
}

static int av_session_gc(lua_State *L) {
  av_session *s = luaL_checkudata(L, 1, AV_SESSION_MT);
  /* queued and running requests anchor their session: none are left here */
  av_session_free(s);
  return 0;
}

void av_session_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"request", av_session_request}, {"stats", av_session_stats},
      {"close", av_session_close}, {"cookies", av_session_cookies},
      {"clear_cookies", av_session_clear_cookies}, {NULL, NULL}};
  luaL_newmetatable(L, AV_SESSION_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, av_session_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_getmetatable(L, AV_LOOP_MT);
  lua_getfield(L, -1, "__index");
  lua_pushcfunction(L, av_session_new);
  lua_setfield(L, -2, "session");
  lua_pop(L, 2);
}
