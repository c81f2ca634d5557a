/* avideo-server: private declarations shared by its files.
 *
 * The path of one request: http.c (libmicrohttpd driven from libuv) calls
 * routes.c, which matches the path and either answers at once or hands the
 * request to request.c; that one takes a slot in the endpoint's gate.c
 * queue, sleeps the model's delay on a uv timer, then resumes the
 * connection so routes.c answers from store.c's data through reply.c. */
#ifndef AVIDEO_SERVER_H
#define AVIDEO_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>
#include <uv.h>

/* Largest request body (a PATCH); beyond it the answer is 413. */
#define AV_BODY_LIMIT ((size_t)1 << 20)
/* Memory MHD gives each connection for its request line and headers (and
 * zeroes between requests: keep it small; h11 allows 16 KiB too). */
#define AV_HEADER_LIMIT ((size_t)16 << 10)
/* Most videos --videos accepts: the store keeps them all in memory. */
#define AV_VIDEOS_MAX 100000
/* Most slots a gate may have (--video-capacity, POST /capacity). */
#define AV_CAPACITY_MAX 100000

#define av_container_of(ptr, type, member) \
  ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* ---- main.c: command line ---- */

struct av_options {
  const char *host;
  unsigned port;
  size_t videos;
  uint64_t seed;
  double time_scale;
  unsigned keepalive_timeout; /* whole seconds, 0 = never */
  unsigned video_capacity, transcript_capacity; /* the gates' slots */
  unsigned rate_n;            /* --rate-limit N/S: 0 = none */
  double rate_seconds;
};

/* ---- words.c: the vocabulary ---- */

/* Number of distinct words. */
size_t av_words_count(void);
/* The i-th word (i taken modulo the count). */
const char *av_words_get(size_t i);

/* ---- text.c: seeded random numbers and lorem-style English ---- */

struct av_rng {
  uint64_t state;
};

/* A growable string; data stays NUL-terminated. */
struct av_buf {
  char *data;
  size_t len, cap;
};

/* Seed a generator for one stream of a seed (e.g. one video). */
void av_rng_seed(struct av_rng *rng, uint64_t seed, uint64_t stream);
uint64_t av_rng_next(struct av_rng *rng);
/* Uniform integer in [lo, hi]. */
uint32_t av_rng_range(struct av_rng *rng, uint32_t lo, uint32_t hi);

/* Append bytes; false when out of memory (the buffer is unchanged). */
bool av_buf_add(struct av_buf *buf, const char *s, size_t len);
void av_buf_free(struct av_buf *buf);

/* Append a capitalised sentence of min..max words ending in a full stop.
 * With mention != NULL, that word is put in at a random place. */
bool av_text_sentence(struct av_buf *buf, struct av_rng *rng, unsigned min,
                      unsigned max, const char *mention);
/* Append a paragraph of min..max sentences separated by a space. */
bool av_text_paragraph(struct av_buf *buf, struct av_rng *rng, unsigned min,
                       unsigned max, const char *mention);

/* ---- store.c: the videos ---- */

struct av_video {
  json_t *id;     /* the store key, a JSON string (a PATCH cannot move it) */
  json_t *object; /* what GET answers; a PATCH merges into it */
  bool nasa;      /* whether the transcript mentions NASA */
};

struct av_store {
  uint64_t seed;
  size_t count;
  struct av_video *videos;
  json_t *index; /* id -> integer position */
};

/* Generate count videos from seed; false when out of memory. */
bool av_store_init(struct av_store *store, size_t count, uint64_t seed);
void av_store_free(struct av_store *store);
/* Position of the video with this id, or -1. */
long av_store_find(const struct av_store *store, const char *id);
/* A new JSON array of the first n ids (n already clamped to the count). */
json_t *av_store_ids(const struct av_store *store, size_t n);
/* The video object (borrowed). */
json_t *av_store_video(const struct av_store *store, size_t i);
/* The transcript text, five paragraphs; the caller frees buf. */
bool av_store_transcript(const struct av_store *store, size_t i,
                         struct av_buf *buf);
/* Shallow-merge a JSON object into a video; false when out of memory. */
bool av_store_patch(struct av_store *store, size_t i, json_t *patch);

/* ---- gate.c: an endpoint's slots and FIFO queue (the overload model) ---- */

/* Linked into a gate's queue; embedded in whatever waits. */
struct av_waiter {
  struct av_waiter *prev, *next;
};

struct av_gate {
  unsigned capacity; /* slots; UINT_MAX for the endpoints with no limit */
  unsigned busy;
  double min_delay, factor, scale; /* seconds, and --time-scale */
  struct av_waiter *head, *tail;
  size_t waiting;
};

void av_gate_init(struct av_gate *gate, unsigned capacity, double min_delay,
                  double factor, double scale);
/* True when a request may skip the queue and the timer: with time scale 0
 * and a free slot it takes the slot and gives it back at once. */
bool av_gate_pass(struct av_gate *gate);
/* Take a free slot and set *delay (seconds); false when all are busy. */
bool av_gate_take(struct av_gate *gate, double *delay);
/* Queue at the tail (after av_gate_take failed). */
void av_gate_push(struct av_gate *gate, struct av_waiter *waiter);
/* Take a queued waiter out (it left). */
void av_gate_remove(struct av_gate *gate, struct av_waiter *waiter);
/* Give a slot back. If someone waits and busy is within the capacity, the
 * head takes the slot: it is returned with its *delay; else NULL. */
struct av_waiter *av_gate_release(struct av_gate *gate, double *delay);
/* After the capacity grew: the head takes a free slot (returned with its
 * *delay), or NULL when none is free or nobody waits. */
struct av_waiter *av_gate_admit(struct av_gate *gate, double *delay);

/* ---- rate.c: --rate-limit, a token bucket per client address ---- */

/* Addresses tracked at once (the least recently seen is forgotten). */
#define AV_RATE_CLIENTS 64

struct av_rate_client {
  unsigned char addr[28]; /* the sockaddr's bytes (IPv6 fits) */
  size_t len;
  double tokens;
  uint64_t seen; /* uv_hrtime of the last refill */
  bool used;
};

struct av_rate {
  unsigned n;     /* burst and requests per `seconds`; 0 = no limit */
  double seconds;
  struct av_rate_client clients[AV_RATE_CLIENTS];
};

void av_rate_init(struct av_rate *rate, unsigned n, double seconds);
/* Take a token for the client at addr at time now (ns): 0 when it may go
 * on, else the whole seconds until a token is back (Retry-After). */
unsigned av_rate_take(struct av_rate *rate, const void *addr, size_t len,
                      uint64_t now);

/* ---- reply.c: JSON answers as MHD responses ---- */

struct av_replies {
  struct MHD_Response *not_found;       /* 404 unknown path */
  struct MHD_Response *video_not_found; /* 404 unknown id */
  struct MHD_Response *get_only;        /* 405, Allow: GET */
  struct MHD_Response *get_patch;       /* 405, Allow: GET, PATCH */
  struct MHD_Response *get_post;        /* 405, Allow: GET, POST */
  struct MHD_Response *too_large;       /* 413 */
  struct MHD_Response *success;         /* 200 "success" */
  struct MHD_Response **videos;         /* 200 per video, built on demand */
  size_t count;
};

bool av_replies_init(struct av_replies *replies, size_t videos);
void av_replies_free(struct av_replies *replies);
/* A response with the compact JSON of value (borrowed); NULL on failure. */
struct MHD_Response *av_reply_new(const json_t *value);
/* Queue a response we keep (a prepared one). */
enum MHD_Result av_reply_queue(struct MHD_Connection *conn, unsigned status,
                               struct MHD_Response *response);
/* Queue the JSON of value, then drop it (value is stolen, may be NULL). */
enum MHD_Result av_reply_json(struct MHD_Connection *conn, unsigned status,
                              json_t *value);
/* The cached 200 of video i, built from store when missing; NULL on failure. */
struct MHD_Response *av_reply_video(struct av_replies *replies,
                                    const struct av_store *store, size_t i);
/* 429 with Retry-After: seconds. */
enum MHD_Result av_reply_too_many(struct MHD_Connection *conn,
                                  unsigned seconds);
/* Forget the cached 200 of video i (after a PATCH). */
void av_reply_forget(struct av_replies *replies, size_t i);
/* A 422 body shaped like FastAPI's validation errors; index, input and ctx
 * are stolen and may be NULL. */
json_t *av_reply_invalid(const char *type, const char *where, json_t *index,
                         const char *msg, json_t *input, json_t *ctx);

/* ---- stats.c: what the server has seen (GET /stats) ---- */

struct av_stats {
  uint64_t connections;   /* accepted since start */
  uint64_t requests;      /* received since start */
  uint64_t open;          /* connections open now */
  uint64_t in_flight;     /* requests received and not yet answered */
  uint64_t max_in_flight; /* the most at once since start */
};

/* MHD's connection notification (cls is the server): count connections. */
void av_stats_connection(void *cls, struct MHD_Connection *conn,
                         void **socket_context,
                         enum MHD_ConnectionNotificationCode code);
/* Forget the most in flight so far: from now on it counts from in_flight
 * (GET /stats?reset=1, so a test can look at a later part of a run). */
void av_stats_reset_max(struct av_stats *stats);
/* A request's headers are in / MHD is done with it. */
void av_stats_request_begin(struct av_stats *stats);
void av_stats_request_end(struct av_stats *stats);
/* The counters as a new JSON object; NULL when out of memory. */
json_t *av_stats_json(const struct av_stats *stats);

/* ---- http.c: libmicrohttpd driven from the libuv loop ---- */

struct av_http_config {
  const struct sockaddr *addr;
  unsigned keepalive_timeout;
  unsigned connection_limit;
  MHD_AccessHandlerCallback access;
  MHD_RequestCompletedCallback completed;
  MHD_NotifyConnectionCallback connection;
  void *cls;
};

struct av_http {
  struct MHD_Daemon *daemon;
  uv_poll_t poll;   /* readable when MHD's epoll set has events */
  uv_timer_t timer; /* MHD_get_timeout, and kicks after a resume */
  unsigned port;
  bool running, kicked, quiet;
};

/* Start listening; false (with a message on stderr) on failure. */
bool av_http_start(struct av_http *http, uv_loop_t *loop,
                   const struct av_http_config *config);
/* Make MHD run soon, e.g. after MHD_resume_connection. */
void av_http_kick(struct av_http *http);
/* Stop the daemon (every connection closed) and close the handles. */
void av_http_close(struct av_http *http);

/* ---- request.c: a request whose answer waits ---- */

enum av_route {
  AV_ROUTE_NONE,
  AV_ROUTE_LIST,
  AV_ROUTE_VIDEO,
  AV_ROUTE_TRANSCRIPT,
  AV_ROUTE_PATCH,
};

/* What a request asks, decided when it arrives. */
struct av_call {
  enum av_route route;
  long video;       /* store position, -1 for an unknown id */
  size_t n;         /* list length */
  json_t *patch;    /* PATCH body, owned */
};

enum av_request_state {
  AV_REQUEST_BODY,     /* reading a PATCH body */
  AV_REQUEST_QUEUED,   /* suspended, waiting for a slot */
  AV_REQUEST_SLEEPING, /* suspended, holding a slot until the timer */
  AV_REQUEST_READY,    /* resumed: answer on the next handler call */
  AV_REQUEST_GONE,     /* resumed: the client left, drop the connection */
  AV_REQUEST_DONE,     /* answered */
};

struct av_server;

struct av_request {
  struct av_waiter waiter;
  struct av_server *server;
  struct MHD_Connection *conn;
  struct av_gate *gate;
  struct av_call call;
  enum av_request_state state;
  struct av_buf body;
  size_t body_seen; /* bytes received, kept or not */
  uv_timer_t timer; /* the delay */
  uv_poll_t watch;  /* notices a client that leaves while suspended */
  bool timer_open, watch_open, completed;
  unsigned handles; /* initialised uv handles not yet closed */
  struct av_request *prev, *next; /* the server's live requests */
};

/* A request bound to conn, in the server's live list; NULL when out of memory. */
struct av_request *av_request_new(struct av_server *server,
                                  struct MHD_Connection *conn);
/* Suspend the connection until gate gives a slot and its delay ends. */
void av_request_defer(struct av_request *req, struct av_gate *gate);
/* MHD is done with the request (answered, failed or timed out): leave the
 * gate and free it once its handles are closed. */
void av_request_complete(struct av_request *req);
/* Shutdown: every suspended request leaves its gate and is resumed to be
 * dropped. */
void av_request_abort_all(struct av_server *server);
/* POST /capacity: gate has `capacity` slots from now on. Waiters take the
 * new slots of a larger one at once; past a smaller one, requests holding
 * a slot finish and nobody gets one until busy is below it. */
void av_request_set_capacity(struct av_gate *gate, unsigned capacity);

/* ---- routes.c: the API ---- */

/* The MHD access handler and completion callback (cls is the server). */
enum MHD_Result av_routes_access(void *cls, struct MHD_Connection *conn,
                                 const char *url, const char *method,
                                 const char *version, const char *upload_data,
                                 size_t *upload_size, void **con_cls);
void av_routes_completed(void *cls, struct MHD_Connection *conn,
                         void **con_cls,
                         enum MHD_RequestTerminationCode code);

/* ---- server.c: one running emulator ---- */

struct av_gates {
  struct av_gate list, video, transcript, patch;
};

struct av_server {
  uv_loop_t *loop;
  struct av_options options;
  struct av_store store;
  struct av_replies replies;
  struct av_gates gates;
  struct av_rate rate;
  struct av_stats stats;
  struct av_http http;
  uv_signal_t sigint, sigterm;
  struct av_request *live; /* requests with state, for shutdown */
  bool stopping;
};

/* Build the data, listen, print the ready line, catch SIGINT/SIGTERM. */
bool av_server_start(struct av_server *server, uv_loop_t *loop,
                     const struct av_options *options);
/* Close the signal handles, once the loop ran dry after a signal. */
void av_server_close(struct av_server *server);
/* Free what start built (after the loop has run dry). */
void av_server_free(struct av_server *server);

#endif
