/* Request ops: one HTTP transfer, from session:request() through the
 * session's limiter and libcurl to :result(). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "private.h"

static void av_request_cancel(av_op *op);
static void av_request_expire(av_op *op);
static const av_op_vtable av_request_vt = {av_request_cancel, av_request_expire};

/* ------------------------------------------------------------ finishing */

void av_request_fail(av_request *req, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *msg = NULL;
  if (vasprintf(&msg, fmt, ap) < 0) msg = NULL;
  va_end(ap);
  free(req->err_message);
  req->err_message = msg;
  req->err_kind = kind;
  req->phase = AV_REQ_DONE;
  av_op_finish(&req->op);
}

/* Stop the transfer and give the easy handle back to the pool. */
static void av_request_detach(av_request *req) {
  av_loop *lp = req->op.loop;
  av_curl_remove(lp, req->easy->h);
  av_easy_put(lp, req->easy);
  req->easy = NULL;
}

static double av_seconds(long ms) { return (double)ms / 1000.0; }

/* Which clock ran out: connect while the current hop had no connection
 * yet, else total. Not CURLINFO_CONNECT_TIME_T: it is 0 on a reused
 * connection. A hop libcurl follows itself runs PREREQFUNCTION once more:
 * the current one is connected when the calls outnumber its redirects. */
void av_request_timed_out(av_request *req) {
  long redirects = 0;
  curl_easy_getinfo(req->easy->h, CURLINFO_REDIRECT_COUNT, &redirects);
  bool connected = req->prereqs > redirects;
  bool connect_phase =
      !connected && req->connect_ms && (!req->hop_total_ms || req->connect_ms <= req->hop_total_ms);
  if (connect_phase)
    av_request_fail(req, "timeout", "connect timeout: no connection within %g s", av_seconds(req->connect_ms));
  else
    av_request_fail(req, "timeout", "total timeout: request not done within %g s", av_seconds(req->total_ms));
}

/* A socket of the transfer could not be watched (see av_curl_watch_failed). */
static void av_request_fail_sock(av_request *req) {
  av_request_fail(req, "protocol", "the connection's socket could not be watched: %s", uv_strerror(req->sock_error));
}

void av_request_done(av_request *req, CURLcode code) {
  CURL *h = req->easy->h;
  av_session *s = req->session;
  if (code == CURLE_OK && req->core_follows && av_redirect_follow(req)) return; /* the next hop runs */
  if (req->phase == AV_REQ_DONE) {
    /* a redirect refused by av_redirect_follow: req already has its error */
  } else if (code == CURLE_OK) {
    long redirects = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &req->status);
    curl_easy_getinfo(h, CURLINFO_REDIRECT_COUNT, &redirects);
    if (redirects > 0) {
      char *url = NULL, *method = NULL;
      curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &url);
      free(req->effective_url);
      req->effective_url = url ? strdup(url) : NULL;
      /* the final request's method: libcurl turns a POST into a GET */
      curl_easy_getinfo(h, CURLINFO_EFFECTIVE_METHOD, &method);
      if (method && strlen(method) < sizeof req->method) strcpy(req->method, method);
    }
    req->phase = AV_REQ_DONE;
    av_op_finish(&req->op);
  } else if (req->too_large) {
    av_request_fail(req, "protocol", "response body larger than max_body_size (%zu bytes)", req->max_body);
  } else if (req->out_of_memory) {
    av_request_fail(req, "protocol", "out of memory while reading the response");
  } else if (req->sock_error) {
    av_request_fail_sock(req);
  } else if (code == CURLE_OPERATION_TIMEDOUT) {
    av_request_timed_out(req);
  } else {
    const char *detail = req->easy->errbuf[0] ? req->easy->errbuf : curl_easy_strerror(code);
    long redirects = 0;
    curl_easy_getinfo(h, CURLINFO_REDIRECT_COUNT, &redirects);
    /* a URL libcurl refused before any redirect is the caller's */
    bool bad_url = code == CURLE_URL_MALFORMAT && redirects == 0 && req->redirects == 0;
    av_request_fail(req, bad_url ? "invalid" : av_error_kind(code), "%s", detail);
  }
  av_request_detach(req);
  av_session_release(s, req);
}

static void av_request_cancel(av_op *op) {
  av_request *req = (av_request *)op;
  if (req->phase == AV_REQ_QUEUED) {
    av_session_unqueue(req->session, req);
  } else if (req->phase == AV_REQ_RUNNING) {
    av_request_detach(req);
    av_session_release(req->session, req);
  }
  req->phase = AV_REQ_DONE;
  req->err_kind = "cancelled";
}

/* A deadline passed: the pool timeout while queued; while running, a
 * socket that could not be watched (due at once) or sock_read. */
static void av_request_expire(av_op *op) {
  av_request *req = (av_request *)op;
  if (req->phase == AV_REQ_QUEUED) {
    av_session_unqueue(req->session, req);
    av_request_fail(req, "timeout", "pool timeout: no connection slot within %g s", av_seconds(req->pool_ms));
    return;
  }
  if (req->phase != AV_REQ_RUNNING) return;
  if (req->sock_error) {
    av_request_fail_sock(req);
  } else {
    uint64_t now = uv_now(&op->loop->uv);
    uint64_t due = req->last_read + (uint64_t)req->sock_read_ms;
    if (due > now) { /* data arrived since the deadline was set */
      av_deadline_set(op, due - now);
      return;
    }
    av_request_fail(req, "timeout", "sock_read timeout: no data for %g s", av_seconds(req->sock_read_ms));
  }
  av_request_detach(req);
  av_session_release(req->session, req);
}

/* ------------------------------------------------------ libcurl callbacks */

static void av_request_touch(av_request *req) {
  if (req->sock_read_ms) req->last_read = uv_now(&req->op.loop->uv);
}

static size_t av_request_write_cb(char *p, size_t size, size_t n, void *ud) {
  av_request *req = ud;
  size_t len = size * n;
  av_request_touch(req);
  if (req->max_body && req->resp_body.len + len > req->max_body) {
    req->too_large = true;
    return 0;
  }
  if (!av_buf_append(&req->resp_body, p, len)) {
    req->out_of_memory = true;
    return 0;
  }
  return len;
}

static size_t av_request_header_cb(char *p, size_t size, size_t n, void *ud) {
  av_request *req = ud;
  size_t len = size * n;
  av_request_touch(req);
  /* A new status line starts a new response (a redirect, a 1xx): keep only
   * the last one's headers and body. */
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
    req->resp_headers.len = 0;
    req->resp_body.len = 0;
  }
  if (req->resp_headers.len + len > 1024 * 1024) {
    req->too_large = true;
    return 0;
  }
  if (!av_buf_append(&req->resp_headers, p, len)) {
    req->out_of_memory = true;
    return 0;
  }
  return len;
}

/* Connected (or reusing a connection), about to send: the connect clock
 * is done with, the sock_read clock starts. */
static int av_request_prereq_cb(void *ud, char *ip, char *local_ip, int port, int local_port) {
  av_request *req = ud;
  req->prereqs++;
  /* a failed socket's deadline is due now: keep it */
  if (!req->sock_read_ms || req->sock_error) return CURL_PREREQFUNC_OK;
  av_request_touch(req);
  av_deadline_set(&req->op, (uint64_t)req->sock_read_ms);
  return CURL_PREREQFUNC_OK;
}

/* ------------------------------------------------------------ running */

/* Options every request sets the same way: once per easy handle. */
static void av_request_easy_defaults(av_easy *e) {
  CURL *h = e->h;
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, e->errbuf);
  /* Only http and https, on the first request and on every redirect. */
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
  /* HTTP/2 over TLS only: libcurl 7.88 cannot reuse h2c connections. */
  curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
  /* Decode what the server compressed; the Accept-Encoding header itself
   * comes with the session's default headers (see av_headers_defaults). */
  curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, av_request_write_cb);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, av_request_header_cb);
  curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, av_request_prereq_cb);
}

/* The method and body, undoing whatever the handle's last request set. */
bool av_request_set_method(av_request *req, CURL *h) {
  bool head = strcmp(req->method, "HEAD") == 0;
  bool get = strcmp(req->method, "GET") == 0;
  bool post = strcmp(req->method, "POST") == 0;
  bool custom = !(get || head || post);
  curl_easy_setopt(h, CURLOPT_HTTPGET, 1L); /* clears POST, upload and NOBODY */
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, custom ? req->method : NULL);
  if (head) {
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  } else if (req->has_body || post) {
    if (get) { /* a GET with a body: libcurl sends a body only as a POST */
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "GET");
      custom = true;
    }
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body ? req->body : "");
  }
  return custom;
}

bool av_request_run(av_request *req) {
  av_loop *lp = req->op.loop;
  av_easy *e = av_easy_get(lp);
  if (!e) {
    av_request_fail(req, "protocol", "out of memory: cannot create a transfer");
    return false;
  }
  CURL *h = e->h;
  req->easy = e;
  req->phase = AV_REQ_RUNNING;
  if (e->fresh) av_request_easy_defaults(e);
  av_easy_tls(lp, e, req->session);
  curl_easy_setopt(h, CURLOPT_PRIVATE, req);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, req);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, req);
  curl_easy_setopt(h, CURLOPT_PREREQDATA, req);
  curl_easy_setopt(h, CURLOPT_URL, req->url);
  curl_easy_setopt(h, CURLOPT_BUFFERSIZE, req->session->read_bufsize);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, req->headers ? req->headers : req->session->headers);
  req->hop_total_ms = req->total_ms;
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, req->hop_total_ms);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, req->connect_ms);
  /* libcurl re-sends a CURLOPT_CUSTOMREQUEST method unchanged on every
   * redirect: those requests follow theirs in av_redirect_follow */
  req->core_follows = av_request_set_method(req, h);
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, req->core_follows ? 0L : 1L);
  /* for the total over all hops: the clock now, not the loop's cached time */
  if (req->core_follows) req->started = av_loop_now_ms(lp);
  CURLMcode rc = av_curl_add(lp, h);
  if (rc != CURLM_OK) {
    req->easy = NULL;
    av_easy_put(lp, e);
    av_request_fail(req, "protocol", "cannot start transfer: %s", curl_multi_strerror(rc));
    return false;
  }
  return true;
}

/* --------------------------------------------------------- Lua interface */

/* Milliseconds for an optional timeout in seconds (nil, false or 0: none). */
static long av_timeout_arg(lua_State *L, int arg, const char *name) {
  if (lua_isnoneornil(L, arg) || (lua_isboolean(L, arg) && !lua_toboolean(L, arg))) return 0;
  lua_Number s = luaL_checknumber(L, arg);
  if (isnan(s) || s < 0) return av_error_arg(L, arg, "%s timeout must be a number of seconds >= 0", name);
  if (s > 1e8) s = 1e8;
  long ms = (long)ceil(s * 1000.0);
  return s > 0 && ms == 0 ? 1 : ms;
}

/* Push nil, "invalid", message: how bad input reaches the Lua layer, which
 * raises it as an error object carrying the URL. */
static int av_request_refuse(lua_State *L, const char *fmt, ...) {
  va_list ap;
  lua_pushnil(L);
  lua_pushliteral(L, "invalid");
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  return 3;
}

/* Check url with libcurl's parser and build its limiter key
 * "scheme://host:port" on the stack; NULL, or why the URL is refused. */
static const char *av_url_check(lua_State *L, const char *url) {
  static const char *const oom = "out of memory";
  char why[160];
  CURLU *u = curl_url();
  if (!u) return oom;
  char *scheme = NULL, *host = NULL, *port = NULL;
  CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
  if (uc != CURLUE_OK) {
    snprintf(why, sizeof why, "bad URL: %s", curl_url_strerror(uc));
  } else if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
             (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
    snprintf(why, sizeof why, "unsupported URL scheme '%.40s' (only http and https)", scheme ? scheme : "");
  } else if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !*host) {
    snprintf(why, sizeof why, "bad URL: no host");
  } else if (curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK || !port) {
    snprintf(why, sizeof why, "bad URL: no port");
  } else {
    why[0] = '\0';
    luaL_Buffer key;
    luaL_buffinit(L, &key);
    for (char *c = scheme; *c; c++) luaL_addchar(&key, (char)(*c | 0x20));
    luaL_addstring(&key, "://");
    for (char *c = host; *c; c++) luaL_addchar(&key, (*c >= 'A' && *c <= 'Z') ? (char)(*c | 0x20) : *c);
    luaL_addchar(&key, ':');
    luaL_addstring(&key, port);
    luaL_pushresult(&key);
  }
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(u);
  if (!why[0]) return NULL;
  lua_pushstring(L, why);
  return lua_tostring(L, -1);
}

/* The limiter key of url, pushed on the stack; NULL or why it is refused.
 * A session keeps the last origin it checked ("http://host:port" as the
 * caller wrote it): URLs that start with it followed by '/', '?', '#' or
 * nothing share its key, so only the first of many requests to one origin
 * pays for a second parse (libcurl parses every URL anyway, and refuses
 * junk in the rest of it as CURLE_URL_MALFORMAT, reported as `invalid`). */
static const char *av_request_key(lua_State *L, av_session *s, const char *url) {
  const char *sep = strstr(url, "://");
  size_t origin_len = sep ? (size_t)(sep + 3 - url) + strcspn(sep + 3, "/?#") : 0;
  if (s->origin && origin_len == s->origin_len && memcmp(url, s->origin, origin_len) == 0) {
    lua_pushstring(L, s->origin_key);
    return NULL;
  }
  const char *err = av_url_check(L, url);
  if (err || !sep) return err;
  char *origin = malloc(origin_len + 1);
  char *key = strdup(lua_tostring(L, -1));
  if (!origin || !key) {
    free(origin);
    free(key);
    return NULL; /* no cache this time: the key on the stack is still right */
  }
  memcpy(origin, url, origin_len);
  origin[origin_len] = '\0';
  free(s->origin);
  free(s->origin_key);
  s->origin = origin;
  s->origin_len = origin_len;
  s->origin_key = key;
  return NULL;
}

static bool av_method_valid(const char *m, size_t len) {
  if (len == 0 || len >= sizeof(((av_request *)0)->method)) return false;
  for (size_t i = 0; i < len; i++)
    if (m[i] < 'A' || m[i] > 'Z') return false;
  return true;
}

/* session:request(token, method, url, headers, body, total, connect,
 *                 sock_read, pool, max_body) -> op | nil, "invalid", message */
int av_request_new(lua_State *L) {
  av_session *s = av_session_check(L, 1);
  luaL_checkany(L, 2);
  size_t mlen, blen = 0;
  const char *method = luaL_checklstring(L, 3, &mlen);
  const char *url = luaL_checkstring(L, 4);
  if (!lua_isnoneornil(L, 5)) luaL_checktype(L, 5, LUA_TTABLE);
  const char *body = lua_isnoneornil(L, 6) ? NULL : luaL_checklstring(L, 6, &blen);
  long total = av_timeout_arg(L, 7, "total");
  long connect = av_timeout_arg(L, 8, "connect");
  long sock_read = av_timeout_arg(L, 9, "sock_read");
  long pool = av_timeout_arg(L, 10, "pool");
  lua_Integer max_body = luaL_optinteger(L, 11, 0);
  if (max_body < 0) return av_error_arg(L, 11, "max_body_size must be >= 0");
  if (!av_method_valid(method, mlen)) return av_request_refuse(L, "bad HTTP method '%s'", method);
  if (s->closed) return av_request_refuse(L, "session is closed");

  av_request *req = lua_newuserdatauv(L, sizeof *req, AV_REQUEST_NUV);
  int idx = lua_gettop(L);
  memset(req, 0, sizeof *req);
  av_op_init(&req->op, s->loop, &av_request_vt);
  luaL_setmetatable(L, AV_REQUEST_MT);
  req->session = s;
  memcpy(req->method, method, mlen + 1);
  req->total_ms = total;
  req->connect_ms = connect;
  req->sock_read_ms = sock_read;
  req->pool_ms = pool;
  req->max_body = (size_t)max_body;

  const char *err = av_request_key(L, s, url);
  if (err) return av_request_refuse(L, "%s", err);
  const char *keystr = lua_tostring(L, -1);
  /* the URL string stays referenced by the op, so req->url stays valid */
  lua_pushvalue(L, 4);
  lua_setiuservalue(L, idx, AV_UV_URL);
  req->url = lua_tostring(L, 4);
  if (!lua_isnoneornil(L, 5) && lua_rawlen(L, 5) > 0) {
    if (!av_headers_append(L, 5, &req->headers)) return av_request_refuse(L, "%s", lua_tostring(L, -1));
    if (!av_headers_inherit(&req->headers, s->headers)) return luaL_error(L, "out of memory");
  }
  if (body) {
    /* anchored like the URL: libcurl sends it from the Lua string */
    lua_pushvalue(L, 6);
    lua_setiuservalue(L, idx, AV_UV_BODY);
    req->body = body;
    req->body_len = blen;
    req->has_body = true;
  }
  /* session as user value: the request keeps it (and its limiter) alive */
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, idx, AV_UV_EXTRA);
  lua_getiuservalue(L, 1, 1); /* the loop */
  av_op_start(L, &req->op, idx, 2, -1);
  lua_pop(L, 1);
  av_session_acquire(s, req, keystr);
  lua_pushvalue(L, idx);
  return 1;
}

/* req:result() -> status, body, effective_url | nil, kind, message */
static int av_request_result(lua_State *L) {
  av_request *req = luaL_checkudata(L, 1, AV_REQUEST_MT);
  if (req->phase != AV_REQ_DONE || req->op.state != AV_OP_IDLE)
    return luaL_error(L, "request has not finished");
  if (req->err_kind) {
    lua_pushnil(L);
    lua_pushstring(L, req->err_kind);
    lua_pushstring(L, req->err_message ? req->err_message : req->err_kind);
    return 3;
  }
  lua_pushinteger(L, req->status);
  lua_pushlstring(L, req->resp_body.data ? req->resp_body.data : "", req->resp_body.len);
  if (req->effective_url) lua_pushstring(L, req->effective_url); else lua_pushnil(L);
  /* the body is Lua's now: free the buffer early, not at GC */
  av_buf_free(&req->resp_body);
  return 3;
}

/* req:headers() -> the raw header block of the final response. Most
 * callers never look, so it becomes a Lua string only when asked. */
static int av_request_headers(lua_State *L) {
  av_request *req = luaL_checkudata(L, 1, AV_REQUEST_MT);
  lua_pushlstring(L, req->resp_headers.data ? req->resp_headers.data : "", req->resp_headers.len);
  return 1;
}

/* req:method() -> the HTTP method */
static int av_request_method(lua_State *L) {
  av_request *req = luaL_checkudata(L, 1, AV_REQUEST_MT);
  lua_pushstring(L, req->method);
  return 1;
}

static int av_request_op_cancel(lua_State *L) {
  luaL_checkudata(L, 1, AV_REQUEST_MT);
  lua_pushboolean(L, av_op_cancel(L, 1));
  return 1;
}

static int av_request_gc(lua_State *L) {
  av_request *req = luaL_checkudata(L, 1, AV_REQUEST_MT);
  /* A pending request is anchored by its loop, so it is collected only
   * after the loop closed (which cancelled it) or together with the loop. */
  if (req->op.loop && req->op.state == AV_OP_PENDING && !req->op.loop->closed) {
    av_deadline_clear(&req->op);
    av_request_cancel(&req->op);
  }
  curl_slist_free_all(req->headers);
  free(req->effective_url);
  free(req->err_message);
  av_buf_free(&req->resp_body);
  av_buf_free(&req->resp_headers);
  req->headers = NULL;
  req->effective_url = req->err_message = NULL;
  return 0;
}

void av_request_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"result", av_request_result}, {"headers", av_request_headers},
      {"method", av_request_method}, {"cancel", av_request_op_cancel}, {NULL, NULL}};
  luaL_newmetatable(L, AV_REQUEST_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, av_request_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
}
