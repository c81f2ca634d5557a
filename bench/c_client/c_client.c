/*
 * c_client: the plain C baseline of avideo's benchmarks.
 *
 *   c_client URL N CONCURRENCY [--discard]
 *
 * Makes N GET requests of URL with at most CONCURRENCY in flight, decodes
 * each body as JSON (jansson) and checks the status is 200. Every decoded
 * document is kept until all requests are done, as a gather that returns
 * the results keeps them (the avideo client's work); --discard frees each
 * one right after decoding instead. Then it prints
 *
 *   RESULT requests=N finished=F errors=E
 *
 * and exits 0 when E is 0, 1 otherwise (2 on bad usage or setup failure).
 *
 * It is the tuned libcurl multi_socket + libuv glue measured while avideo
 * was planned (docs/architecture.md, "libcurl on libuv: what was
 * measured"), the cost every other client is measured against:
 *   - one uv_timer_t per multi, created before the first add;
 *   - one uv_poll_t per socket for the socket's whole life (created in the
 *     open-socket callback, closed in the close-socket callback); on
 *     CURL_POLL_REMOVE polling only stops, and a poll is restarted only when
 *     the wanted events change. A socket libcurl did not open through us
 *     (e.g. the threaded resolver's wake-up pair) gets a poll handle on first
 *     sight that is closed on CURL_POLL_REMOVE;
 *   - CURLOPT_NOSIGNAL, HTTP/1.1, easy handles reused for the next request;
 *   - the request avideo sends: the same default headers (User-Agent,
 *     Accept-Encoding: gzip, deflate, no Expect) with libcurl decoding
 *     compressed answers, so both sides make the same HTTP exchange;
 *   - our own concurrency: at most CONCURRENCY handles are in the multi, the
 *     next request starts when one finishes (no CURLMOPT_MAX_*);
 *   - libcurl is never called from inside its own callbacks: finished
 *     transfers are drained with curl_multi_info_read after
 *     curl_multi_socket_action returned.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <uv.h>

/* ------------------------------------------------------------------------
 * STATE
 * ---------------------------------------------------------------------- */

struct client;

/* One socket and its poll handle; freed in the handle's close callback. */
struct sock {
  uv_poll_t poll;
  struct client *client;
  curl_socket_t fd;
  int events;  /* UV_READABLE | UV_WRITABLE being polled, 0 when stopped */
  int foreign; /* not opened through our open-socket callback */
};

/* One reusable easy handle and its response buffer. */
struct transfer {
  CURL *easy;
  struct client *client;
  char *body;
  size_t len, cap;
  int oom;
};

struct client {
  uv_loop_t loop;
  uv_timer_t timer;
  CURLM *multi;
  struct transfer *transfers;
  int concurrency;
  long total, started, finished, errors;
  json_t **kept; /* decoded documents, in completion order; NULL with --discard */
  struct curl_slist *headers;
  struct sock **socks; /* by file descriptor */
  size_t nsocks;
};

/* ------------------------------------------------------------------------
 * SOCKETS
 * ---------------------------------------------------------------------- */

static void sock_on_close(uv_handle_t *handle) { free(handle->data); }

/* Stop polling and forget fd; the memory goes in the close callback. */
static void sock_forget(struct sock *s) {
  s->client->socks[s->fd] = NULL;
  uv_close((uv_handle_t *)&s->poll, sock_on_close);
}

/* Start tracking fd; NULL when out of memory. */
static struct sock *sock_new(struct client *c, curl_socket_t fd, int foreign) {
  if ((size_t)fd >= c->nsocks) {
    size_t n = c->nsocks ? c->nsocks : 64;
    while (n <= (size_t)fd) n *= 2;
    struct sock **grown = realloc(c->socks, n * sizeof *grown);
    if (!grown) return NULL;
    memset(grown + c->nsocks, 0, (n - c->nsocks) * sizeof *grown);
    c->socks = grown;
    c->nsocks = n;
  }
  if (c->socks[fd]) sock_forget(c->socks[fd]); /* fd reused behind our back */
  struct sock *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  if (uv_poll_init_socket(&c->loop, &s->poll, fd) != 0) {
    free(s);
    return NULL;
  }
  s->poll.data = s;
  s->client = c;
  s->fd = fd;
  s->foreign = foreign;
  c->socks[fd] = s;
  return s;
}

static curl_socket_t sock_on_open(void *userp, curlsocktype purpose, struct curl_sockaddr *addr) {
  struct client *c = userp;
  curl_socket_t fd = socket(addr->family, addr->socktype, addr->protocol);
  if (fd == CURL_SOCKET_BAD) return CURL_SOCKET_BAD;
  if (!sock_new(c, fd, 0)) {
    close(fd);
    return CURL_SOCKET_BAD;
  }
  return fd;
}

static int sock_on_closesocket(void *userp, curl_socket_t fd) {
  struct client *c = userp;
  if ((size_t)fd < c->nsocks && c->socks[fd]) sock_forget(c->socks[fd]);
  /* uv_poll_stop (inside uv_close) already removed fd from epoll. */
  return close(fd);
}

/* ------------------------------------------------------------------------
 * COMPLETION
 * ---------------------------------------------------------------------- */

static int transfer_start(struct client *c, struct transfer *t) {
  t->len = 0;
  t->oom = 0;
  c->started++;
  return curl_multi_add_handle(c->multi, t->easy) == CURLM_OK ? 0 : -1;
}

/* Status 200 and a body that decodes as JSON, kept unless discarding. */
static int transfer_ok(struct client *c, struct transfer *t, CURLcode result) {
  long status = 0;
  if (result != CURLE_OK || t->oom) return 0;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) return 0;
  json_error_t err;
  json_t *doc = json_loadb(t->body, t->len, 0, &err);
  if (!doc) return 0;
  if (c->kept) c->kept[c->finished - 1] = doc;
  else json_decref(doc);
  return 1;
}

/* Finish every completed transfer and start the next requests. Called only
 * after curl_multi_socket_action returned. */
static void client_drain(struct client *c) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(c->multi, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL *easy = msg->easy_handle; /* copy before the handle is removed */
    CURLcode result = msg->data.result;
    struct transfer *t;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
    curl_multi_remove_handle(c->multi, easy);
    c->finished++;
    if (!transfer_ok(c, t, result)) c->errors++;
    if (c->started < c->total && transfer_start(c, t) != 0) {
      c->errors += c->total - c->started + 1;
      c->finished += c->total - c->started + 1;
      c->started = c->total;
    }
  }
  if (c->finished == c->total) uv_timer_stop(&c->timer);
}

/* ------------------------------------------------------------------------
 * LIBUV <-> LIBCURL
 * ---------------------------------------------------------------------- */

static void client_on_poll(uv_poll_t *handle, int status, int events) {
  struct sock *s = handle->data;
  struct client *c = s->client;
  int flags = 0, running;
  if (status < 0) flags = CURL_CSELECT_ERR;
  else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  curl_multi_socket_action(c->multi, s->fd, flags, &running);
  client_drain(c);
}

static void client_on_timer(uv_timer_t *timer) {
  struct client *c = timer->data;
  int running;
  curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  client_drain(c);
}

static int client_on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  struct client *c = userp;
  struct sock *s = (size_t)fd < c->nsocks ? c->socks[fd] : NULL;
  if (what == CURL_POLL_REMOVE) {
    if (!s) return 0;
    if (s->foreign) sock_forget(s); /* its owner may close it right away */
    else if (s->events) uv_poll_stop(&s->poll);
    s->events = 0;
    return 0;
  }
  if (!s && !(s = sock_new(c, fd, 1))) return -1;
  int events = 0;
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  if (events != s->events) {
    if (uv_poll_start(&s->poll, events, client_on_poll) != 0) return -1;
    s->events = events;
  }
  return 0;
}

static int client_on_timeout(CURLM *multi, long timeout_ms, void *userp) {
  struct client *c = userp;
  if (timeout_ms < 0) uv_timer_stop(&c->timer);
  else uv_timer_start(&c->timer, client_on_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

static size_t transfer_on_write(char *data, size_t size, size_t nmemb, void *userp) {
  struct transfer *t = userp;
  size_t n = size * nmemb;
  if (t->len + n > t->cap) {
    size_t cap = t->cap ? t->cap : 1024;
    while (cap < t->len + n) cap *= 2;
    char *grown = realloc(t->body, cap);
    if (!grown) {
      t->oom = 1;
      return 0;
    }
    t->body = grown;
    t->cap = cap;
  }
  memcpy(t->body + t->len, data, n);
  t->len += n;
  return n;
}

/* ------------------------------------------------------------------------
 * MAIN
 * ---------------------------------------------------------------------- */

static long parse_count(const char *s) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  return (errno || *end || v < 0) ? -1 : v;
}

int main(int argc, char **argv) {
  long n, conc;
  int discard = argc == 5 && strcmp(argv[4], "--discard") == 0;
  if ((argc != 4 && !discard) || (n = parse_count(argv[2])) < 0 || (conc = parse_count(argv[3])) < 1) {
    fprintf(stderr, "usage: %s URL N CONCURRENCY [--discard]\n", argv[0]);
    return 2;
  }
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return 2;

  struct client c = {0};
  c.total = n;
  c.concurrency = (int)(conc < n ? conc : (n ? n : 1));
  int rc = 2;
  if (uv_loop_init(&c.loop) != 0) goto out_global;
  uv_timer_init(&c.loop, &c.timer); /* before the first add: it fires inside it */
  c.timer.data = &c;
  if (!discard && n > 0 && !(c.kept = calloc((size_t)n, sizeof *c.kept))) goto out_loop;
  if (!(c.multi = curl_multi_init())) goto out_loop;
  curl_multi_setopt(c.multi, CURLMOPT_SOCKETFUNCTION, client_on_socket);
  curl_multi_setopt(c.multi, CURLMOPT_SOCKETDATA, &c);
  curl_multi_setopt(c.multi, CURLMOPT_TIMERFUNCTION, client_on_timeout);
  curl_multi_setopt(c.multi, CURLMOPT_TIMERDATA, &c);

  /* avideo's default request headers (src/core/headers.c); the agent is
   * as long as avideo's "avideo/0.1.0" */
  static const char *const header_lines[] = {"User-Agent: avideo-c/0.1",
                                             "Accept-Encoding: gzip, deflate", "Expect:"};
  for (size_t i = 0; i < sizeof header_lines / sizeof *header_lines; i++) {
    struct curl_slist *l = curl_slist_append(c.headers, header_lines[i]);
    if (!l) goto out_multi;
    c.headers = l;
  }
  if (!(c.transfers = calloc((size_t)c.concurrency, sizeof *c.transfers))) goto out_multi;
  for (int i = 0; i < c.concurrency; i++) {
    struct transfer *t = &c.transfers[i];
    t->client = &c;
    if (!(t->easy = curl_easy_init())) goto out_transfers;
    curl_easy_setopt(t->easy, CURLOPT_URL, argv[1]);
    curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
    curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, transfer_on_write);
    curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(t->easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, c.headers);
    curl_easy_setopt(t->easy, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(t->easy, CURLOPT_OPENSOCKETFUNCTION, sock_on_open);
    curl_easy_setopt(t->easy, CURLOPT_OPENSOCKETDATA, &c);
    curl_easy_setopt(t->easy, CURLOPT_CLOSESOCKETFUNCTION, sock_on_closesocket);
    curl_easy_setopt(t->easy, CURLOPT_CLOSESOCKETDATA, &c);
  }

  for (int i = 0; i < c.concurrency && c.started < c.total; i++) {
    if (transfer_start(&c, &c.transfers[i]) != 0) {
      fprintf(stderr, "c_client: curl_multi_add_handle failed\n");
      goto out_transfers;
    }
  }
  if (c.total > 0) uv_run(&c.loop, UV_RUN_DEFAULT);
  if (c.finished != c.total) c.errors += c.total - c.finished;
  printf("RESULT requests=%ld finished=%ld errors=%ld\n", c.total, c.finished, c.errors);
  rc = c.errors ? 1 : 0;

out_transfers:
  for (int i = 0; i < c.concurrency; i++) {
    struct transfer *t = &c.transfers[i];
    if (!t->easy) continue;
    curl_multi_remove_handle(c.multi, t->easy); /* no-op unless still added */
    curl_easy_cleanup(t->easy);
    free(t->body);
  }
  free(c.transfers);
out_multi:
  curl_multi_cleanup(c.multi); /* closes cached connections through sock_on_closesocket */
  curl_slist_free_all(c.headers);
out_loop:
  for (size_t fd = 0; fd < c.nsocks; fd++)
    if (c.socks[fd]) sock_forget(c.socks[fd]);
  uv_close((uv_handle_t *)&c.timer, NULL);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  uv_loop_close(&c.loop);
  free(c.socks);
  for (long i = 0; c.kept && i < n; i++) json_decref(c.kept[i]); /* NULL-safe */
  free(c.kept);
out_global:
  curl_global_cleanup();
  return rc;
}
