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

/* End req with the timeout of a phase ("connect", "total", "sock_read",
 * "pool"): the phase goes to Lua as data (err.phase), and heads the message. */
static void av_request_timeout(av_request *req, const char *phase, const char *what, long ms) {
  av_request_fail(req, "timeout", "%s timeout: %s %g s", phase, what, av_seconds(ms));
  req->err_phase = phase;
}

/* Which clock ran out: connect while the current hop had no connection
 * yet, else total. Not CURLINFO_CONNECT_TIME_T: it is 0 on a reused
 * connection. */
void av_request_timed_out(av_request *req) {
  bool connect_phase =
      !req->connected && req->connect_ms && (!req->hop_total_ms || req->connect_ms <= req->hop_total_ms);
  if (connect_phase)
    av_request_timeout(req, "connect", "no connection within", req->connect_ms);
  else
    av_request_timeout(req, "total", "request not done within", req->total_ms);
}

/* A socket of the transfer could not be watched (see av_curl_watch_failed). */
static void av_request_fail_sock(av_request *req) {
  av_request_fail(req, "protocol", "the connection's socket could not be watched: %s", uv_strerror(req->sock_error));
}

/* The error of a transfer libcurl ended with code (not CURLE_OK). */
static void av_request_failed(av_request *req, CURLcode code) {
  const av_response_check *c = &req->check;
  const char *detail = req->easy->errbuf[0] ? req->easy->errbuf : curl_easy_strerror(code);
  if (req->fault == AV_FAULT_BODY_TOO_LARGE) {
    av_request_fail(req, "protocol", "response body larger than max_body_size (%zu bytes)", req->max_body);
  } else if (req->fault == AV_FAULT_HEADERS_TOO_LARGE) {
    av_request_fail(req, "protocol", "response header block larger than %d bytes", AV_MAX_HEADER_BLOCK);
  } else if (req->fault == AV_FAULT_FRAMING && c->other_length < 0) {
    av_request_fail(req, "protocol", "response has a malformed Content-Length header");
  } else if (req->fault == AV_FAULT_FRAMING) {
    av_request_fail(req, "protocol", "response has conflicting Content-Length headers (%lld and %lld)",
                    (long long)c->length, (long long)c->other_length);
  } else if (req->fault == AV_FAULT_NO_MEMORY) {
    av_request_fail(req, "protocol", "out of memory while reading the response");
  } else if (req->sock_error) {
    av_request_fail_sock(req);
  } else if (code == CURLE_OPERATION_TIMEDOUT) {
    av_request_timed_out(req);
  } else if (code == CURLE_OUT_OF_MEMORY && c->status && !c->complete) {
    /* libcurl's "Out of memory" for a header line over its 100 KiB limit */
    av_request_fail(req, "protocol", "response header too large: libcurl refuses a header line over 100 KiB");
  } else if (c->status >= 100 && c->status < 200 && c->complete) {
    /* httpbin's /status/100: libcurl reads what follows as HTTP/0.9 */
    av_request_fail(req, "protocol", "the server sent an interim %d response and no final one (%s)", c->status,
                    detail);
  } else {
    /* a URL libcurl refused before any redirect is the caller's */
    bool bad_url = code == CURLE_URL_MALFORMAT && req->redirects == 0;
    av_request_fail(req, bad_url ? "invalid" : av_error_kind(code), "%s", detail);
  }
}

/* A transfer libcurl ended with CURLE_OK can still be one we refuse:
 * libcurl 7.88 takes a status line alone, or a header block cut short by
 * the close, as a complete empty answer. */
static void av_request_answered(av_request *req) {
  if (!req->check.complete) {
    av_request_fail(req, "protocol", "the connection closed before the response's header block ended");
  } else if (req->status < 200) {
    av_request_fail(req, "protocol", "the server sent an interim %ld response and no final one", req->status);
  } else {
    req->phase = AV_REQ_DONE;
    av_op_finish(&req->op);
  }
}

void av_request_done(av_request *req, CURLcode code) {
  av_session *s = req->session;
  if (code == CURLE_OK) {
    curl_easy_getinfo(req->easy->h, CURLINFO_RESPONSE_CODE, &req->status);
    if (av_redirect_follow(req)) return; /* the next hop runs */
  }
  if (req->phase == AV_REQ_DONE) {
    /* a redirect refused by av_redirect_follow: req already has its error */
  } else if (code == CURLE_OK) {
    av_request_answered(req);
  } else {
    av_request_failed(req, code);
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
    av_request_timeout(req, "pool", "no connection slot within", req->pool_ms);
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
    av_request_timeout(req, "sock_read", "no data for", req->sock_read_ms);
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
    req->fault = AV_FAULT_BODY_TOO_LARGE;
    return 0;
  }
  if (!av_buf_append(&req->resp_body, p, len)) {
    req->fault = AV_FAULT_NO_MEMORY;
    return 0;
  }
  return len;
}

/* The HTTP status of a status line "HTTP/x yyy ...", or 0. */
static int av_status_of(const char *p, size_t len) {
  const char *sp = memchr(p, ' ', len);
  if (!sp || (size_t)(sp - p) + 4 > len) return 0;
  int code = 0;
  for (int i = 1; i <= 3; i++) {
    if (sp[i] < '0' || sp[i] > '9') return 0;
    code = code * 10 + (sp[i] - '0');
  }
  return code;
}

/* A Content-Length value (after the colon): a list of decimal numbers, all
 * of them equal to each other and to any earlier Content-Length of the
 * response (RFC 9112 6.3). False, with the check's values set, if not. */
static bool av_check_length(av_response_check *c, const char *p, const char *end) {
  for (;;) {
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    if (p == end || *p < '0' || *p > '9') break;
    curl_off_t v = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
      if (v > (INT64_MAX - 9) / 10) break;
      v = v * 10 + (*p - '0');
    }
    if (p < end && *p >= '0' && *p <= '9') break; /* too long */
    if (c->has_length && v != c->length) {
      c->other_length = v;
      return false;
    }
    c->has_length = true;
    c->length = v;
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    if (p == end || *p == '\r' || *p == '\n') return true;
    if (*p++ != ',') break;
  }
  c->other_length = -1; /* malformed */
  return false;
}

static size_t av_request_header_cb(char *p, size_t size, size_t n, void *ud) {
  av_request *req = ud;
  size_t len = size * n;
  av_response_check *c = &req->check;
  av_request_touch(req);
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
    /* A new status line starts a new response (after a 1xx): keep only
     * the last one's headers and body. */
    req->resp_headers.len = 0;
    req->resp_body.len = 0;
    memset(c, 0, sizeof *c);
    c->status = av_status_of(p, len);
  } else if (len > 0 && (p[0] == '\r' || p[0] == '\n')) {
    c->complete = true;
  } else if (!c->complete && len > 15 && strncasecmp(p, "content-length:", 15) == 0 &&
             !av_check_length(c, p + 15, p + len)) {
    req->fault = AV_FAULT_FRAMING;
    return 0;
  }
  if (req->resp_headers.len + len > AV_MAX_HEADER_BLOCK) {
    req->fault = AV_FAULT_HEADERS_TOO_LARGE;
    return 0;
  }
  if (!av_buf_append(&req->resp_headers, p, len)) {
    req->fault = AV_FAULT_NO_MEMORY;
    return 0;
  }
  return len;
}

static void av_request_read_clock(av_request *req) {
  av_request_touch(req);
  av_deadline_set(&req->op, (uint64_t)req->sock_read_ms);
}

/* Connected (or reusing a connection), about to send: the connect clock
 * is done with. The sock_read clock starts now, or once the body is sent
 * (as aiohttp's, since 3.8.5: a slow reader of a large upload is no
 * silent server). */
static int av_request_prereq_cb(void *ud, char *ip, char *local_ip, int port, int local_port) {
  av_request *req = ud;
  req->connected = true;
  /* a failed socket's deadline is due now: keep it */
  if (!req->sock_read_ms || req->sock_error) return CURL_PREREQFUNC_OK;
  req->sending = req->body_len > 0;
  if (!req->sending) av_request_read_clock(req);
  return CURL_PREREQFUNC_OK;
}

/* Upload progress, asked for only while a body with a sock_read timeout
 * is on its way: the last byte sent starts the sock_read clock. */
static int av_request_progress_cb(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                                  curl_off_t ulnow) {
  av_request *req = ud;
  if (req->sending && ulnow >= (curl_off_t)req->body_len) {
    req->sending = false;
    if (!req->sock_error) av_request_read_clock(req);
  }
  return 0;
}

/* ------------------------------------------------------------ running */

/* Options every request sets the same way: once per easy handle. */
static void av_request_easy_defaults(av_easy *e) {
  CURL *h = e->h;
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, e->errbuf);
  /* Only http and https, on the first request and on every redirect. */
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  /* Redirects are followed by redirect.c, with one set of rules for every
   * method, and the headers that described a dropped body dropped too. */
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  /* HTTP/2 over TLS only: libcurl 7.88 cannot reuse h2c connections. */
  curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
  /* Decode what the server compressed; the Accept-Encoding header itself
   * comes with the session's default headers (see av_headers_defaults). */
  curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, av_request_write_cb);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, av_request_header_cb);
  curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, av_request_prereq_cb);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, av_request_progress_cb);
}

/* The method and body, undoing whatever the handle's last request set. */
void av_request_set_method(av_request *req, CURL *h) {
  bool head = strcmp(req->method, "HEAD") == 0;
  bool get = strcmp(req->method, "GET") == 0;
  bool post = strcmp(req->method, "POST") == 0;
  bool custom = !(get || head || post);
  curl_easy_setopt(h, CURLOPT_HTTPGET, 1L); /* clears POST, upload and NOBODY */
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, custom ? req->method : NULL);
  if (head) {
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  } else if (req->has_body || post) {
    /* a GET with a body: libcurl sends a body only as a POST */
    if (get) curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "GET");
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body ? req->body : "");
  }
  /* upload progress only where it starts the sock_read clock */
  bool progress = req->sock_read_ms && req->body_len > 0;
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, progress ? 0L : 1L);
  if (progress) curl_easy_setopt(h, CURLOPT_XFERINFODATA, req);
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
  av_request_set_method(req, h);
  /* for the total over all hops: the clock now, not the loop's cached time */
  req->started = av_loop_now_ms(lp);
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
  size_t ulen;
  const char *url = luaL_checklstring(L, 4, &ulen);
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
  /* libcurl reads a C string: everything after a NUL would be dropped */
  if (strlen(url) != ulen) return av_request_refuse(L, "bad URL: it contains a NUL byte");

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

  const char *err = av_url_key(L, s, 4);
  if (err) return av_request_refuse(L, "%s", err);
  const char *keystr = lua_tostring(L, -2);
  /* the URL string stays referenced by the op, so req->url stays valid */
  req->url = lua_tostring(L, -1);
  req->url_rewritten = !lua_rawequal(L, -1, 4);
  lua_setiuservalue(L, idx, AV_UV_URL);
  if (!lua_isnoneornil(L, 5) && lua_rawlen(L, 5) > 0) {
    if (!av_headers_append(L, 5, &req->headers, body ? (long long)blen : 0))
      return av_request_refuse(L, "%s", lua_tostring(L, -1));
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

/* req:result() -> status, body, effective_url | nil, kind, message, phase */
static int av_request_result(lua_State *L) {
  av_request *req = luaL_checkudata(L, 1, AV_REQUEST_MT);
  if (req->phase != AV_REQ_DONE || req->op.state != AV_OP_IDLE)
    return luaL_error(L, "request has not finished");
  if (req->err_kind) {
    lua_pushnil(L);
    lua_pushstring(L, req->err_kind);
    lua_pushstring(L, req->err_message ? req->err_message : req->err_kind);
    if (req->err_phase) lua_pushstring(L, req->err_phase); else lua_pushnil(L);
    return 4;
  }
  lua_pushinteger(L, req->status);
  lua_pushlstring(L, req->resp_body.data ? req->resp_body.data : "", req->resp_body.len);
  if (req->effective_url) lua_pushstring(L, req->effective_url);
  else if (req->url_rewritten) lua_pushstring(L, req->url);
  else lua_pushnil(L);
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
