/*
 * floor_client: the floor of avideo's client-cost benchmark.
 *
 *   floor_client URL N CONCURRENCY
 *
 * Makes N keep-alive GET requests of URL with at most CONCURRENCY in flight
 * and checks that each answers 200; bodies are counted and thrown away.
 * Then it prints
 *
 *   RESULT requests=N finished=F errors=E bytes=B connects=K
 *
 * (bytes: body bytes received; connects: connections libcurl opened, the
 * sum of CURLINFO_NUM_CONNECTS) and exits 0 when E is 0, 1 otherwise (2 on
 * bad usage or setup failure).
 *
 * It is the cheapest honest way to do that work on libcurl multi_socket and
 * libuv, the cost below which no client built on them can go:
 *   - CONCURRENCY easy handles, created once and recycled: when one
 *     finishes it is removed from the multi, given the next URL and added
 *     again (no CURLMOPT_MAX_* limits: at most CONCURRENCY are ever added);
 *   - no JSON, no copy of the body: the write callback only counts bytes;
 *   - libcurl's default request headers (Host and Accept), nothing added;
 *     CURLOPT_NOSIGNAL, HTTP/1.1; the connection cache holds CONCURRENCY
 *     connections (CURLMOPT_MAXCONNECTS);
 *   - one uv_timer_t, as libcurl's timer callback asks;
 *   - one uv_poll_t per socket for the socket's whole life: created when
 *     libcurl opens the socket (CURLOPT_OPENSOCKETFUNCTION), closed right
 *     before libcurl closes it (CURLOPT_CLOSESOCKETFUNCTION), so a closed fd
 *     never stays in epoll. uv_poll_start is called only when the events
 *     libcurl wants change. CURL_POLL_REMOVE only marks the socket; the
 *     uv_poll_stop is done in the next loop iteration's prepare phase,
 *     unless libcurl asked for the socket again before. On keep-alive that
 *     is the usual case: libcurl says REMOVE when a transfer ends, and the
 *     recycled easy handle, added at once, takes the same idle connection
 *     and asks for POLL_IN (or POLL_OUT) again within the same callback, so
 *     a request costs no epoll_ctl at all. A socket libcurl did not open
 *     through us (e.g. the threaded resolver's wake-up pair) is closed by
 *     its owner without telling us: its poll handle is created on first
 *     sight and closed at once on CURL_POLL_REMOVE;
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
#include <uv.h>

struct floor_state;

/* One socket and its poll handle; freed in the handle's close callback. */
struct sock {
  uv_poll_t poll;
  struct floor_state *fl;
  curl_socket_t fd;
  int events;       /* UV_READABLE | UV_WRITABLE being polled, 0 when stopped */
  int stop_pending; /* CURL_POLL_REMOVE seen: stop polling at the next prepare */
  int listed;       /* in fl->stops */
  int foreign;      /* not opened through our open-socket callback */
};

struct floor_state {
  uv_loop_t loop;
  uv_timer_t timer;
  uv_prepare_t prepare; /* active only while fl->stops is not empty */
  CURLM *multi;
  CURL **easy;
  int concurrency;
  const char *url;
  long total, started, finished, errors, connects;
  unsigned long long bytes;
  struct sock **socks; /* by file descriptor */
  size_t nsocks;
  curl_socket_t *stops; /* sockets marked by CURL_POLL_REMOVE since the last prepare */
  size_t nstops, capstops;
};

/* ------------------------------------------------------------------------
 * SOCKETS
 * ---------------------------------------------------------------------- */

static void sock_on_close(uv_handle_t *handle) { free(handle->data); }

/* Forget fd and close its poll handle (uv_close stops polling: the fd
 * leaves epoll now); the memory goes in the close callback. */
static void sock_forget(struct sock *s) {
  s->fl->socks[s->fd] = NULL;
  uv_close((uv_handle_t *)&s->poll, sock_on_close);
}

/* Start tracking fd; NULL when out of memory. */
static struct sock *sock_new(struct floor_state *fl, curl_socket_t fd, int foreign) {
  if ((size_t)fd >= fl->nsocks) {
    size_t n = fl->nsocks ? fl->nsocks : 64;
    while (n <= (size_t)fd) n *= 2;
    struct sock **grown = realloc(fl->socks, n * sizeof *grown);
    if (!grown) return NULL;
    memset(grown + fl->nsocks, 0, (n - fl->nsocks) * sizeof *grown);
    fl->socks = grown;
    fl->nsocks = n;
  }
  if (fl->socks[fd]) sock_forget(fl->socks[fd]); /* fd reused behind our back */
  struct sock *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  if (uv_poll_init_socket(&fl->loop, &s->poll, fd) != 0) {
    free(s);
    return NULL;
  }
  s->poll.data = s;
  s->fl = fl;
  s->fd = fd;
  s->foreign = foreign;
  fl->socks[fd] = s;
  return s;
}

static curl_socket_t sock_on_open(void *userp, curlsocktype purpose, struct curl_sockaddr *addr) {
  struct floor_state *fl = userp;
  curl_socket_t fd = socket(addr->family, addr->socktype, addr->protocol);
  if (fd == CURL_SOCKET_BAD) return CURL_SOCKET_BAD;
  if (!sock_new(fl, fd, 0)) {
    close(fd);
    return CURL_SOCKET_BAD;
  }
  return fd;
}

/* libcurl closes one of our sockets: its poll handle goes first. */
static int sock_on_closesocket(void *userp, curl_socket_t fd) {
  struct floor_state *fl = userp;
  if ((size_t)fd < fl->nsocks && fl->socks[fd]) sock_forget(fl->socks[fd]);
  return close(fd);
}

/* The prepare phase of the iteration after a CURL_POLL_REMOVE: stop polling
 * the sockets libcurl did not ask for again since. */
static void floor_on_prepare(uv_prepare_t *prepare) {
  struct floor_state *fl = prepare->data;
  for (size_t i = 0; i < fl->nstops; i++) {
    curl_socket_t fd = fl->stops[i];
    struct sock *s = (size_t)fd < fl->nsocks ? fl->socks[fd] : NULL;
    if (!s || !s->listed) continue; /* closed since (and maybe a new socket on fd) */
    s->listed = 0;
    if (!s->stop_pending) continue; /* libcurl asked for it again: keep polling */
    s->stop_pending = 0;
    if (s->events) uv_poll_stop(&s->poll);
    s->events = 0;
  }
  fl->nstops = 0;
  uv_prepare_stop(prepare);
}

/* Mark s to be stopped at the next prepare phase; -1 when out of memory. */
static int sock_defer_stop(struct floor_state *fl, struct sock *s) {
  s->stop_pending = 1;
  if (s->listed) return 0;
  if (fl->nstops == fl->capstops) {
    size_t cap = fl->capstops ? 2 * fl->capstops : 64;
    curl_socket_t *grown = realloc(fl->stops, cap * sizeof *grown);
    if (!grown) return -1;
    fl->stops = grown;
    fl->capstops = cap;
  }
  if (fl->nstops == 0) uv_prepare_start(&fl->prepare, floor_on_prepare);
  fl->stops[fl->nstops++] = s->fd;
  s->listed = 1;
  return 0;
}

/* ------------------------------------------------------------------------
 * REQUESTS
 * ---------------------------------------------------------------------- */

static int request_start(struct floor_state *fl, CURL *easy) {
  fl->started++;
  curl_easy_setopt(easy, CURLOPT_URL, fl->url); /* the next URL: libcurl copies it */
  return curl_multi_add_handle(fl->multi, easy) == CURLM_OK ? 0 : -1;
}

/* Finish every completed transfer and recycle its easy handle for the next
 * request. Called only after curl_multi_socket_action returned. */
static void floor_drain(struct floor_state *fl) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(fl->multi, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL *easy = msg->easy_handle; /* copy before the handle is removed */
    CURLcode result = msg->data.result;
    long status = 0, connects = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &connects);
    fl->connects += connects;
    curl_multi_remove_handle(fl->multi, easy);
    fl->finished++;
    if (result != CURLE_OK || status != 200) {
      if (fl->errors++ < 5)
        fprintf(stderr, "floor_client: %s, status %ld\n", curl_easy_strerror(result), status);
    }
    if (fl->started < fl->total && request_start(fl, easy) != 0) {
      fl->errors += fl->total - fl->started + 1;
      fl->finished += fl->total - fl->started + 1;
      fl->started = fl->total;
    }
  }
  if (fl->finished == fl->total) uv_timer_stop(&fl->timer);
}

static size_t request_on_write(char *data, size_t size, size_t nmemb, void *userp) {
  struct floor_state *fl = userp;
  fl->bytes += size * nmemb;
  return size * nmemb;
}

/* ------------------------------------------------------------------------
 * LIBUV <-> LIBCURL
 * ---------------------------------------------------------------------- */

static void floor_on_poll(uv_poll_t *handle, int status, int events) {
  struct sock *s = handle->data;
  struct floor_state *fl = s->fl;
  int flags = 0, running;
  if (status < 0) flags = CURL_CSELECT_ERR;
  else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  curl_multi_socket_action(fl->multi, s->fd, flags, &running);
  floor_drain(fl);
}

static void floor_on_timer(uv_timer_t *timer) {
  struct floor_state *fl = timer->data;
  int running;
  curl_multi_socket_action(fl->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  floor_drain(fl);
}

static int floor_on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  struct floor_state *fl = userp;
  struct sock *s = (size_t)fd < fl->nsocks ? fl->socks[fd] : NULL;
  if (what == CURL_POLL_REMOVE) {
    if (!s) return 0;
    if (s->foreign) sock_forget(s); /* its owner may close it right away */
    else if (s->events && sock_defer_stop(fl, s) != 0) {
      uv_poll_stop(&s->poll); /* no memory to defer: stop now */
      s->events = 0;
    }
    return 0;
  }
  if (!s && !(s = sock_new(fl, fd, 1))) return -1;
  s->stop_pending = 0; /* asked for again: keep polling */
  int events = 0;
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  if (events != s->events) {
    if (uv_poll_start(&s->poll, events, floor_on_poll) != 0) return -1;
    s->events = events;
  }
  return 0;
}

static int floor_on_timeout(CURLM *multi, long timeout_ms, void *userp) {
  struct floor_state *fl = userp;
  if (timeout_ms < 0) uv_timer_stop(&fl->timer);
  else uv_timer_start(&fl->timer, floor_on_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

/* ------------------------------------------------------------------------
 * MAIN
 * ---------------------------------------------------------------------- */

static long parse_count(const char *s) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  return (errno || *end || end == s || v < 0) ? -1 : v;
}

int main(int argc, char **argv) {
  long n, conc;
  if (argc != 4 || (n = parse_count(argv[2])) < 0 || (conc = parse_count(argv[3])) < 1) {
    fprintf(stderr, "usage: %s URL N CONCURRENCY\n", argv[0]);
    return 2;
  }
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return 2;

  struct floor_state fl = {0};
  fl.url = argv[1];
  fl.total = n;
  fl.concurrency = (int)(conc < n ? conc : (n ? n : 1));
  int rc = 2;
  if (uv_loop_init(&fl.loop) != 0) goto out_global;
  uv_timer_init(&fl.loop, &fl.timer); /* before the first add: it fires inside it */
  fl.timer.data = &fl;
  uv_prepare_init(&fl.loop, &fl.prepare);
  fl.prepare.data = &fl;
  if (!(fl.multi = curl_multi_init())) goto out_loop;
  curl_multi_setopt(fl.multi, CURLMOPT_SOCKETFUNCTION, floor_on_socket);
  curl_multi_setopt(fl.multi, CURLMOPT_SOCKETDATA, &fl);
  curl_multi_setopt(fl.multi, CURLMOPT_TIMERFUNCTION, floor_on_timeout);
  curl_multi_setopt(fl.multi, CURLMOPT_TIMERDATA, &fl);
  curl_multi_setopt(fl.multi, CURLMOPT_MAXCONNECTS, (long)fl.concurrency);

  if (!(fl.easy = calloc((size_t)fl.concurrency, sizeof *fl.easy))) goto out_multi;
  for (int i = 0; i < fl.concurrency; i++) {
    CURL *easy = fl.easy[i] = curl_easy_init();
    if (!easy) goto out_easy;
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, request_on_write);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &fl);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, sock_on_open);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, &fl);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, sock_on_closesocket);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, &fl);
  }

  for (int i = 0; i < fl.concurrency && fl.started < fl.total; i++) {
    if (request_start(&fl, fl.easy[i]) != 0) {
      fprintf(stderr, "floor_client: curl_multi_add_handle failed\n");
      goto out_easy;
    }
  }
  if (fl.total > 0) uv_run(&fl.loop, UV_RUN_DEFAULT);
  if (fl.finished != fl.total) fl.errors += fl.total - fl.finished;
  printf("RESULT requests=%ld finished=%ld errors=%ld bytes=%llu connects=%ld\n", fl.total,
         fl.finished, fl.errors, fl.bytes, fl.connects);
  rc = fl.errors ? 1 : 0;

out_easy:
  for (int i = 0; i < fl.concurrency; i++) {
    if (!fl.easy[i]) continue;
    curl_multi_remove_handle(fl.multi, fl.easy[i]); /* no-op unless still added */
    curl_easy_cleanup(fl.easy[i]);
  }
  free(fl.easy);
out_multi:
  curl_multi_cleanup(fl.multi); /* closes cached connections through sock_on_closesocket */
out_loop:
  for (size_t fd = 0; fd < fl.nsocks; fd++)
    if (fl.socks[fd]) sock_forget(fl.socks[fd]);
  uv_close((uv_handle_t *)&fl.timer, NULL);
  uv_close((uv_handle_t *)&fl.prepare, NULL);
  uv_run(&fl.loop, UV_RUN_DEFAULT);
  uv_loop_close(&fl.loop);
  free(fl.socks);
  free(fl.stops);
out_global:
  curl_global_cleanup();
  return rc;
}
