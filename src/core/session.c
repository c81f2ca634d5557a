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

/* A request op made by a session: the request and its place in the limiter. */
typedef struct av_call {
  av_request req;             /* first: the op userdata is an av_request */
  av_lnode node;
  uint64_t pool_at;           /* loop ms its pool timeout ends, 0 = none */
} av_call;

typedef struct av_session {
  av_request_owner owner;     /* first: a request's owner is its session */
  av_loop *loop;
  av_limiter lim;
  av_url_cache origin;        /* the last origin checked and its key */
  /* The waiter whose op deadline is also the limiter's clock (a rate's
   * next token, a Retry-After pause): the loop's deadline heap wakes the
   * queue, no timer of our own and no Lua. NULL: no waiter waits for time. */
  av_call *alarm;
  uint32_t number;            /* its loop's nth session: a trace tells sessions' limits apart */
  bool closed;
} av_session;

static av_session *av_session_of(av_request *req) { return (av_session *)req->owner; }

static av_call *av_call_of(av_lnode *n) { return (av_call *)((char *)n - offsetof(av_call, node)); }

/* Give queued c back the deadline of its pool timeout alone. */
static void av_call_pool_deadline(av_call *c) {
  if (!c->pool_at) {
    av_deadline_clear(&c->req.op);
    return;
  }
  uint64_t now = av_loop_now_ms(c->req.op.loop);
  av_deadline_set(&c->req.op, c->pool_at > now ? c->pool_at - now : 0);
}

/* Put the limiter's clock on the op deadline of the waiter it holds back
 * the soonest (the earlier of that and its pool timeout). */
static void av_session_arm(av_session *s) {
  uint64_t now = uv_hrtime(), at = 0;
  av_lnode *n = av_limiter_alarm(&s->lim, now, &at);
  av_call *c = n ? av_call_of(n) : NULL;
  if (s->alarm && s->alarm != c) av_call_pool_deadline(s->alarm);
  s->alarm = c;
  if (!c) return;
  uint64_t ms = (at - now + 999999) / 1000000; /* rounded up: never early */
  uint64_t now_ms = av_loop_now_ms(s->loop);
  if (c->pool_at && c->pool_at < now_ms + ms) ms = c->pool_at > now_ms ? c->pool_at - now_ms : 0;
  av_deadline_set(&c->req.op, ms);
}

/* c leaves the queue (started, cancelled, timed out, dropped). */
static void av_session_unalarm(av_session *s, av_call *c) {
  if (s->alarm == c) s->alarm = NULL;
}

/* Start c, which has its slot; a start that fails gives the slot back,
 * and its rate tokens: nothing was sent. */
static void av_session_start(av_session *s, av_call *c) {
  if (!av_request_run(&c->req)) av_limiter_unstart(&s->lim, &c->node);
}

/* Start the longest-waiting requests whose keys have room, then set the
 * clock for those only time holds back. */
static void av_session_wake(av_session *s) {
  av_lnode *n;
  while ((n = av_limiter_next(&s->lim, uv_hrtime()))) {
    av_call *c = av_call_of(n);
    av_session_unalarm(s, c);
    av_deadline_clear(&c->req.op); /* pool */
    av_session_start(s, c);
  }
  av_session_arm(s);
}

/* What a request's end tells an adaptive limit: its latency, or that the
 * server had too much (429, 503, a timeout, a reset), or nothing. */
static enum av_outcome av_session_outcome(const av_request *req, double *pause) {
  *pause = -1;
  /* a stream its reader closed or dropped early: no whole answer */
  if (req->closed) return AV_OUT_NONE;
  if (req->err_kind) {
    bool reset = req->err_phase && strcmp(req->err_phase, "reset") == 0;
    bool timeout = strcmp(req->err_kind, "timeout") == 0;
    /* a timeout that was mostly waiting for a slow reader is the reader's */
    if (timeout && req->ended > req->started && req->paused_ns * 2 > req->ended - req->started) return AV_OUT_NONE;
    return timeout || reset ? AV_OUT_DROP : AV_OUT_NONE;
  }
  if (req->status == 429 || req->status == 503) {
    *pause = av_request_retry_after(req);
    return AV_OUT_DROP;
  }
  /* a latency only from a success: a 404 or a 422 answered at once says
   * nothing of the server's queue, and as the best seen it would make
   * every real answer look slow */
  return req->status >= 200 && req->status < 300 ? AV_OUT_SAMPLE : AV_OUT_NONE;
}

/* The server's part of a request's time (s): from its slot to its end,
 * less the time its transfer was paused for a slow reader of a stream
 * (the reader's pace is no server's queue). */
static double av_session_latency(const av_request *req) {
  uint64_t took = req->ended > req->started ? req->ended - req->started : 0;
  return took > req->paused_ns ? (double)(took - req->paused_ns) / 1e9 : 0;
}

typedef struct av_session_tracing {
  av_trace *trace;
  uint32_t session;
} av_session_tracing;

static void av_session_trace_limit(void *ud, const char *key, lua_Integer limit) {
  av_session_tracing *t = ud;
  av_trace_limit(t->trace, t->session, key, limit, uv_hrtime());
}

/* While a trace is on, record the limits that moved: n's key's (NULL:
 * every key's) and the total. Off, one pointer test. */
static void av_session_trace_limits(av_session *s, const av_lnode *n) {
  av_trace *trace = *s->owner.trace;
  if (!trace) return;
  av_session_tracing t = {trace, s->number};
  av_limiter_show(&s->lim, n, trace->epoch, av_session_trace_limit, &t);
}

/* The request layer's report: a running request gave its slot up. */
static void av_session_ended(av_request *req) {
  av_session *s = av_session_of(req);
  av_lnode *node = &((av_call *)req)->node;
  double pause;
  enum av_outcome out = av_session_outcome(req, &pause);
  double latency = av_session_latency(req);
  av_limiter_report(&s->lim, node, out, latency, req->started, pause, uv_hrtime());
  av_session_trace_limits(s, node);
  av_limiter_release(&s->lim, node);
  if (!s->loop->closing) av_session_wake(s);
}

/* A queued c leaves its queue without a slot. */
static void av_session_unqueue(av_session *s, av_call *c) {
  av_limiter_unqueue(&s->lim, &c->node);
  if (s->alarm == c) {
    s->alarm = NULL;
    if (!s->loop->closing) av_session_arm(s);
  }
}

/* The op's cancel: a queued request leaves its queue, a running one stops. */
static void av_call_cancel(av_op *op) {
  av_call *c = (av_call *)op;
  if (c->node.queued) {
    av_session_unqueue(av_session_of(&c->req), c);
    av_request_cancelled(&c->req);
  } else if (c->req.phase == AV_REQ_RUNNING) {
    av_request_stop(&c->req);
  } else {
    av_request_cancelled(&c->req);
  }
}

/* The op's deadline: while queued, the pool timeout or the limiter's
 * clock; else the request's. */
static void av_call_expire(av_op *op) {
  av_call *c = (av_call *)op;
  av_session *s = av_session_of(&c->req);
  if (!c->node.queued) {
    av_request_expire(&c->req);
  } else if (c->pool_at && av_loop_now_ms(s->loop) >= c->pool_at) {
    av_session_unqueue(s, c);
    av_request_timeout(&c->req, "pool", "no connection slot within", c->req.pool_ms);
  } else {
    s->alarm = NULL; /* its deadline is spent */
    av_call_pool_deadline(c);
    av_session_wake(s);
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

/* nil, "invalid", "<name> <field> must be <rule>, got <value at idx>". */
static int av_field_refuse(lua_State *L, int idx, const char *name, const char *field, const char *rule) {
  idx = lua_absindex(L, idx);
  const char *opt = lua_pushfstring(L, "%s %s", name, field);
  return av_session_refuse(L, idx, opt, rule);
}

/* A table's keys are all in `known` (a NULL-ended list; "1" means [1]):
 * else push the refusal and return false. */
static bool av_known_fields(lua_State *L, int t, const char *name, const char *const *known, const char *list,
                            int *nret) {
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    bool ok = false;
    const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    bool one = lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) == 1;
    for (const char *const *f = known; *f && !ok; f++) ok = (k && strcmp(k, *f) == 0) || (one && strcmp(*f, "1") == 0);
    if (!ok) {
      const char *got = luaL_tolstring(L, -1, NULL);
      lua_pushnil(L);
      lua_pushliteral(L, "invalid");
      lua_pushfstring(L, "unknown %s field '%s' (%s)", name, got, list);
      *nret = 3;
      return false;
    }
  }
  return true;
}

/* The adaptive defaults: a few in flight to start, up to 200. */
#define AV_AUTO_INITIAL 4
#define AV_AUTO_MIN 1
#define AV_AUTO_MAX 200
/* The most min, max and initial may be: the limit is a double, cast back
 * to an integer, which must be defined (2^63 as a double is not). */
#define AV_AUTO_CAP 1000000

/* `limit` or `limit_per_host` at arg: a whole number >= 0 (dflt for nil),
 * "auto", or { initial, min, max, algorithm }. Returns 0 when it is good,
 * else the number of values pushed (nil, "invalid", message). */
static int av_limit_arg(lua_State *L, int arg, const char *name, lua_Integer dflt, lua_Integer *fixed,
                        av_adapt_conf *conf) {
  static const char rule[] = "a whole number >= 0 (0 = no limit), \"auto\" or a table { initial, min, max, algorithm }";
  *conf = (av_adapt_conf){.initial = AV_AUTO_INITIAL, .min = AV_AUTO_MIN, .max = AV_AUTO_MAX};
  *fixed = 0;
  int type = lua_type(L, arg);
  if (type == LUA_TSTRING) {
    if (strcmp(lua_tostring(L, arg), "auto") != 0) return av_session_refuse(L, arg, name, rule);
    conf->on = true;
    return 0;
  }
  if (type != LUA_TTABLE) return av_whole_arg(L, arg, dflt, 0, LUA_MAXINTEGER, fixed) ? 0 : av_session_refuse(L, arg, name, rule);
  static const char *const known[] = {"initial", "min", "max", "algorithm", NULL};
  int nret = 0;
  if (!av_known_fields(L, arg, name, known, "initial, min, max, algorithm", &nret)) return nret;
  lua_Integer min, max, initial;
  lua_getfield(L, arg, "min");
  if (!av_whole_arg(L, -1, AV_AUTO_MIN, 1, AV_AUTO_CAP, &min))
    return av_field_refuse(L, -1, name, "min", "a whole number from 1 to 1000000");
  lua_getfield(L, arg, "max");
  int at = lua_gettop(L); /* the value, before the rule is pushed */
  if (!av_whole_arg(L, at, min > AV_AUTO_MAX ? min : AV_AUTO_MAX, 1, AV_AUTO_CAP, &max) || max < min)
    return av_field_refuse(L, at, name, "max", lua_pushfstring(L, "a whole number from min (%I) to 1000000", min));
  lua_getfield(L, arg, "initial");
  at = lua_gettop(L);
  lua_Integer start = AV_AUTO_INITIAL < min ? min : AV_AUTO_INITIAL > max ? max : AV_AUTO_INITIAL;
  if (!av_whole_arg(L, at, start, min, max, &initial))
    return av_field_refuse(L, at, name, "initial",
                           lua_pushfstring(L, "a whole number from min to max (%I to %I)", min, max));
  lua_pop(L, 3);
  lua_getfield(L, arg, "algorithm");
  const char *algo = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  if (lua_isnil(L, -1) || (algo && strcmp(algo, "gradient") == 0)) conf->algorithm = AV_ALGO_GRADIENT;
  else if (algo && strcmp(algo, "aimd") == 0) conf->algorithm = AV_ALGO_AIMD;
  else return av_field_refuse(L, -1, name, "algorithm", "\"gradient\" or \"aimd\"");
  lua_pop(L, 1);
  conf->on = true;
  conf->initial = (double)initial;
  conf->min = (double)min;
  conf->max = (double)max;
  return 0;
}

/* `rate` or `rate_per_host` at arg: nil, or { n, per = seconds } (per
 * defaults to 1). Returns 0 when it is good, else the values pushed. */
static int av_rate_arg(lua_State *L, int arg, const char *name, av_rate *rate) {
  *rate = (av_rate){0};
  if (lua_isnoneornil(L, arg)) return 0;
  if (!lua_istable(L, arg)) return av_session_refuse(L, arg, name, "a table { n, per = seconds }");
  static const char *const known[] = {"1", "per", NULL};
  int nret = 0;
  if (!av_known_fields(L, arg, name, known, "n as [1], per", &nret)) return nret;
  lua_Integer n;
  lua_geti(L, arg, 1);
  if (lua_isnil(L, -1) || !av_whole_arg(L, -1, 0, 1, LUA_MAXINTEGER, &n))
    return av_field_refuse(L, -1, name, "n ([1])", "a whole number >= 1");
  lua_pop(L, 1);
  lua_getfield(L, arg, "per");
  double per = lua_isnil(L, -1) ? 1.0 : lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
  /* a year at most: beyond, the arithmetic in ns would overflow */
  if (!(per > 0 && per <= 31536000)) return av_field_refuse(L, -1, name, "per", "a number of seconds > 0");
  lua_pop(L, 1);
  rate->n = (double)n;
  rate->per = per;
  return 0;
}

/* The value a limit option reads back as: its number, or "auto". */
static void av_push_limit(lua_State *L, lua_Integer fixed, const av_adapt_conf *conf) {
  if (conf->on) lua_pushliteral(L, "auto");
  else lua_pushinteger(L, fixed);
}

/* loop:session(limit, limit_per_host, headers, read_bufsize, tls_verify,
 *              ca_file, client, jar, rate, rate_per_host)
 *   -> session core, limit, limit_per_host | nil, "invalid", message
 * The one place these options are checked and their defaults set (limit
 * 100 in flight, as aiohttp's connector; no per-host limit; no rate). */
static int av_session_new(lua_State *L) {
  av_loop *lp = av_loop_check(L, 1);
  lua_Integer limit, per_host, bufsize;
  av_adapt_conf auto_total, auto_host;
  av_rate rate, rate_per_host;
  int nret;
  if ((nret = av_limit_arg(L, 2, "limit", 100, &limit, &auto_total))) return nret;
  if ((nret = av_limit_arg(L, 3, "limit_per_host", 0, &per_host, &auto_host))) return nret;
  if ((nret = av_rate_arg(L, 10, "rate", &rate))) return nret;
  if ((nret = av_rate_arg(L, 11, "rate_per_host", &rate_per_host))) return nret;
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
  s->number = ++lp->sessions_made;
  s->lim.limit = limit;
  s->lim.limit_per_host = per_host;
  s->lim.auto_total = auto_total;
  s->lim.auto_host = auto_host;
  s->lim.rate = rate;
  s->lim.rate_per_host = rate_per_host;
  s->lim.total_given = !lua_isnoneornil(L, 2);
  av_limiter_init(&s->lim);
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
  av_push_limit(L, limit, &auto_total);
  av_push_limit(L, per_host, &auto_host);
  return 3;
}

/* session:set_limit(which, n) -> true | nil, "invalid", message: which is
 * "limit" or "limit_per_host"; n a whole number >= 0 (0 = none) makes it
 * fixed from now on. Waiters that now fit start at once. */
static int av_session_set_limit(lua_State *L) {
  av_session *s = av_session_check(L, 1);
  const char *which = luaL_checkstring(L, 2);
  bool host = strcmp(which, "limit_per_host") == 0;
  if (!host && strcmp(which, "limit") != 0) return luaL_argerror(L, 2, "\"limit\" or \"limit_per_host\"");
  lua_Integer n;
  if (lua_isnoneornil(L, 3) || !av_whole_arg(L, 3, 0, 0, LUA_MAXINTEGER, &n))
    return av_session_refuse(L, 3, which, "a whole number >= 0 (0 = no limit)");
  if (host) {
    s->lim.limit_per_host = n;
    s->lim.auto_host.on = false;
    s->lim.host_set = true;
  } else {
    s->lim.limit = n;
    s->lim.auto_total.on = false;
    s->lim.total_set = s->lim.total_given = true;
  }
  av_session_trace_limits(s, NULL);
  if (!s->closed && !s->loop->closing) av_session_wake(s);
  lua_pushboolean(L, 1);
  return 1;
}

/* Add one key's state to the table on top (session:limits()). */
static void av_session_limit_row(void *ud, const av_lkey_info *k) {
  lua_State *L = ud;
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, k->limit);
  lua_setfield(L, -2, "limit");
  lua_pushinteger(L, k->in_flight);
  lua_setfield(L, -2, "in_flight");
  lua_pushinteger(L, (lua_Integer)k->queued);
  lua_setfield(L, -2, "queued");
  if (k->latency_min > 0) {
    lua_pushnumber(L, k->latency_min);
    lua_setfield(L, -2, "latency_min");
  }
  if (k->latency_recent > 0) {
    lua_pushnumber(L, k->latency_recent);
    lua_setfield(L, -2, "latency_recent");
  }
  lua_setfield(L, -2, k->name ? k->name : "total");
}

/* session:limits() -> { ["scheme://host:port"] = { limit, in_flight,
 * queued, latency_min, latency_recent }, ... } for the hosts the limiter
 * tracks; latencies in seconds, absent until measured. With `limit` given
 * (or set, or "auto"), also total = { limit, in_flight, queued }: no host
 * key is without "://". */
static int av_session_limits(lua_State *L) {
  av_session *s = luaL_checkudata(L, 1, AV_SESSION_MT);
  lua_newtable(L);
  av_limiter_each(&s->lim, av_session_limit_row, L);
  return 1;
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
  enum av_admit admit = av_limiter_admit(&s->lim, &c->node, key, uv_hrtime());
  if (admit != AV_ADMIT_NO_MEMORY) av_session_trace_limits(s, &c->node); /* a new host's first */
  switch (admit) {
  case AV_ADMIT_RUN:
    av_session_start(s, c);
    break;
  case AV_ADMIT_QUEUED:
    if (c->req.pool_ms) {
      c->pool_at = av_loop_now_ms(s->loop) + (uint64_t)c->req.pool_ms;
      av_deadline_set(&c->req.op, (uint64_t)c->req.pool_ms);
    }
    /* it may be one a clock holds back, or one queued behind older
     * waiters of a shared rate: the oldest that fit go now, in order */
    av_session_wake(s);
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
  s->alarm = NULL;
  while ((n = av_limiter_drop(&s->lim))) {
    av_call *c = av_call_of(n);
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
      {"clear_cookies", av_session_clear_cookies}, {"set_limit", av_session_set_limit},
      {"limits", av_session_limits}, {NULL, NULL}};
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
