/* The session's connection limits, with aiohttp's semantics: `limit` counts
 * requests in flight in total and `limit_per_host` per (scheme, host, port).
 * A request that may not run waits in a FIFO of its key; when a slot frees,
 * the longest-waiting request whose key has room runs next, so one busy
 * host cannot starve another. A request reaches libcurl only when it runs:
 * libcurl's own queueing costs far more and is not FIFO across hosts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "private.h"

static uint32_t av_hash(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

static bool av_session_room(av_session *s, av_hostq *hq) {
  return (s->limit == 0 || s->in_flight < s->limit) &&
         (s->limit_per_host == 0 || hq->in_flight < s->limit_per_host);
}

static bool av_hostq_grow(av_session *s) {
  size_t n = s->nbuckets ? s->nbuckets * 2 : 16;
  av_hostq **b = calloc(n, sizeof *b);
  if (!b) return false;
  for (size_t i = 0; i < s->nbuckets; i++) {
    for (av_hostq *q = s->buckets[i], *next; q; q = next) {
      next = q->bnext;
      q->bnext = b[q->hash & (n - 1)];
      b[q->hash & (n - 1)] = q;
    }
  }
  free(s->buckets);
  s->buckets = b;
  s->nbuckets = n;
  return true;
}

/* The state of one key, created on first use; NULL on OOM. */
static av_hostq *av_hostq_get(av_session *s, const char *key) {
  uint32_t h = av_hash(key);
  if (s->nbuckets) {
    for (av_hostq *q = s->buckets[h & (s->nbuckets - 1)]; q; q = q->bnext)
      if (q->hash == h && strcmp(q->key, key) == 0) return q;
  }
  if (s->nkeys >= s->nbuckets && !av_hostq_grow(s)) return NULL;
  size_t len = strlen(key);
  av_hostq *q = calloc(1, sizeof *q + len + 1);
  if (!q) return NULL;
  memcpy(q->key, key, len + 1);
  q->hash = h;
  q->bnext = s->buckets[h & (s->nbuckets - 1)];
  s->buckets[h & (s->nbuckets - 1)] = q;
  s->nkeys++;
  return q;
}

/* Forget a key that has nothing in flight and nobody waiting. */
static void av_hostq_maybe_free(av_session *s, av_hostq *hq) {
  if (hq->in_flight > 0 || hq->head) return;
  av_hostq **p = &s->buckets[hq->hash & (s->nbuckets - 1)];
  while (*p != hq) p = &(*p)->bnext;
  *p = hq->bnext;
  s->nkeys--;
  free(hq);
}

static void av_hostq_push(av_session *s, av_hostq *hq, av_request *req) {
  req->qnext = NULL;
  req->qprev = hq->tail;
  if (hq->tail) {
    hq->tail->qnext = req;
  } else {
    hq->head = req;
    hq->wprev = NULL; /* first waiter: the key joins the waiting list */
    hq->wnext = s->waiting;
    if (s->waiting) s->waiting->wprev = hq;
    s->waiting = hq;
  }
  hq->tail = req;
}

static void av_hostq_unlink(av_session *s, av_hostq *hq, av_request *req) {
  if (req->qprev) req->qprev->qnext = req->qnext; else hq->head = req->qnext;
  if (req->qnext) req->qnext->qprev = req->qprev; else hq->tail = req->qprev;
  req->qprev = req->qnext = NULL;
  if (!hq->head) {
    if (hq->wprev) hq->wprev->wnext = hq->wnext; else s->waiting = hq->wnext;
    if (hq->wnext) hq->wnext->wprev = hq->wprev;
    hq->wprev = hq->wnext = NULL;
  }
}

/* Give req its slot and start it; on a failed start the slot is returned
 * and req forgets its key, which the caller may then free. */
static void av_session_start(av_session *s, av_request *req) {
  s->in_flight++;
  req->hq->in_flight++;
  if (!av_request_run(req)) {
    s->in_flight--;
    req->hq->in_flight--;
    req->hq = NULL;
  }
}

void av_session_acquire(av_session *s, av_request *req, const char *key) {
  av_hostq *hq = av_hostq_get(s, key);
  if (!hq) {
    av_request_fail(req, "invalid", "out of memory");
    return;
  }
  req->hq = hq;
  if (!hq->head && av_session_room(s, hq)) {
    av_session_start(s, req);
    av_hostq_maybe_free(s, hq);
    return;
  }
  req->seq = s->seq++;
  req->phase = AV_REQ_QUEUED;
  av_hostq_push(s, hq, req);
  if (req->pool_ms) av_deadline_set(&req->op, (uint64_t)req->pool_ms);
}

void av_session_unqueue(av_session *s, av_request *req) {
  av_hostq *hq = req->hq;
  av_hostq_unlink(s, hq, req);
  req->hq = NULL;
  av_hostq_maybe_free(s, hq);
}

/* Start the longest-waiting requests whose keys have room. A start that
 * fails may free its key, so the caller must not hold on to any key with
 * nothing in flight and nobody waiting across this call. */
static void av_session_wake(av_session *s) {
  while (s->waiting && (s->limit == 0 || s->in_flight < s->limit)) {
    av_hostq *best = NULL;
    for (av_hostq *q = s->waiting; q; q = q->wnext)
      if (av_session_room(s, q) && (!best || q->head->seq < best->head->seq)) best = q;
    if (!best) return;
    av_request *req = best->head;
    av_hostq_unlink(s, best, req);
    av_deadline_clear(&req->op);
    av_session_start(s, req);
    av_hostq_maybe_free(s, best);
  }
}

void av_session_release(av_session *s, av_request *req) {
  av_hostq *hq = req->hq;
  req->hq = NULL;
  s->in_flight--;
  hq->in_flight--;
  /* before waking: a waiter of the same key whose start fails frees hq */
  av_hostq_maybe_free(s, hq);
  if (!s->loop->closing) av_session_wake(s);
}

/* ------------------------------------------------------------ Lua side */

av_session *av_session_check(lua_State *L, int idx) {
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
 *              ca_file) -> session core, limit, limit_per_host
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
  av_session *s = lua_newuserdatauv(L, sizeof *s, 1);
  int idx = lua_gettop(L);
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, AV_SESSION_MT);
  s->tls_verify = tls_verify;
  if (ca_file && !(s->ca_file = strdup(ca_file))) return luaL_error(L, "out of memory");
  /* sessions with libcurl's default TLS settings share id 0 */
  s->tls_id = tls_verify && !ca_file ? 0 : ++lp->tls_ids;
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, idx, 1);
  s->loop = lp;
  s->limit = limit;
  s->limit_per_host = per_host;
  s->read_bufsize = (long)bufsize;
  if (!lua_isnoneornil(L, 4) && !av_headers_append(L, 4, &s->headers, -1)) {
    lua_pushnil(L);
    lua_pushliteral(L, "invalid");
    lua_rotate(L, -3, 2); /* nil, "invalid", message */
    return 3;
  }
  if (!av_headers_defaults(&s->headers)) return luaL_error(L, "out of memory");
  lua_pushvalue(L, idx);
  lua_pushinteger(L, limit);
  lua_pushinteger(L, per_host);
  return 3;
}

/* session:stats() -> in flight, queued, keys */
static int av_session_stats(lua_State *L) {
  av_session *s = luaL_checkudata(L, 1, AV_SESSION_MT);
  lua_Integer queued = 0;
  for (av_hostq *q = s->waiting; q; q = q->wnext)
    for (av_request *r = q->head; r; r = r->qnext) queued++;
  lua_pushinteger(L, s->in_flight);
  lua_pushinteger(L, queued);
  lua_pushinteger(L, (lua_Integer)s->nkeys);
  return 3;
}

/* session:close(): refuse new requests and fail the queued ones. Requests
 * already running finish normally: their tasks still get their answers. */
static int av_session_close(lua_State *L) {
  av_session *s = luaL_checkudata(L, 1, AV_SESSION_MT);
  if (s->closed) return 0;
  s->closed = true;
  while (s->waiting) {
    av_request *req = s->waiting->head;
    av_deadline_clear(&req->op);
    av_session_unqueue(s, req);
    av_request_fail(req, "cancelled", "session closed while the request waited for a connection slot");
  }
  return 0;
}

static void av_session_free(av_session *s) {
  for (size_t i = 0; i < s->nbuckets; i++) {
    for (av_hostq *q = s->buckets[i], *next; q; q = next) {
      next = q->bnext;
      free(q);
    }
  }
  free(s->buckets);
  s->buckets = NULL;
  s->nbuckets = s->nkeys = 0;
  curl_slist_free_all(s->headers);
  s->headers = NULL;
  free(s->origin);
  free(s->origin_key);
  free(s->ca_file);
  s->origin = s->origin_key = s->ca_file = NULL;
}

static int av_session_gc(lua_State *L) {
  av_session *s = luaL_checkudata(L, 1, AV_SESSION_MT);
  /* queued and running requests anchor their session: none are left here */
  av_session_free(s);
  return 0;
}

void av_session_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"request", av_request_new}, {"stats", av_session_stats},
      {"close", av_session_close}, {NULL, NULL}};
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
