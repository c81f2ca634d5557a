/* avideo.core internals: one header that declares every internal function
 * with a one-line purpose. Only luaopen_avideo_core is exported; the public
 * header for hosts is include/avideo.h. docs/architecture.md has the layers,
 * one request's path through these files, and the rules they keep. */
#ifndef AVIDEO_PRIVATE_H
#define AVIDEO_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "avideo.h"

#define AV_LOOP_MT "avideo.loop"
#define AV_SESSION_MT "avideo.session_core"
#define AV_TIMER_MT "avideo.timer_op"
#define AV_REQUEST_MT "avideo.request_op"

/* libcurl allocates its receive buffer at every transfer start; at its
 * default 16 KiB that allocation fragments a heap shared with Lua and cost
 * a quarter more CPU per small request (measured). 4 KiB keeps small
 * answers to one read; sessions can raise it (read_bufsize). */
#define AV_DEFAULT_BUFSIZE 4096

/* The most bytes of response headers kept for one response. */
#define AV_MAX_HEADER_BLOCK (1024 * 1024)

typedef struct av_loop av_loop;
typedef struct av_op av_op;
typedef struct av_session av_session;
typedef struct av_hostq av_hostq;
typedef struct av_request av_request;

/* ---------------------------------------------------------------- ops --
 * An op is one thing a task can wait for (a timer, a transfer). Its memory
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

/* Set up op fields for a new op of a kind. */
void av_op_init(av_op *op, av_loop *loop, const av_op_vtable *vt);
/* User values of every op userdata. */
enum { AV_UV_TOKEN = 1, AV_UV_LOOP = 2, AV_UV_EXTRA = 3, AV_OP_NUV = 3 };
/* A request op also keeps its URL string and its body string (libcurl
 * sends the body from the Lua string, uncopied). */
enum { AV_UV_URL = 4, AV_UV_BODY = 5, AV_REQUEST_NUV = 5 };
/* Anchor op (userdata at idx) with its token (at tidx) as PENDING on the loop at loopidx. */
void av_op_start(lua_State *L, av_op *op, int idx, int tidx, int loopidx);
/* Move a PENDING op to the ready list (from any C callback). */
void av_op_finish(av_op *op);
/* Cancel the pending or ready op at idx; true if it was not yet delivered. */
bool av_op_cancel(lua_State *L, int idx);
/* Take op off the loop's ready list (loop:step delivers it). */
void av_ready_unlink(av_loop *lp, av_op *op);

/* ------------------------------------------------------------ deadlines */
/* Arm op's single deadline ms from now (replacing an earlier one). */
void av_deadline_set(av_op *op, uint64_t ms);
/* Remove op's deadline if it has one. */
void av_deadline_clear(av_op *op);

/* ----------------------------------------------------------------- loop */
typedef struct av_sock av_sock;
typedef struct av_easy av_easy;
typedef struct av_host av_host;

struct av_loop {
  uv_loop_t uv;
  uv_timer_t curl_timer;      /* libcurl's single timeout */
  uv_timer_t deadline_timer;  /* earliest op deadline */
  CURLM *multi;
  bool closed;
  bool closing;               /* shutting down: start nothing new */
  /* one poll handle per socket for the socket's life, indexed by fd */
  av_sock **socks;
  size_t nsocks;
  /* idle easy handles, reused */
  av_easy *idle_easy;
  size_t n_easy;              /* easy handles alive (idle or busy) */
  /* ops finished and waiting to be handed to Lua */
  av_op *ready_head, *ready_tail;
  size_t n_ready;
  /* min-heap of ops with a deadline */
  av_op **heap;
  size_t heap_len, heap_cap;
  size_t n_pending;           /* ops PENDING or READY */
  size_t n_anchored;          /* anchors made since the anchor table was new */
  size_t n_running;           /* transfers inside libcurl */
  /* embedding: watchers on a host's libuv loop (loop:attach), or NULL */
  av_host *host;
  bool busy;                  /* the scheduler has tasks to run now: a host must not block */
  uint64_t tls_ids;           /* last av_session.tls_id handed out */
  char *default_cainfo, *default_capath; /* libcurl's built-in CA places, to restore */
};

/* Check that arg idx is an open loop. */
av_loop *av_loop_check(lua_State *L, int idx);
/* Register the loop metatable and the constructor in the table on top. */
void av_loop_open(lua_State *L);
/* Milliseconds of the loop clock, refreshed. */
uint64_t av_loop_now_ms(av_loop *lp);

/* ------------------------------------------------------------ embedding */
/* Set the host-side handles to the loop's state (nothing without a host). */
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

/* ----------------------------------------------------------- curl glue */
/* Create the multi handle and its timer/socket callbacks. */
int av_curl_init(av_loop *lp);
/* Hand an easy handle to libcurl (request got its slot). */
CURLMcode av_curl_add(av_loop *lp, CURL *easy);
/* Take an easy handle back from libcurl (finished or cancelled). */
void av_curl_remove(av_loop *lp, CURL *easy);
/* Tear down libcurl state: multi cleanup closes every socket. */
void av_curl_close(av_loop *lp);
/* An idle easy handle from the pool, or a new one (fresh, with this loop's
 * socket options set); NULL on OOM. A pooled handle keeps the options of
 * its last transfer. */
av_easy *av_easy_get(av_loop *lp);
/* Return an easy handle to the pool after the transfer. */
void av_easy_put(av_loop *lp, av_easy *e);
/* Give e the TLS settings of session s, unless it has them already. */
void av_easy_tls(av_loop *lp, av_easy *e, const av_session *s);

struct av_easy {
  CURL *h;
  av_easy *next;
  bool fresh;                 /* new: no request options set yet */
  bool busy;                  /* a request holds it (between get and put) */
  uint32_t use;               /* transfers it was handed out for */
  uint64_t tls_id;            /* the session TLS settings it has (see av_session) */
  char errbuf[CURL_ERROR_SIZE];
};

/* -------------------------------------------------------------- timers */
/* Register the timer op metatable; push nothing. */
void av_timer_open(lua_State *L);
/* loop:sleep(token, seconds) -> op */
int av_timer_new(lua_State *L);

/* ------------------------------------------------------------- session */
struct av_session {
  av_loop *loop;
  lua_Integer limit;          /* 0 = none */
  lua_Integer limit_per_host; /* 0 = none */
  lua_Integer in_flight;
  uint64_t seq;
  av_hostq **buckets;         /* per (scheme, host, port) state */
  size_t nbuckets, nkeys;
  av_hostq *waiting;          /* keys that have queued requests */
  struct curl_slist *headers; /* default headers, shared by requests */
  long read_bufsize;          /* libcurl's receive buffer for each transfer */
  bool tls_verify;            /* verify certificates (ssl = false turns it off) */
  char *ca_file;              /* CA bundle instead of the system's, or NULL */
  uint64_t tls_id;            /* 0: default TLS settings; else unique to this session */
  char *origin;               /* last origin checked, as written ... */
  size_t origin_len;
  char *origin_key;           /* ... and its limiter key */
  bool closed;
};

struct av_hostq {
  av_hostq *bnext;            /* hash chain */
  av_hostq *wprev, *wnext;    /* in session->waiting while it has waiters */
  lua_Integer in_flight;
  av_request *head, *tail;    /* FIFO of queued requests */
  uint32_t hash;
  char key[];                 /* "scheme://host:port" */
};

/* Register the session metatable and loop:session(). */
void av_session_open(lua_State *L);
/* Queue or start req under the session's limits. */
void av_session_acquire(av_session *s, av_request *req, const char *key);
/* Drop req from its host queue (cancelled or pool timeout while queued). */
void av_session_unqueue(av_session *s, av_request *req);
/* A running req ended: free its slot and start waiters that now fit. */
void av_session_release(av_session *s, av_request *req);
/* Check that idx is a session of an open loop. */
av_session *av_session_check(lua_State *L, int idx);

/* ------------------------------------------------------------- headers */
/* Append the flat header list {n1, v1, ...} at idx to *list; false with a
 * message pushed on bad input. body_len: the request body's size, or -1
 * for a session's default headers (framing headers are checked against it). */
bool av_headers_append(lua_State *L, int idx, struct curl_slist **list, long long body_len);
/* Append to *list the entries of defaults whose names *list lacks; false
 * when out of memory. */
bool av_headers_inherit(struct curl_slist **list, const struct curl_slist *defaults);
/* Append the headers every session sends unless the user gave them:
 * User-Agent, Accept-Encoding (what libcurl decodes), and "Expect:" (no
 * 100-continue wait); false when out of memory. */
bool av_headers_defaults(struct curl_slist **list);

/* ----------------------------------------------------------------- urls */
/* Check the request URL at urlidx and push its limiter key
 * ("scheme://host:port") and the URL to send (itself, or the ASCII form of
 * an international host name); NULL, or why it is refused (pushed). */
const char *av_url_key(lua_State *L, av_session *s, int urlidx);

/* ------------------------------------------------------------- request */
typedef struct av_buf {
  char *data;
  size_t len, cap;
} av_buf;

enum av_req_phase { AV_REQ_NEW, AV_REQ_QUEUED, AV_REQ_RUNNING, AV_REQ_DONE };

/* Why a libcurl callback of ours ended a transfer (av_request.fault). */
enum av_req_fault {
  AV_FAULT_NONE,
  AV_FAULT_BODY_TOO_LARGE,    /* the body passed max_body */
  AV_FAULT_HEADERS_TOO_LARGE, /* the header block passed AV_MAX_HEADER_BLOCK */
  AV_FAULT_FRAMING,           /* the response's framing is unsafe (see av_response_check) */
  AV_FAULT_NO_MEMORY
};

/* What the raw header lines of one response say about its framing:
 * libcurl 7.88 accepts a response that ends before its header block does,
 * and two different Content-Length values (RFC 9112 6.3: an error). */
typedef struct av_response_check {
  int status;                 /* of the last status line, 0 before one */
  bool complete;              /* its blank line arrived */
  bool has_length;            /* a Content-Length was seen ... */
  curl_off_t length;          /* ... with this value */
  curl_off_t other_length;    /* a value that disagrees with it, when fault is FRAMING */
} av_response_check;

struct av_request {
  av_op op;                   /* first: an av_request is an av_op */
  av_session *session;
  av_hostq *hq;
  av_request *qprev, *qnext;  /* FIFO links in hq */
  uint64_t seq;
  int phase;
  av_easy *easy;              /* while running */
  const char *url;            /* the Lua string in user value AV_UV_URL */
  bool url_rewritten;         /* url is not the caller's (an international host made ASCII) */
  struct curl_slist *headers; /* owned; NULL means the session's defaults */
  const char *body;           /* the Lua string in user value AV_UV_BODY */
  size_t body_len;
  bool has_body;
  char method[12];
  long total_ms, connect_ms, sock_read_ms, pool_ms; /* 0 = none */
  uint64_t started;           /* loop ms when the request got its slot */
  long hop_total_ms;          /* what is left of total_ms for this hop (libcurl's) */
  uint64_t last_read;         /* loop ms of the last byte, for sock_read */
  bool connected;             /* this hop has its connection (PREREQFUNCTION ran) */
  bool sending;               /* this hop's body is not all sent: sock_read waits */
  int sock_error;             /* libuv error: a socket could not be watched */
  int redirects;              /* redirects followed */
  size_t max_body;
  av_buf resp_body;
  av_buf resp_headers;
  av_response_check check;    /* the current response's header block, as it arrives */
  long status;
  char *effective_url;        /* set only after redirects */
  const char *err_kind;       /* NULL on success */
  const char *err_phase;      /* which clock, for a timeout; else NULL */
  char *err_message;
  int fault;                  /* enum av_req_fault: why a callback stopped the transfer */
};

/* Register the request op metatable and session:request(). */
void av_request_open(lua_State *L);
/* session:request(token, method, url, headers, body, total, connect, sock_read, pool, max_body) */
int av_request_new(lua_State *L);
/* The request got its slot: set up an easy handle and give it to libcurl.
 * False if that failed (the request is then finished with an error). */
bool av_request_run(av_request *req);
/* End req with an error before or instead of its transfer. */
void av_request_fail(av_request *req, const char *kind, const char *fmt, ...);
/* libcurl finished req (msg copied): collect the result and release. */
void av_request_done(av_request *req, CURLcode code);
/* Set the easy handle's method and body options to req's. */
void av_request_set_method(av_request *req, CURL *h);
/* End req with the timeout that ran out: connect while it had no
 * connection, else total. */
void av_request_timed_out(av_request *req);

/* ------------------------------------------------------------ redirects */
/* req's transfer ended with a response of status req->status (libcurl
 * never follows redirects itself: see redirect.c). A redirect:
 * take the next hop on the same easy handle and slot and return true (if
 * that cannot start, req is failed and released), or fail req when the
 * redirect is refused and return false (req is then DONE, still attached).
 * Any other response: false, req untouched. */
bool av_redirect_follow(av_request *req);

/* ---------------------------------------------------------------- json */
/* Register core.json_decoder. */
void av_json_open(lua_State *L);
/* core.json_decoder(null, arrays) -> decode(text): json_decode.c */
int av_json_decoder(lua_State *L);

/* --------------------------------------------------------------- codec */
/* How a run_in_thread value is being encoded (codec.c). */
typedef struct av_copy {
  lua_State *L;
  av_buf *out;
  int seen;           /* stack index of a set of the tables on the current path */
  const char *what;   /* "argument" or "result" */
  const char *where;  /* "to a worker thread" or "back from a worker thread" */
  int pos;            /* argument or result number */
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

/* ---------------------------------------------------------------- work */
/* Register loop:work() and the work op metatable (run_in_thread). */
void av_work_open(lua_State *L);

/* --------------------------------------------------------------- errors */
/* The avideo error kind for a libcurl result code. */
const char *av_error_kind(CURLcode code);
/* Raise a Lua error "bad argument #n to 'fn' (msg)"-style for avideo. */
int av_error_arg(lua_State *L, int arg, const char *fmt, ...);

/* -------------------------------------------------------------- buffers */
/* Append n bytes; false on OOM. */
bool av_buf_append(av_buf *b, const char *p, size_t n);
/* Free the buffer's memory. */
void av_buf_free(av_buf *b);

#endif
