/* avideo.core internals: one header that declares every internal function
 * with a one-line purpose. Only luaopen_avideo_core is exported; the public
 * header for hosts is include/avideo.h. docs/architecture.md has the layers,
 * one request's path through these files, and the rules they keep. */
#ifndef AVIDEO_PRIVATE_H
#define AVIDEO_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>

#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "avideo.h"
#include "compat.h" /* the 5.4 calls on Lua 5.3, 5.1 and LuaJIT */

/* Metatable names of the core's userdata. */
#define AV_LOOP_MT "avideo.loop"
#define AV_SESSION_MT "avideo.session_core"
#define AV_TIMER_MT "avideo.timer_op"
#define AV_REQUEST_MT "avideo.request_op"

/* The layers, from the bottom; a section calls only the sections above
 * it in this file (spec/layers_spec.lua checks it):
 *   leaves      buf, errors, headers, url, redirect, json, codec, inflate: pure helpers
 *   loop        ops.c, host.c: libuv, ops, the deadline heap, embedding
 *   op kinds    timer.c, work.c: things a task can wait for
 *   transport   transport.c: libcurl multi_socket on the loop; reports to
 *               its user through the av_xfer_vtable it was handed
 *   request     request.c, receive.c, multipart.c, client.c, trace.c: one request's lifecycle; reports a
 *               request's end to its owner through av_request_owner
 *   limiter     limiter.c, adapt.c, bucket.c: a pure FIFO queue per key and
 *               in total, under fixed or adaptive limits and token buckets
 *   top         loop.c, session.c, module.c: the Lua bindings that make and
 *               join the layers */

typedef struct av_loop av_loop;
typedef struct av_op av_op;
typedef struct av_request av_request;
typedef struct av_easy av_easy;
typedef struct av_part av_part;

/* ============================================================== leaves */

/* -------------------------------------------------------------- buffers */
typedef struct av_buf {
  char *data;
  size_t len, cap;
} av_buf;

/* Append n bytes; false on OOM. */
bool av_buf_append(av_buf *b, const char *p, size_t n);
/* Free the buffer's memory. */
void av_buf_free(av_buf *b);

/* -------------------------------------------------------------- inflate
 * A streamed response's gzip or deflate body, decoded as it is read
 * (inflate.c). */
enum { AV_CODING_NONE, AV_CODING_GZIP, AV_CODING_DEFLATE, AV_CODING_OTHER };
enum { AV_INFLATE_MORE, AV_INFLATE_END, AV_INFLATE_ERROR };
typedef struct av_inflate av_inflate;

/* The coding a Content-Encoding value names (AV_CODING_*). */
int av_coding_of(const char *value, size_t len);
/* A decoder for gzip or deflate that makes at most cap bytes a run; NULL
 * on OOM. */
av_inflate *av_inflate_new(int kind, size_t cap);
void av_inflate_free(av_inflate *f);
/* Whether the compressed stream's end was read; whether any of it was. */
bool av_inflate_ended(const av_inflate *f);
bool av_inflate_fed(const av_inflate *f);
/* Decode from *in (advanced past what was used) at most want bytes (0 or
 * over cap: cap) into the decoder's own *out, valid until the next run;
 * *made says how many: AV_INFLATE_MORE (want made, or in used up),
 * AV_INFLATE_END (what follows the end is dropped), or AV_INFLATE_ERROR
 * with *why. */
int av_inflate_run(av_inflate *f, const char **in, size_t *in_len, size_t want, const char **out, size_t *made,
                   const char **why);

/* --------------------------------------------------------------- errors */
/* The avideo error kind for a libcurl result code. */
const char *av_error_kind(CURLcode code);
/* Raise a Lua error "bad argument #n to 'fn' (msg)"-style for avideo. */
int av_error_arg(lua_State *L, int arg, const char *fmt, ...);
/* Push nil, "invalid", message: how bad input reaches the Lua layer, which
 * raises it as an error object; returns 3. */
int av_refuse(lua_State *L, const char *fmt, ...);

/* ------------------------------------------------------------- headers */
/* The body_len of a body whose length libcurl works out (multipart): a
 * Content-Length of the caller's is refused, as in a session's headers (-1). */
#define AV_BODY_LENGTH_LIBCURL (-2)
/* Append the flat header list {n1, v1, ...} at idx to *list; false with a
 * message pushed on bad input. body_len: the request body's size, or -1
 * for a session's default headers (framing headers are checked against it). */
bool av_headers_append(lua_State *L, int idx, struct curl_slist **list, long long body_len);
/* A request's header list: the flat list at idx, then the entries of
 * defaults whose names it lacks, in one malloc'd block (free it with
 * av_headers_free; the defaults' strings are shared, not copied). *out is
 * NULL for no headers; false with a message pushed on bad input. */
bool av_headers_build(lua_State *L, int idx, const struct curl_slist *defaults, long long body_len,
                      struct curl_slist **out);
/* The entries of from that drop() refuses, copied into one block; NULL
 * when out of memory. */
struct curl_slist *av_headers_filter(const struct curl_slist *from, bool (*drop)(const char *line, const void *ud),
                                     const void *ud);
/* Free a block made by av_headers_build or av_headers_filter. */
void av_headers_free(struct curl_slist *block);
/* A copy of defaults that also removes the Content-Type libcurl would give
 * a POST without a body (application/x-www-form-urlencoded), unless the
 * defaults have one of their own; false when out of memory. */
bool av_headers_bodyless(const struct curl_slist *defaults, bool post, struct curl_slist **out);
/* Append the headers every session sends unless the user gave them:
 * User-Agent, Accept-Encoding (what libcurl decodes), and "Expect:" (no
 * 100-continue wait); false when out of memory. */
bool av_headers_defaults(struct curl_slist **list);

/* ----------------------------------------------------------------- urls */
/* The last origin a session checked and its limiter key (see url.c). */
typedef struct av_url_cache {
  char *origin;               /* "scheme://host:port" as written ... */
  size_t origin_len;
  char *key;                  /* ... and its limiter key */
} av_url_cache;

/* Check the request URL at urlidx and push its limiter key
 * ("scheme://host:port") and the URL to send (itself, or the ASCII form of
 * an international host name); NULL, or why it is refused (pushed). */
const char *av_url_key(lua_State *L, av_url_cache *cache, int urlidx);
/* Free the cache's strings. */
void av_url_cache_free(av_url_cache *cache);
/* The URL with its international host name in ASCII form, as av_url_key
 * sends it (free it with curl_free), or NULL when it has none, or it
 * cannot be made: the URL then goes as it is, and libcurl says what is
 * wrong with it. For a redirect's target, which no Lua call checked. */
char *av_url_ascii(const char *url);

/* ------------------------------------------------------------ redirects */
/* How many redirects a request follows at most, unless told otherwise. */
#define AV_MAX_REDIRECTS 10

/* Whether status asks to be redirected (301, 302, 303, 307, 308). */
bool av_redirect_status(long status);
/* NULL if a redirect from `from` to target may be followed after
 * `redirects` of them (at most max), else why not, written into why. */
const char *av_redirect_refusal(const char *from, const char *target, int redirects, int max, char *why,
                                size_t whylen);
/* Whether the next hop becomes a GET without a body (aiohttp's rules). */
bool av_redirect_to_get(long status, const char *method);
/* Whether a and b have the same origin (scheme, host, port). */
bool av_redirect_same_origin(const char *a, const char *b);
/* The headers of the next hop: *own (NULL: defaults) without the body's
 * headers (body) and credentials (credentials); *own is replaced only if
 * something was dropped. False when out of memory. */
bool av_redirect_headers(struct curl_slist **own, const struct curl_slist *defaults, bool body, bool credentials);

/* ---------------------------------------------------------------- json */
/* Register core.json_decoder. */
void av_json_open(lua_State *L);
/* core.json_decoder(null, arrays) -> decode(text): json_decode.c */
int av_json_decoder(lua_State *L);
/* Decode text (len bytes) and push its value (returns 1), or push nil, a
 * message and the byte where it went wrong (returns 3). null_idx and
 * arrays_idx: where the null value and the weak set of empty arrays are
 * (absolute or upvalue indices). */
int av_json_decode_text(lua_State *L, const char *text, size_t len, int null_idx, int arrays_idx);

/* --------------------------------------------------------------- codec */
/* How a run_in_thread value is being encoded (codec.c). */
typedef struct av_copy {
  lua_State *L;
  av_buf *out;
  int seen;           /* stack index of a set of the tables on the current path */
  const char *what;   /* "argument" or "result" */
  const char *where;  /* "to a worker thread" or "back from a worker thread" */
  int pos;            /* argument or result number */
  size_t tables;      /* tables copied so far (a shared one counts each time) */
  bool oom;
  size_t plen;
  char path[128];     /* where in the value we are: .name[3]["a b"] */
  char msg[320];      /* the refusal, once av_copy_value returned false */
} av_copy;

/* Encode the values at first..last of L into out, numbering them from
 * c->pos; false with c->msg set on the first that cannot be copied. */
bool av_copy_values(av_copy *c, lua_State *L, av_buf *out, int first, int last);

/* Where a decoding is in what av_copy_values wrote. */
typedef struct av_reader {
  const char *p;
} av_reader;

/* Push the next encoded value; raises only on Lua memory errors. */
void av_value_push(lua_State *L, av_reader *r);

/* ================================================================ loop */

/* An op is one thing a task can wait for (a timer, a transfer). Its memory
 * is its Lua userdata; while pending it is anchored in the loop's anchor
 * table, so C never holds a pointer to a collectable op. */
enum av_op_state {
  AV_OP_IDLE,      /* created, not started, or delivered to Lua */
  AV_OP_PENDING,   /* owned by the loop: queued, running or timing */
  AV_OP_READY      /* finished, on the ready list, not yet delivered */
};

typedef struct av_op_vtable {
  /* Stop whatever the op is doing; called only while PENDING. */
  void (*cancel)(av_op *op);
  /* The deadline set with av_deadline_set passed. */
  void (*expire)(av_op *op);
} av_op_vtable;

struct av_op {
  const av_op_vtable *vt;
  av_loop *loop;          /* NULL once the loop is closed */
  int state;
  int ref;                /* anchor ref while PENDING/READY, else LUA_NOREF */
  av_op *rprev, *rnext;   /* ready list */
  uint64_t deadline;      /* loop ms; meaningful while heap_index >= 0 */
  int heap_index;         /* position in the deadline heap, -1 when none */
};

typedef struct av_host av_host;

/* The loop layer's state: libuv, the ready list, the deadline heap, and a
 * host's watchers. The loop userdata (loop.c) holds it and the transport. */
struct av_loop {
  uv_loop_t uv;
  uv_timer_t deadline_timer;  /* earliest op deadline */
  bool closed;
  bool closing;               /* shutting down: start nothing new */
  uint32_t sessions_made;     /* a number for each new session (session.c) */
  /* ops finished and waiting to be handed to Lua */
  av_op *ready_head, *ready_tail;
  size_t n_ready;
  /* min-heap of ops with a deadline */
  av_op **heap;
  size_t heap_len, heap_cap;
  size_t n_pending;           /* ops PENDING or READY */
  size_t n_anchored;          /* anchors made since the anchor table was new */
  /* embedding: watchers on a host's libuv loop (loop:attach), or NULL */
  av_host *host;
  bool busy;                  /* the scheduler has tasks to run now: a host must not block */
};

/* Check that arg idx is an open loop. */
av_loop *av_loop_check(lua_State *L, int idx);
/* Milliseconds of the loop clock, refreshed. */
uint64_t av_loop_now_ms(av_loop *lp);

/* Set up op fields for a new op of a kind. */
void av_op_init(av_op *op, av_loop *loop, const av_op_vtable *vt);
/* User values of every op userdata. */
enum { AV_UV_TOKEN = 1, AV_UV_LOOP = 2, AV_UV_EXTRA = 3, AV_OP_NUV = 3 };
/* A request op also keeps its URL string and its body string (libcurl
 * sends the body from the Lua string, uncopied); once the request is
 * done, the body's slot holds the response body made a Lua string. */
enum { AV_UV_URL = 4, AV_UV_BODY = 5, AV_REQUEST_NUV = 5 };
/* Anchor op (userdata at idx) with its token (at tidx) as PENDING on the loop at loopidx. */
void av_op_start(lua_State *L, av_op *op, int idx, int tidx, int loopidx);
/* Move a PENDING op to the ready list (from any C callback). */
void av_op_finish(av_op *op);
/* Cancel the pending or ready op at idx; true if it was not yet delivered. */
bool av_op_cancel(lua_State *L, int idx);
/* Take op off the loop's ready list (loop:step delivers it). */
void av_ready_unlink(av_loop *lp, av_op *op);
/* Arm op's single deadline ms from now (replacing an earlier one). */
void av_deadline_set(av_op *op, uint64_t ms);
/* Remove op's deadline if it has one. */
void av_deadline_clear(av_op *op);

/* Embedding (host.c). Set the host-side handles to the loop's state
 * (nothing without a host). */
void av_host_arm(av_loop *lp);
/* Put our watchers on the host loop `uv`; a libuv error code on failure. */
int av_host_attach(av_loop *lp, uv_loop_t *uv);
/* Close the host-side handles; libuv finishes on the host's next turn. */
void av_host_detach(av_loop *lp);
/* The host loop named by arg idx: a uv_loop_t * light userdata, or the
 * luv module; NULL for nil; raises on anything else. */
uv_loop_t *av_host_arg(lua_State *L, int idx);
/* loop:attach(host), loop:fd(), loop:timeout([busy]) */
int av_loop_attach(lua_State *L);
int av_loop_fd(lua_State *L);
int av_loop_timeout(lua_State *L);

/* ============================================================ op kinds */
/* Register the timer op metatable; push nothing. */
void av_timer_open(lua_State *L);
/* loop:sleep(token, seconds) -> op */
int av_timer_new(lua_State *L);
/* Register loop:work() and the work op metatable (run_in_thread). */
void av_work_open(lua_State *L);

/* =========================================================== transport */
typedef struct av_sock av_sock;

/* libcurl's multi on one libuv loop: its timer, one poll handle per socket
 * for the socket's life, and a pool of easy handles. */
typedef struct av_transport {
  uv_loop_t *uv;
  uv_timer_t timer;           /* libcurl's single timeout */
  CURLM *multi;
  av_sock **socks;            /* indexed by fd */
  size_t nsocks;
  av_easy *idle_easy;         /* idle easy handles, reused */
  av_easy *busy_easy;         /* handles a user holds (a list through bprev/bnext) */
  size_t n_easy;              /* easy handles alive (idle or busy) */
  size_t n_running;           /* transfers inside libcurl */
  size_t n_paused;            /* busy handles whose user paused them */
  uint64_t ids;               /* last settings id handed out (av_transport_id) */
  char *default_cainfo, *default_capath; /* libcurl's built-in CA places, to restore */
} av_transport;

/* How a transfer's user hears from the transport. */
typedef struct av_xfer_vtable {
  /* libcurl finished the transfer with code. Called after
   * curl_multi_socket_action returned: libcurl may be called again. */
  void (*done)(av_easy *e, CURLcode code);
  /* A socket of the transfer cannot be watched (a libuv error). Called
   * inside libcurl's socket callback: record it, call no libcurl. */
  void (*unwatchable)(av_easy *e, int err);
  /* The transport is closing with the handle still held (a streamed
   * response nobody finished): end the transfer and put the handle back. */
  void (*aborted)(av_easy *e);
} av_xfer_vtable;

/* TLS settings a user gives its transfers (a session's). */
typedef struct av_tls {
  bool verify;                /* verify certificates */
  char *ca_file;              /* CA bundle instead of the system's, or NULL */
  uint64_t id;                /* 0: libcurl's defaults; else unique to these settings */
} av_tls;

struct av_easy {
  CURL *h;                    /* CURLOPT_PRIVATE: this av_easy */
  av_easy *next;              /* in the idle list */
  av_easy *bprev, *bnext;     /* in the busy list */
  const av_xfer_vtable *vt;   /* the user's, while busy */
  void *user;
  bool fresh;                 /* new: no request options set yet */
  bool busy;                  /* a user holds it (between get and put) */
  bool paused;                /* its user paused the transfer (av_xfer_paused) */
  int local_port, remote_port; /* of the transfer's connection (av_xfer_connection) */
  uint32_t use;               /* transfers it was handed out for */
  uint64_t tls_id;            /* the TLS settings it has (see av_tls) */
  uint64_t client_id;         /* its user's settings it has (opaque here: an id of av_transport_id) */
  CURLSH *share;              /* the cookie jar it uses (av_easy_share), or NULL */
  bool cookie_engine;         /* libcurl's cookie engine is on for the handle */
  char errbuf[CURL_ERROR_SIZE];
};

/* Create the multi handle and its timer on uv; -1 on failure. */
int av_transport_init(av_transport *t, uv_loop_t *uv);
/* Tear down libcurl state: easy handles, then the multi (which closes
 * every pooled socket), then the poll handles and the timer. */
void av_transport_close(av_transport *t);
/* Sockets with a poll handle now. */
size_t av_transport_sockets(const av_transport *t);
/* A new settings id, unique in this transport (av_tls.id, av_easy.client_id). */
uint64_t av_transport_id(av_transport *t);
/* A new cookie jar: a share handle of libcurl's that shares cookies; NULL
 * on OOM. Free it with av_transport_drop_jar. */
CURLSH *av_transport_jar(void);
/* Free a jar: detach it from the idle handles that still use it (busy
 * ones must not), then the share itself. */
void av_transport_drop_jar(av_transport *t, CURLSH *jar);
/* An idle easy handle from the pool, or a new one (fresh, with this
 * transport's socket options set), for user and its vtable; NULL on OOM.
 * A pooled handle keeps the options of its last transfer. */
av_easy *av_easy_get(av_transport *t, const av_xfer_vtable *vt, void *user);
/* Return an easy handle to the pool after the transfer. */
void av_easy_put(av_transport *t, av_easy *e);
/* Free a handle instead of pooling it: one with state of its last
 * transfer that no option clears (libcurl's Digest nonce and realm). */
void av_easy_discard(av_transport *t, av_easy *e);
/* Give e the TLS settings tls, unless it has them already. */
void av_easy_tls(av_transport *t, av_easy *e, const av_tls *tls);
/* Make e keep and send cookies in jar (NULL: none), unless it does already. */
void av_easy_jar(av_easy *e, CURLSH *jar);
/* Hand e's transfer to libcurl. */
CURLMcode av_xfer_start(av_transport *t, av_easy *e);
/* Take e's transfer back from libcurl (finished or cancelled). */
void av_xfer_stop(av_transport *t, av_easy *e);
/* e's transfer runs on the connection with these local and remote ports
 * (libcurl's PREREQFUNCTION tells them): how a paused transfer's socket is
 * known. */
void av_xfer_connection(av_easy *e, int local_port, int remote_port);
/* e's user paused (or unpaused) its transfer: its connection, idle to
 * libcurl meanwhile, is not shut down when it turns readable. */
void av_xfer_paused(av_transport *t, av_easy *e, bool paused);

/* ============================================================= request */

/* libcurl allocates its receive buffer at every transfer start; at its
 * default 16 KiB that allocation fragments a heap shared with Lua and cost
 * a quarter more CPU per small request (measured). 4 KiB keeps small
 * answers to one read; sessions can raise it (read_bufsize). */
#define AV_DEFAULT_BUFSIZE 4096

/* The most bytes of response headers kept for one response: under
 * libcurl 7.88's own 300 KiB, so that ours is the error a user sees. */
#define AV_MAX_HEADER_BLOCK (256 * 1024)

/* A client's settings (client.c): auth, proxy, cookies for every host,
 * redirect control. Strings are owned; NULL means none. */
typedef struct av_client {
  uint64_t id;                /* unique to these settings (av_transport_id) */
  char *user, *password;      /* auth, or user NULL */
  long auth;                  /* CURLAUTH_BASIC or CURLAUTH_DIGEST */
  char *proxy_http, *proxy_https; /* the proxy for each scheme, or NULL */
  char *no_proxy;             /* hosts reached without one (libcurl's NOPROXY) */
  char *proxy_user, *proxy_password;
  char *cookie;               /* "a=b; c=d": sent to the request's origin (CURLOPT_COOKIE) */
  char *seed_cookie;          /* ... and to another origin a redirect reaches, when cross_cookie */
  bool cross_cookie;          /* a Cookie header's text is in `cookie`: another origin gets seed_cookie */
  int max_redirects;          /* followed at most */
  bool follow;                /* allow_redirects */
} av_client;

/* Read the settings table at idx (nil: the defaults) into c, with id;
 * false on OOM (c is then empty). session.lua has checked the values. */
bool av_client_read(lua_State *L, int idx, av_client *c, uint64_t id);
/* Free c's strings. */
void av_client_free(av_client *c);
/* Replace c's cookie line (NULL: none), under a new id; false on OOM. */
bool av_client_set_cookie(av_client *c, const char *cookie, uint64_t id);
/* Give e's next transfer c's settings: the proxy for its scheme, and the
 * credentials only if `credentials` (a hop to another origin has none).
 * True when Digest credentials are set. */
bool av_client_apply(const av_client *c, av_easy *e, bool https, bool credentials);

/* A trace being recorded (trace.c): the requests that ended, and the
 * limits as they moved. Made when a trace starts, freed when it stops. */
typedef struct av_trace {
  av_buf requests;            /* one record per ended request, its strings after it */
  av_buf limits;              /* one sample per limit change, its key after it */
  uint32_t epoch;             /* this trace's number in its loop (>= 1): a limit
                               * is shown once in each trace, then as it changes */
} av_trace;

/* What a request takes from its owner (a session), and how it tells the
 * owner that it gave its slot up. */
typedef struct av_request_owner {
  av_transport *transport;
  av_client client;           /* the settings of requests that give none of their own */
  av_trace **trace;           /* where ended requests are recorded while a trace is on (*trace), or NULL */
  const bool *trace_headers;  /* whether records keep the header lines */
  CURLSH *jar;                /* the cookie jar (av_transport_jar), or NULL for none */
  struct curl_slist *headers; /* default headers */
  struct curl_slist *headers_bodyless; /* the same for a POST without a body: no Content-Type */
  struct curl_slist *headers_nobody; /* the same for other requests without a body: no "Expect:" */
  long read_bufsize;          /* libcurl's receive buffer for each transfer */
  av_tls tls;
  /* A request that av_request_run started has ended: finished, failed,
   * expired or cancelled. Called once per start, from any callback. */
  void (*ended)(av_request *req);
} av_request_owner;

enum av_req_phase { AV_REQ_NEW, AV_REQ_RUNNING, AV_REQ_DONE };

/* Why a libcurl callback of ours ended a transfer (av_request.fault). */
enum av_req_fault {
  AV_FAULT_NONE,
  AV_FAULT_BODY_TOO_LARGE,    /* the body passed max_body */
  AV_FAULT_HEADERS_TOO_LARGE, /* the header block passed AV_MAX_HEADER_BLOCK */
  AV_FAULT_FRAMING,           /* the response's framing is unsafe (see av_response_check) */
  AV_FAULT_FILE,              /* the body's file could not be read (errno in upload_errno) */
  AV_FAULT_NO_MEMORY
};

/* What the raw header lines of one response say about its framing:
 * libcurl 7.88 accepts a response that ends before its header block does,
 * and two different Content-Length values (RFC 9112 6.3: an error). */
typedef struct av_response_check {
  /* (small types: the check is part of every request op) */
  int16_t status;             /* of the last status line, 0 before one */
  bool complete;              /* its blank line arrived */
  bool location;              /* it has a Location header */
  bool digest;                /* it has a Digest challenge (WWW-Authenticate: Digest ...) */
  bool encoded;               /* it has a Transfer-Encoding header */
  uint8_t coding;             /* a stream's Content-Encoding (AV_CODING_*), what av_coding_of makes of it */
  bool has_length;            /* a Content-Length was seen ... */
  curl_off_t length;          /* ... with this value */
  curl_off_t other_length;    /* a value that disagrees with it, when fault is FRAMING
                               * (-1: malformed; -2: Transfer-Encoding beside it) */
} av_response_check;

struct av_request {
  av_op op;                   /* first: an av_request is an av_op */
  /* (fields grouped by size: the op is the userdata of every request) */
  av_request_owner *owner;
  av_easy *easy;              /* while running */
  const char *url;            /* the Lua string in user value AV_UV_URL */
  struct curl_slist *headers; /* owned (one block: av_headers_free); NULL means the owner's defaults */
  const char *body;           /* the Lua string in user value AV_UV_BODY */
  size_t body_len;
  size_t max_body;
  char *upload_path;          /* a file body (avideo.file), or NULL ... */
  FILE *upload;               /* ... opened when the request runs, read as it is sent */
  /* a body the task hands over piece by piece (data = function, `pull`):
   * libcurl sends it chunked; while it wants more the transfer pauses and
   * the op is ready with want_body set, and op:write gives the next piece */
  av_buf pull_buf;            /* the piece not yet sent, from pull_off on */
  size_t pull_off;
  av_part *parts;             /* a multipart body's parts (multipart.c), or NULL */
  size_t nparts;
  curl_mime *mime;            /* ... made from them while the request runs */
  /* a streamed response (`stream`): the op is ready once the final
   * response's header block is in; the body then waits in resp_body from
   * body_off on, at most about stream_limit bytes: past that the transfer
   * pauses until the reader takes some (op:read) */
  size_t stream_limit;
  size_t body_off;
  av_inflate *inflate;        /* a stream's gzip/deflate decoder: resp_body then holds compressed bytes */
  av_buf resp_body;           /* until body_made */
  av_buf resp_headers;
  av_response_check check;    /* the current response's header block, as it arrives */
  char *effective_url;        /* set only after redirects */
  av_client *client;          /* settings of the request's own (owned), or NULL: the owner's */
  av_buf *history;            /* the responses redirected from (av_request_history), or NULL */
  const char *err_kind;       /* NULL on success */
  const char *err_phase;      /* which clock, for a timeout; "reset" when the
                               * peer reset or closed the connection; else NULL */
  char *err_message;
  long total_ms, connect_ms, sock_read_ms, pool_ms; /* 0 = none */
  long hop_total_ms;          /* what is left of total_ms for this hop (libcurl's) */
  long status;
  uint64_t created;           /* uv_hrtime() when it was made: the call */
  uint64_t started;           /* uv_hrtime() when it got its slot */
  uint64_t ended;             /* uv_hrtime() when its transfer ended, 0 before */
  uint64_t paused_at;         /* uv_hrtime() when we last paused it for a slow reader */
  uint64_t paused_ns;         /* how long it was paused so in all: the reader's
                               * pace, which the adaptive limit leaves out */
  /* the final hop's phases from libcurl (each since the hop began, as
   * curl's -w time_*), and the time spent on the hops before it: µs,
   * saturating at UINT32_MAX (71 minutes) */
  uint32_t t_dns, t_connect, t_tls, t_sent, t_first_byte, t_redirect;
  uint64_t last_read;         /* loop ms of the last byte, for sock_read */
  int phase;
  int sock_error;             /* libuv error: a socket could not be watched */
  int redirects;              /* redirects followed */
  int fault;                  /* enum av_req_fault: why a callback stopped the transfer */
  int upload_errno;           /* why the body's file could not be read (0: it shrank) */
  char method[12];
  bool url_rewritten;         /* url is not the caller's (an international host made ASCII) */
  bool has_body;
  bool connected;             /* this hop has its connection (PREREQFUNCTION ran) */
  bool sending;               /* this hop's body is not all sent: sock_read waits */
  bool pull;
  bool want_body;
  bool pull_eof;              /* op:write(nil): no more; without `pull`: a redirect
                               * to GET dropped the body, pieces are discarded */
  bool stream;
  bool stream_ready;          /* its header block is in: result() and read() work */
  bool paused;                /* we paused the transfer: the reader lags */
  bool closed;                /* op:close(), or its collection, ended it early */
  bool body_made;             /* the response body is a Lua string in user value AV_UV_BODY */
  bool no_credentials;        /* a hop went to another origin: no auth from here on */
  bool auth_retry;            /* libcurl sent this hop's request again (an auth challenge) */
  bool digest;                /* Digest credentials went out on its handle */
  bool reused;                /* the final hop ran on a kept-alive connection */
};

/* Append req's trace record (trace.c): it has ended, with down and up
 * body bytes moved and its first `reached` phases reached; its header
 * lines too if the owner's trace_headers says so. */
void av_trace_request(av_trace *trace, const av_request *req, int64_t down, int64_t up, int reached);
/* Append a sample: the limit of key ("scheme://host:port"; NULL: the
 * total) is `limit` (0 = none) from time at (uv_hrtime) on. */
void av_trace_limit(av_trace *trace, uint32_t session, const char *key, lua_Integer limit, uint64_t at);
/* Push the records in trace (NULL: none) as two lists of tables, the
 * requests and the limit samples (fields: trace.c); returns 2. */
int av_trace_push(lua_State *L, const av_trace *trace);

/* The smallest buffer a streamed response pauses at (read_bufsize may
 * raise it): big enough for libcurl to keep a fast download going. */
#define AV_STREAM_BUFFER (64 * 1024)

/* Register the request op metatable. */
void av_request_open(lua_State *L);
/* Whether path cannot be sent as a body: unreadable, or not a regular
 * file (a FIFO would block the loop, a directory fail mid-upload); if so
 * the reason is pushed, else *st is its stat. Checked before anything is
 * sent. */
bool av_file_refused(lua_State *L, const char *path, struct stat *st);
/* core.file_refusal(path) -> nil | the reason (av_file_refused) */
int av_file_refusal(lua_State *L);
/* The settings req runs with: its own, or its owner's (client.c). */
const av_client *av_request_client(const av_request *req);
/* Read session:request()'s arguments (token at 2, then method, url,
 * headers, body, total, connect, sock_read, pool, max_body, stream) into a new
 * request op of `size` bytes (an owner may extend the struct), anchored
 * on the loop at loopidx as PENDING, with the owner's userdata at 1 as its
 * extra user value. Pushes the op and returns it with its limiter key in
 * *key (valid while the op lives); NULL with nil, "invalid", message
 * pushed on bad input. */
av_request *av_request_new(lua_State *L, size_t size, av_loop *lp, int loopidx, const av_op_vtable *vt,
                           av_request_owner *owner, av_url_cache *cache, const char **key);
/* Start req's transfer (it has its slot). False if that failed: req is
 * then finished with an error and its owner's `ended` is not called. */
bool av_request_run(av_request *req);
/* Stop a running req (its op was cancelled); calls `ended`. */
void av_request_stop(av_request *req);
/* The deadline of a running req passed: sock_read, or a socket that
 * could not be watched. */
void av_request_expire(av_request *req);
/* The wait (s) the last response's Retry-After asks for (seconds or an
 * HTTP date; a past date is 0), or -1 without a readable one. */
double av_request_retry_after(const av_request *req);
/* Mark req, never started or stopped, as cancelled. */
void av_request_cancelled(av_request *req);
/* End req with an error before or instead of its transfer. */
void av_request_fail(av_request *req, const char *kind, const char *fmt, ...);
/* End req with the timeout of a phase ("connect", "total", "sock_read",
 * "pool"), which reaches Lua as data. */
void av_request_timeout(av_request *req, const char *phase, const char *what, long ms);

/* receive.c: libcurl's data callbacks for a request, which only record
 * bytes, clocks and checks. */
/* Set the callbacks on a fresh easy handle. */
void av_receive_setup(CURL *h);
/* Point the callbacks of h at req. */
void av_receive_attach(CURL *h, av_request *req);
/* Forget what an earlier hop received. */
void av_receive_reset(av_request *req);
/* Move req's op to the ready list if its task waits for what came: the
 * response (a stream's header block, or the end), or a stream's bytes. */
void av_receive_wake(av_request *req);

/* multipart.c: multipart/form-data bodies. */
/* Copy the parts listed in the table at idx ({name, data | path,
 * filename, content_type}, ...) into req; false when out of memory or a
 * part is malformed (session.lua makes them). */
bool av_multipart_read(lua_State *L, int idx, av_request *req);
/* Make req's parts the mime body of h; libcurl's code when it cannot (a
 * file part gone, out of memory). */
CURLcode av_multipart_attach(av_request *req, CURL *h);
/* Take the mime body off h and free it (the transfer is over). */
void av_multipart_detach(av_request *req, CURL *h);
/* Free req's parts. */
void av_multipart_free(av_request *req);

/* ============================================================= limiter */
typedef struct av_lkey av_lkey;

/* bucket.c: a token bucket (`rate`, `rate_per_host`): one start every
 * per/n seconds, up to n at once after a quiet spell; a new one holds one. */
typedef struct av_rate {
  double n;                   /* 0 = no rate limit */
  double per;                 /* seconds */
} av_rate;

typedef struct av_bucket {
  double tokens;
  uint64_t at;                /* uv_hrtime of the last refill; 0: never used (full) */
} av_bucket;

/* Refill b to now; true if a token is there. */
bool av_bucket_ready(av_bucket *b, const av_rate *r, uint64_t now);
/* Take a token (av_bucket_ready said there is one). */
void av_bucket_take(av_bucket *b);
/* Give back a token taken for a start that failed. */
void av_bucket_give(av_bucket *b, const av_rate *r);
/* Whether b would be full at now (nothing taken that is not back). */
bool av_bucket_full(const av_bucket *b, const av_rate *r, uint64_t now);
/* When (ns) the next token is there, after av_bucket_ready said no. */
uint64_t av_bucket_ready_at(const av_bucket *b, const av_rate *r);

/* adapt.c: an adaptive concurrency limit (`"auto"`), pure arithmetic fed
 * by each request's end. */
enum av_algorithm { AV_ALGO_GRADIENT, AV_ALGO_AIMD };

typedef struct av_adapt_conf {
  bool on;                    /* false: the limit is fixed */
  int algorithm;              /* enum av_algorithm */
  double initial, min, max;
} av_adapt_conf;

/* What a request's end says to an adaptive limit. */
enum av_outcome {
  AV_OUT_NONE,                /* says nothing (cancelled, a 500, a refused start) */
  AV_OUT_SAMPLE,              /* answered: its latency is a sample */
  AV_OUT_DROP                 /* 429, 503, a timeout or a reset: too much */
};

/* A window's best latency is its AV_ADAPT_LOW_N-th smallest (adapt.c). */
#define AV_ADAPT_LOW_N 3

typedef struct av_adapt {
  double limit;               /* min..max; the limit is its floor */
  double lat_min;             /* best latency (s): this window's and the last's, 0: none yet */
  double win_low[AV_ADAPT_LOW_N]; /* the smallest of the window being collected, ascending, 0: none */
  double prev_low;            /* the last window's best, 0: none */
  double lat_recent;          /* moving average (s), 0 before a sample */
  uint32_t win_n;             /* samples in that window */
  double w_max;               /* the limit before the last cut; 0: none yet (slow start) */
  double proven;              /* most in flight under which an answer came near the best, since the last cut */
  uint64_t last_cut;          /* uv_hrtime of the last cut */
  uint64_t prev_cut;          /* ... and of the one before it */
  double cut_slow;            /* the slowness of the answer that made it (inf: a drop, or a cut that ended a ramp) */
} av_adapt;

/* A fresh state for conf. */
void av_adapt_init(av_adapt *a, const av_adapt_conf *c);
/* Record the latency of an answered request (always: limits() shows it). */
void av_adapt_measure(av_adapt *a, double latency);
/* How much slower than a's best latency (1: no queue, within the
 * tolerated jitter). */
double av_adapt_slowness(const av_adapt *a, double latency);
/* Move the limit for a request that started at `started` (ns), with
 * `in_flight` running under this limit when it started, and ended now;
 * `slow` is its latency over its host's best (1: as fast as can be). */
void av_adapt_update(av_adapt *a, const av_adapt_conf *c, enum av_outcome out, double slow,
                     uint64_t started, double in_flight, uint64_t now);
/* The whole limit now (>= 1). */
lua_Integer av_adapt_limit(const av_adapt *a);

/* A request's place in the limiter (embedded in its owner's struct). */
typedef struct av_lnode {
  av_lkey *key;               /* while queued or in flight */
  struct av_lnode *prev, *next; /* FIFO links while queued */
  uint64_t seq;
  double host_in_flight;      /* its key's in flight when it started (itself included) */
  double total_in_flight;     /* the same in total */
  bool queued;
} av_lnode;

/* aiohttp's limits: `limit` in flight in total and `limit_per_host` per
 * key, waiters in FIFOs per key, the oldest waiter that fits goes next;
 * each limit fixed or adaptive, and token buckets on the starts. */
typedef struct av_limiter {
  lua_Integer limit;          /* fixed; 0 = none */
  lua_Integer limit_per_host; /* fixed; 0 = none */
  av_adapt_conf auto_total;   /* limit = "auto" */
  av_adapt_conf auto_host;    /* limit_per_host = "auto" */
  av_adapt total;             /* the adaptive total's state */
  av_rate rate, rate_per_host;
  av_bucket bucket;           /* the total rate's */
  lua_Integer in_flight;
  size_t queued;
  uint64_t seq;
  av_lkey **buckets;          /* keys by hash */
  size_t nbuckets, nkeys;
  av_lkey *waiting;           /* keys that have waiters */
  uint64_t clock;             /* ns: the last time admit or report was told */
  bool total_given;           /* `limit` was given, or set at run time: limits() shows it */
  bool total_set, host_set;   /* set at run time (set_limit): a trace shows them */
  lua_Integer total_shown;    /* the total a trace was last shown ... */
  uint32_t total_shown_epoch; /* ... in this trace (av_trace.epoch), 0: none */
} av_limiter;

/* A key's state, for session:limits(). */
typedef struct av_lkey_info {
  const char *name;           /* "scheme://host:port"; NULL: the total */
  lua_Integer limit;          /* its limit now (0 = none) */
  lua_Integer in_flight;
  size_t queued;
  double latency_min, latency_recent; /* seconds, 0 = not measured */
} av_lkey_info;

enum av_admit { AV_ADMIT_RUN, AV_ADMIT_QUEUED, AV_ADMIT_NO_MEMORY };

/* Start the adaptive states (after the confs are set). */
void av_limiter_init(av_limiter *l);
/* Take a slot for n under key at time now (ns), or queue n behind the key's waiters. */
enum av_admit av_limiter_admit(av_limiter *l, av_lnode *n, const char *key, uint64_t now);
/* Take a queued n out of its queue (cancelled, or timed out). */
void av_limiter_unqueue(av_limiter *l, av_lnode *n);
/* What n's end says, before its slot is given back: `pause` seconds
 * (Retry-After, < 0 for none) stop its key when its limit adapts. */
void av_limiter_report(av_limiter *l, const av_lnode *n, enum av_outcome out, double latency, uint64_t started,
                       double pause, uint64_t now);
/* Give n's slot back. */
void av_limiter_release(av_limiter *l, av_lnode *n);
/* Give n's slot back, and the rate tokens it took: its start failed
 * before anything was sent (out of memory, a handle that cannot start). */
void av_limiter_unstart(av_limiter *l, av_lnode *n);
/* The oldest waiter whose key has room at time now, taken out of its
 * queue with a slot; NULL if none may start. */
av_lnode *av_limiter_next(av_limiter *l, uint64_t now);
/* The head of the waiting key that a clock holds back (a rate's token, a
 * pause) and would let go the soonest, and when (*at, ns); NULL if no
 * waiter waits only for time. */
av_lnode *av_limiter_alarm(av_limiter *l, uint64_t now, uint64_t *at);
/* Any waiter, taken out of its queue without a slot; NULL if none. */
av_lnode *av_limiter_drop(av_limiter *l);
/* Call fn for each key, then for the total when it was given or adapts
 * (session:limits()). */
void av_limiter_each(av_limiter *l, void (*fn)(void *ud, const av_lkey_info *info), void *ud);
/* For the trace numbered epoch: call fn with each limit that moves (it
 * adapts, or was set at run time) and differs from what fn was last given
 * in this epoch: n's key's (n NULL: every key's), then the total's (key
 * NULL). No allocation: what was shown is kept in the key. */
void av_limiter_show(av_limiter *l, const av_lnode *n, uint32_t epoch,
                     void (*fn)(void *ud, const char *key, lua_Integer limit), void *ud);
/* Free the keys (nothing may be queued or in flight). */
void av_limiter_free(av_limiter *l);

/* ================================================================= top */

/* The loop userdata: the loop layer and the transport on it. */
typedef struct av_core_loop {
  av_loop loop;               /* first: the userdata is an av_loop */
  av_transport transport;
  av_trace *trace;            /* what a trace records while one is on, else NULL */
  uint32_t trace_epochs;      /* traces started (av_trace.epoch) */
  bool trace_headers;         /* ... with their header lines (HAR's) */
} av_core_loop;

/* Register the loop metatable and the constructor in the table on top. */
void av_loop_open(lua_State *L);
/* Register the session metatable and loop:session(). */
void av_session_open(lua_State *L);

#endif
