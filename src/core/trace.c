/* Trace records (avideo.trace): when a trace is on, each request that
 * ends appends one record to the loop's trace buffer: its clock (call,
 * slot, end), libcurl's phases, status, sizes, and the header lines sent
 * and received; and a limit that moves appends a sample when it changes
 * (the session says when). Lua takes them (loop:trace_take) and writes
 * the file. When no trace is on, a request pays one pointer test. */
#include <stdlib.h>
#include <string.h>

#include "private.h"

/* One record's fixed part; its strings follow it in the buffer. */
typedef struct av_trace_rec {
  uint64_t created, started, ended; /* uv_hrtime; started 0: never ran */
  uint32_t t[6];              /* µs: dns, connect, tls, sent, first_byte, redirect */
  int64_t down, up;           /* body bytes received and sent */
  int32_t status;             /* 0: no response */
  int32_t redirects;
  int32_t reached;            /* phases reached, as in req:timings() */
  uint8_t reused;
  uint32_t len[6];            /* method, url, final url, error kind, error message, headers sent */
  uint32_t len_received;      /* the final response's header block */
} av_trace_rec;

static bool av_trace_str(av_buf *b, const char *s, uint32_t *len) {
  size_t n = s ? strlen(s) : 0;
  *len = (uint32_t)n;
  return av_buf_append(b, s ? s : "", n);
}

/* One limit sample's fixed part; its key follows it in the buffer. */
typedef struct av_trace_limit_rec {
  uint64_t at;                /* uv_hrtime */
  int64_t limit;
  uint32_t session;           /* its session's number in the loop */
  uint32_t len;               /* the key's */
  uint8_t total;              /* the total's, not a key's */
} av_trace_limit_rec;

void av_trace_limit(av_trace *trace, uint32_t session, const char *key, lua_Integer limit, uint64_t at) {
  av_trace_limit_rec r;
  memset(&r, 0, sizeof r);
  r.at = at;
  r.session = session;
  r.limit = (int64_t)limit;
  r.total = key == NULL;
  r.len = key ? (uint32_t)strlen(key) : 0;
  size_t was = trace->limits.len;
  /* out of memory: the sample is dropped whole */
  if (!av_buf_append(&trace->limits, (const char *)&r, sizeof r) ||
      !av_buf_append(&trace->limits, key ? key : "", r.len))
    trace->limits.len = was;
}

void av_trace_request(av_trace *tr, const av_request *req, int64_t down, int64_t up, int reached) {
  av_buf *trace = &tr->requests;
  bool headers = req->owner->trace_headers && *req->owner->trace_headers;
  av_trace_rec r;
  memset(&r, 0, sizeof r);
  r.created = req->created;
  r.started = req->started;
  r.ended = req->ended;
  const uint32_t t[6] = {req->t_dns, req->t_connect, req->t_tls, req->t_sent, req->t_first_byte, req->t_redirect};
  memcpy(r.t, t, sizeof t);
  r.down = down;
  r.up = up;
  r.status = req->check.status >= 200 ? (int32_t)req->check.status : 0;
  r.redirects = req->redirects;
  r.reached = reached;
  r.reused = req->reused;
  size_t at = trace->len;
  /* the fixed part first, its lengths filled in once the strings are in */
  if (!av_buf_append(trace, (const char *)&r, sizeof r)) return;
  bool ok = av_trace_str(trace, req->method, &r.len[0]) && av_trace_str(trace, req->url, &r.len[1]) &&
            av_trace_str(trace, req->effective_url ? req->effective_url : req->url, &r.len[2]) &&
            av_trace_str(trace, req->err_kind, &r.len[3]) && av_trace_str(trace, req->err_message, &r.len[4]);
  size_t sent_at = trace->len;
  /* the header lines only for a HAR: the others do not show them, and a
   * record without them is a third of the size */
  const struct curl_slist *h = headers ? (req->headers ? req->headers : req->owner->headers) : NULL;
  for (; ok && h; h = h->next) ok = av_buf_append(trace, h->data, strlen(h->data)) && av_buf_append(trace, "\n", 1);
  r.len[5] = (uint32_t)(trace->len - sent_at);
  size_t received = headers ? req->resp_headers.len : 0;
  ok = ok && av_buf_append(trace, req->resp_headers.data ? req->resp_headers.data : "", received);
  r.len_received = (uint32_t)received;
  if (!ok) {
    trace->len = at; /* out of memory: the record is dropped whole */
    return;
  }
  memcpy(trace->data + at, &r, sizeof r);
}

static void av_field_str(lua_State *L, const char *name, const char **p, uint32_t len) {
  lua_pushlstring(L, *p, len);
  lua_setfield(L, -2, name);
  *p += len;
}

static void av_field_num(lua_State *L, const char *name, lua_Number v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, name);
}

static void av_field_int(lua_State *L, const char *name, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, name);
}

/* Copy the fixed part of the record at *p (size bytes) into rec and step
 * past it; false at the end of b. */
static bool av_trace_next(const av_buf *b, const char **p, void *rec, size_t size) {
  if (!b || !b->data) return false;
  if (!*p) *p = b->data;
  if ((size_t)(*p - b->data) + size > b->len) return false; /* (no pointer past the end is made) */
  memcpy(rec, *p, size);
  *p += size;
  return true;
}

/* Push the limit samples as a list of { at, limit, session, key } (key
 * absent: the total). */
static void av_trace_push_limits(lua_State *L, const av_buf *b) {
  lua_newtable(L);
  const char *p = NULL;
  av_trace_limit_rec r;
  for (int i = 1; av_trace_next(b, &p, &r, sizeof r); i++) {
    lua_createtable(L, 0, 4);
    av_field_num(L, "at", (lua_Number)r.at / 1e9);
    av_field_int(L, "limit", (lua_Integer)r.limit);
    av_field_int(L, "session", (lua_Integer)r.session);
    if (!r.total) av_field_str(L, "key", &p, r.len);
    lua_rawseti(L, -2, i);
  }
}

int av_trace_push(lua_State *L, const av_trace *t) {
  lua_newtable(L);
  const char *p = NULL;
  static const char *const phases[] = {"dns", "connect", "tls", "sent", "first_byte"};
  av_trace_rec r;
  for (int i = 1; av_trace_next(t ? &t->requests : NULL, &p, &r, sizeof r); i++) {
    lua_createtable(L, 0, 20);
    /* seconds on avideo.now()'s clock */
    av_field_num(L, "created", (lua_Number)r.created / 1e9);
    if (r.started) av_field_num(L, "started", (lua_Number)r.started / 1e9);
    av_field_num(L, "ended", (lua_Number)r.ended / 1e9);
    lua_Number redirect = (lua_Number)r.t[5] / 1e6;
    av_field_num(L, "redirect", redirect);
    for (int k = 0; k < r.reached && k < 5; k++) av_field_num(L, phases[k], redirect + (lua_Number)r.t[k] / 1e6);
    av_field_int(L, "down", (lua_Integer)r.down);
    av_field_int(L, "up", (lua_Integer)r.up);
    if (r.status) av_field_int(L, "status", r.status);
    av_field_int(L, "redirects", r.redirects);
    lua_pushboolean(L, r.reused);
    lua_setfield(L, -2, "reused");
    av_field_str(L, "method", &p, r.len[0]);
    av_field_str(L, "url", &p, r.len[1]);
    av_field_str(L, "final_url", &p, r.len[2]);
    av_field_str(L, "error_kind", &p, r.len[3]);
    av_field_str(L, "error", &p, r.len[4]);
    av_field_str(L, "headers_sent", &p, r.len[5]);
    av_field_str(L, "headers_received", &p, r.len_received);
    lua_rawseti(L, -2, i);
  }
  av_trace_push_limits(L, t ? &t->limits : NULL);
  return 2;
}
