/* The transport: libcurl's multi_socket interface on libuv. It knows
 * nothing of requests: a transfer's user hands it an av_xfer_vtable with
 * its easy handle and hears of the transfer's end through it.
 *
 * Unlike curl's multi-uv example, a socket keeps one uv_poll_t for its whole
 * life: we learn of sockets when libcurl opens and closes them
 * (OPENSOCKETFUNCTION / CLOSESOCKETFUNCTION). CURL_POLL_REMOVE, which
 * libcurl sends after every transfer even on kept-alive connections, does
 * not stop the poll: the idle connection stays watched for reading, which
 * costs no epoll_ctl when the next transfer reuses it (libcurl then wants
 * reading again), and shows what libcurl 7.88 would not see: an idle
 * connection that turned readable. Bytes nobody asked for, or the server's
 * close, mean the connection must not carry another request (the bytes
 * would be read as its answer), so it is shut down: libcurl then finds it
 * dead, or fails to send on it and retries on a new connection, as it does
 * for any reused connection that died. Sockets libcurl did not open
 * through us (the threaded resolver's wakeup pair) get a poll handle that
 * lives from their first use to their REMOVE.
 *
 * libcurl is never called from inside its own callbacks: finished transfers
 * are collected after curl_multi_socket_action returns. */
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "private.h"

struct av_sock {
  uv_poll_t poll;
  av_transport *t;
  curl_socket_t fd;
  int events;    /* what the poll handle is started for; 0 = stopped */
  int wanted;    /* what libcurl asked for; 0 after CURL_POLL_REMOVE */
  av_easy *user; /* the handle whose transfer last gave the socket up ... */
  uint32_t use;  /* ... and which of its transfers that was */
  bool foreign;  /* not opened by our open callback */
  bool dead;     /* shut down while idle: never watched again */
  dev_t dev;     /* the file behind fd (see av_sock_stale) */
  ino_t ino;
};

static void av_sock_free_cb(uv_handle_t *h) { free(h->data); }

static void av_sock_close(av_sock *sk) {
  av_transport *t = sk->t;
  if ((size_t)sk->fd < t->nsocks && t->socks[sk->fd] == sk) t->socks[sk->fd] = NULL;
  uv_close((uv_handle_t *)&sk->poll, av_sock_free_cb);
}

/* Make room in the socks map for fd. */
static bool av_socks_reserve(av_transport *t, curl_socket_t fd) {
  if ((size_t)fd < t->nsocks) return true;
  size_t n = t->nsocks ? t->nsocks : 64;
  while (n <= (size_t)fd) n *= 2;
  av_sock **s = realloc(t->socks, n * sizeof *s);
  if (!s) return false;
  memset(s + t->nsocks, 0, (n - t->nsocks) * sizeof *s);
  t->socks = s;
  t->nsocks = n;
  return true;
}

/* A poll handle for fd, entered in the socks map; NULL with a libuv error
 * code in *err on failure. */
static av_sock *av_sock_new(av_transport *t, curl_socket_t fd, bool foreign, int *err) {
  *err = UV_ENOMEM;
  if (!av_socks_reserve(t, fd)) return NULL;
  /* An entry for fd is stale (the fd was closed and reused): its handle
   * must go first, as libuv lets only one handle watch an fd. */
  if (t->socks[fd]) av_sock_close(t->socks[fd]);
  av_sock *sk = calloc(1, sizeof *sk);
  if (!sk) return NULL;
  *err = uv_poll_init_socket(t->uv, &sk->poll, fd);
  if (*err != 0) {
    free(sk);
    return NULL;
  }
  sk->poll.data = sk;
  sk->t = t;
  sk->fd = fd;
  sk->foreign = foreign;
  struct stat st;
  if (fstat(fd, &st) == 0) {
    sk->dev = st.st_dev;
    sk->ino = st.st_ino;
  }
  t->socks[fd] = sk;
  return sk;
}

/* Whether sk's fd now names another file. libcurl 7.88 closes a socket it
 * gave up while still connecting without our close callback, so its entry
 * outlives it, and the fd number may come back as a socket we did not
 * open (the resolver's). Such an entry is idle and unwatched: only those
 * are checked, off the hot path. */
static bool av_sock_stale(const av_sock *sk) {
  struct stat st;
  if (sk->events || sk->wanted) return false;
  return fstat(sk->fd, &st) != 0 || st.st_dev != sk->dev || st.st_ino != sk->ino;
}

/* The av_easy of a libcurl handle of ours. */
static av_easy *av_easy_of(CURL *h) {
  av_easy *e = NULL;
  curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&e);
  return e;
}

/* Tell the users of finished transfers. Copy each message first: the
 * user's removal of its handle invalidates it. */
static void av_transport_drain(av_transport *t) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(t->multi, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    av_easy *e = av_easy_of(msg->easy_handle);
    CURLcode code = msg->data.result;
    e->vt->done(e, code);
  }
}

static void av_poll_cb(uv_poll_t *h, int status, int events);

/* Start (or restart) the poll for events unless it runs for them already:
 * every uv_poll_start costs epoll_ctl calls, even for the same events. */
static int av_sock_watch(av_sock *sk, int events) {
  if (events == sk->events) return 0;
  int err = uv_poll_start(&sk->poll, events, av_poll_cb);
  sk->events = err == 0 ? events : 0;
  return err;
}

static void av_sock_unwatch(av_sock *sk) {
  if (sk->events) uv_poll_stop(&sk->poll);
  sk->events = 0;
}

/* Whether the transfer that last gave sk up still runs: one that wants
 * no events for a while (paused) keeps its connection. */
static bool av_sock_in_use(const av_sock *sk) {
  return sk->user && sk->user->busy && sk->user->use == sk->use;
}

/* Remember which transfer gives sk up (see av_sock_in_use). */
static void av_sock_given_up(av_sock *sk, CURL *easy) {
  av_easy *e = easy ? av_easy_of(easy) : NULL;
  sk->user = e && e->busy ? e : NULL;
  sk->use = sk->user ? sk->user->use : 0;
}

/* Whether sk is the connection of a transfer its user paused. Such a
 * transfer may have paused before libcurl ever asked us to watch the
 * socket (a reused connection whose answer came at once), so the socket
 * looks idle: it is told by its local port, which the user gave with
 * av_xfer_connection. Checked only on an idle socket's event, and only
 * while some transfer is paused. */
static int av_port_of(const struct sockaddr_storage *a) {
  return a->ss_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)a)->sin6_port)
                                  : ntohs(((const struct sockaddr_in *)a)->sin_port);
}

static bool av_sock_paused(const av_sock *sk) {
  const av_transport *t = sk->t;
  if (t->n_paused == 0) return false;
  struct sockaddr_storage here, there;
  socklen_t hlen = sizeof here, tlen = sizeof there;
  if (getsockname(sk->fd, (struct sockaddr *)&here, &hlen) != 0 ||
      getpeername(sk->fd, (struct sockaddr *)&there, &tlen) != 0)
    return false;
  /* both ports: one local port may serve connections to two servers */
  int local = av_port_of(&here), remote = av_port_of(&there);
  for (const av_easy *e = t->busy_easy; e; e = e->bnext)
    if (e->paused && e->local_port == local && e->remote_port == remote) return true;
  return false;
}

/* An event on a socket libcurl does not watch now. On an idle kept-alive
 * connection any readiness is bytes nobody asked for, the server's close
 * or an error: shut it down so that it carries no other request. */
static void av_sock_idle_event(av_sock *sk) {
  if (av_sock_in_use(sk) || av_sock_paused(sk)) {
    av_sock_unwatch(sk); /* libcurl asks again when it wants the socket */
    return;
  }
  sk->dead = true;
  av_sock_unwatch(sk);
  /* Read the stray bytes away, then shut down: libcurl's check before
   * reuse then finds the connection at its end (a peek that reads 0) and
   * drops it. Bytes left in it would make it look alive, and each reuse
   * of such a connection costs a transfer one of libcurl's 5 retries. */
  char junk[4096];
  for (int i = 0; i < 16 && recv(sk->fd, junk, sizeof junk, MSG_DONTWAIT) > 0; i++) {
  }
  shutdown(sk->fd, SHUT_RDWR);
}

static void av_poll_cb(uv_poll_t *h, int status, int events) {
  av_sock *sk = h->data;
  av_transport *t = sk->t;
  int flags = 0;
  /* on POLLERR libuv has stopped the handle itself */
  if (status < 0) sk->events = 0;
  if (!sk->wanted) {
    av_sock_idle_event(sk);
    return;
  }
  /* An error (a reset, say) is libcurl's to find by reading or writing:
   * told only CURL_CSELECT_ERR, libcurl 7.88 fails the transfer with
   * "select/poll returned error" and never retries a reused connection
   * that the server had closed. */
  if (status < 0) events = sk->wanted;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  curl_socket_t fd = sk->fd;
  int running;
  curl_multi_socket_action(t->multi, fd, flags, &running);
  /* libcurl still wants the socket that libuv stopped: watch it again */
  if (status < 0 && (size_t)fd < t->nsocks && t->socks[fd] == sk && sk->wanted && !sk->events)
    av_sock_watch(sk, sk->wanted);
  av_transport_drain(t);
}

static void av_curl_timer_cb(uv_timer_t *timer) {
  av_transport *t = timer->data;
  int running;
  curl_multi_socket_action(t->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  av_transport_drain(t);
}

/* CURLMOPT_TIMERFUNCTION: -1 stops; 0 means "next loop turn", not "now". */
static int av_curl_timer_fn(CURLM *multi, long timeout_ms, void *userp) {
  av_transport *t = userp;
  if (timeout_ms < 0)
    uv_timer_stop(&t->timer);
  else
    uv_timer_start(&t->timer, av_curl_timer_cb, (uint64_t)timeout_ms, 0);
  return 0;
}

/* A socket of easy's transfer cannot be watched. libcurl 7.88 ignores an
 * error returned from the socket callback and would wait for events that
 * never come: the user must fail the transfer from outside libcurl. */
static void av_curl_watch_failed(CURL *easy, int err) {
  av_easy *e = av_easy_of(easy);
  if (e && e->busy) e->vt->unwatchable(e, err);
}

/* CURLMOPT_SOCKETFUNCTION: start, change or stop polling one socket. The
 * socks map, not a socketp of curl_multi_assign, says which handle polls
 * fd: socketp outlives a handle we closed when fd was reused. */
static int av_curl_socket_fn(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  av_transport *t = userp;
  av_sock *sk = (size_t)fd < t->nsocks ? t->socks[fd] : NULL;
  if (what == CURL_POLL_REMOVE) {
    if (!sk) return 0;
    if (sk->foreign) {
      av_sock_close(sk);
      return 0;
    }
    /* Idle (or paused): a connection last read from stays watched for
     * reading (see the top of the file). Any other is stopped, never
     * started anew: one given up while it was still connecting is about to
     * be closed, and libcurl 7.88 closes those without our close callback,
     * so its fd may be gone already. */
    sk->wanted = 0;
    av_sock_given_up(sk, easy);
    if (sk->dead || sk->events != UV_READABLE) av_sock_unwatch(sk);
    return 0;
  }
  int err;
  if (sk && av_sock_stale(sk)) sk = NULL; /* av_sock_new replaces it */
  if (!sk && !(sk = av_sock_new(t, fd, true, &err))) {
    av_curl_watch_failed(easy, err);
    return 0;
  }
  int events = 0;
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  sk->wanted = events;
  err = av_sock_watch(sk, events);
  if (err != 0) av_curl_watch_failed(easy, err);
  return 0;
}

static curl_socket_t av_curl_open_fn(void *clientp, curlsocktype purpose, struct curl_sockaddr *a) {
  av_transport *t = clientp;
  curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
  if (fd < 0) return CURL_SOCKET_BAD;
  int err;
  if (!av_sock_new(t, fd, false, &err)) {
    close(fd);
    return CURL_SOCKET_BAD;
  }
  return fd;
}

static int av_curl_close_fn(void *clientp, curl_socket_t fd) {
  av_transport *t = clientp;
  if ((size_t)fd < t->nsocks && t->socks[fd]) av_sock_close(t->socks[fd]);
  return close(fd);
}

/* libcurl's built-in CA bundle and directory (NULL where it has none):
 * what a handle goes back to after a session with a ca_file of its own. */
static int av_curl_tls_defaults(av_transport *t) {
  CURL *h = curl_easy_init();
  if (!h) return -1;
  char *file = NULL, *path = NULL;
  curl_easy_getinfo(h, CURLINFO_CAINFO, &file);
  curl_easy_getinfo(h, CURLINFO_CAPATH, &path);
  t->default_cainfo = file ? strdup(file) : NULL;
  t->default_capath = path ? strdup(path) : NULL;
  curl_easy_cleanup(h);
  return (file && !t->default_cainfo) || (path && !t->default_capath) ? -1 : 0;
}

int av_transport_init(av_transport *t, uv_loop_t *uv) {
  memset(t, 0, sizeof *t);
  t->uv = uv;
  uv_timer_init(uv, &t->timer);
  t->timer.data = t;
  if (av_curl_tls_defaults(t) != 0) return -1;
  t->multi = curl_multi_init();
  if (!t->multi) return -1;
  curl_multi_setopt(t->multi, CURLMOPT_SOCKETFUNCTION, av_curl_socket_fn);
  curl_multi_setopt(t->multi, CURLMOPT_SOCKETDATA, t);
  curl_multi_setopt(t->multi, CURLMOPT_TIMERFUNCTION, av_curl_timer_fn);
  curl_multi_setopt(t->multi, CURLMOPT_TIMERDATA, t);
  /* Limits are the session's; libcurl's own queueing must never engage. */
  curl_multi_setopt(t->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, 0L);
  curl_multi_setopt(t->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
  curl_multi_setopt(t->multi, CURLMOPT_MAXCONNECTS, 1000L);
  return 0;
}

CURLMcode av_xfer_start(av_transport *t, av_easy *e) {
  CURLMcode rc = curl_multi_add_handle(t->multi, e->h);
  if (rc == CURLM_OK) t->n_running++;
  return rc;
}

void av_xfer_stop(av_transport *t, av_easy *e) {
  curl_multi_remove_handle(t->multi, e->h);
  t->n_running--;
}

/* What every easy handle of this transport has, set once per handle. */
static void av_curl_setup_easy(av_transport *t, av_easy *e) {
  CURL *h = e->h;
  curl_easy_setopt(h, CURLOPT_PRIVATE, e);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, av_curl_open_fn);
  curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, t);
  curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, av_curl_close_fn);
  curl_easy_setopt(h, CURLOPT_CLOSESOCKETDATA, t);
}

av_easy *av_easy_get(av_transport *t, const av_xfer_vtable *vt, void *user) {
  av_easy *e = t->idle_easy;
  if (e) {
    /* Options persist across transfers: the user sets what varies. */
    t->idle_easy = e->next;
    e->fresh = false;
  } else {
    e = malloc(sizeof *e);
    if (!e) return NULL;
    e->h = curl_easy_init();
    if (!e->h) {
      free(e);
      return NULL;
    }
    e->fresh = true;
    e->paused = false;
    e->local_port = e->remote_port = 0;
    e->use = 0;
    e->tls_id = 0; /* libcurl's defaults: verify, the system's CAs */
    e->client_id = 0;
    e->share = NULL;
    e->cookie_engine = false;
    av_curl_setup_easy(t, e);
    t->n_easy++;
  }
  e->next = NULL;
  e->vt = vt;
  e->user = user;
  e->errbuf[0] = '\0';
  e->busy = true;
  e->use++;
  e->bprev = NULL;
  e->bnext = t->busy_easy;
  if (t->busy_easy) t->busy_easy->bprev = e;
  t->busy_easy = e;
  return e;
}

void av_easy_tls(av_transport *t, av_easy *e, const av_tls *tls) {
  if (e->tls_id == tls->id) return; /* most requests: nothing to set */
  CURL *h = e->h;
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, tls->verify ? 1L : 0L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, tls->verify ? 2L : 0L);
  /* a ca_file is the only trust, as in aiohttp's ssl context with a cafile */
  curl_easy_setopt(h, CURLOPT_CAINFO, tls->ca_file ? tls->ca_file : t->default_cainfo);
  curl_easy_setopt(h, CURLOPT_CAPATH, tls->ca_file ? NULL : t->default_capath);
  e->tls_id = tls->id;
}

void av_xfer_connection(av_easy *e, int local_port, int remote_port) {
  e->local_port = local_port;
  e->remote_port = remote_port;
}

void av_xfer_paused(av_transport *t, av_easy *e, bool paused) {
  if (e->paused == paused) return;
  e->paused = paused;
  if (paused) t->n_paused++; else t->n_paused--;
}

void av_easy_put(av_transport *t, av_easy *e) {
  av_xfer_paused(t, e, false);
  if (e->bprev) e->bprev->bnext = e->bnext; else t->busy_easy = e->bnext;
  if (e->bnext) e->bnext->bprev = e->bprev;
  e->bprev = e->bnext = NULL;
  e->busy = false;
  e->vt = NULL;
  e->user = NULL;
  e->next = t->idle_easy;
  t->idle_easy = e;
}

void av_easy_discard(av_transport *t, av_easy *e) {
  /* a kept-alive socket its transfer gave up still names it (see
   * av_sock_in_use): forget it there before it is freed. Rare (Digest
   * handles), so a walk over the sockets is fine. */
  for (size_t i = 0; i < t->nsocks; i++)
    if (t->socks[i] && t->socks[i]->user == e) t->socks[i]->user = NULL;
  av_easy_put(t, e);
  t->idle_easy = e->next; /* av_easy_put made it the first idle one */
  curl_easy_cleanup(e->h);
  free(e);
  t->n_easy--;
}

uint64_t av_transport_id(av_transport *t) { return ++t->ids; }

CURLSH *av_transport_jar(void) {
  CURLSH *sh = curl_share_init();
  if (sh && curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_COOKIE) != CURLSHE_OK) {
    curl_share_cleanup(sh);
    return NULL;
  }
  return sh;
}

void av_easy_jar(av_easy *e, CURLSH *jar) {
  if (e->share == jar) return; /* most requests: nothing to set */
  CURL *h = e->h;
  /* Detaching a handle from a jar also drops the jar's cookies from it. */
  curl_easy_setopt(h, CURLOPT_SHARE, jar);
  e->share = jar;
  if (jar && !e->cookie_engine) {
    /* libcurl sends and stores cookies only once its cookie engine is on
     * for the handle, which only loading a cookie file does: load "" (no
     * file) into the shared jar, then forget the file name, so that a
     * handle later used without a jar never starts a private one.
     * Forgetting it also unhooks the jar: hook it again. */
    curl_easy_setopt(h, CURLOPT_COOKIEFILE, "");
    curl_easy_setopt(h, CURLOPT_COOKIELIST, "RELOAD");
    curl_easy_setopt(h, CURLOPT_COOKIEFILE, NULL);
    curl_easy_setopt(h, CURLOPT_SHARE, NULL);
    curl_easy_setopt(h, CURLOPT_SHARE, jar);
    e->cookie_engine = true;
  }
}

void av_transport_drop_jar(av_transport *t, CURLSH *jar) {
  if (!jar) return;
  for (av_easy *e = t ? t->idle_easy : NULL; e; e = e->next)
    if (e->share == jar) av_easy_jar(e, NULL);
  curl_share_cleanup(jar);
}

size_t av_transport_sockets(const av_transport *t) {
  size_t n = 0;
  for (size_t i = 0; i < t->nsocks; i++) n += t->socks[i] != NULL;
  return n;
}

void av_transport_close(av_transport *t) {
  /* Handles still held (streamed responses left open) go back first. */
  while (t->busy_easy) {
    av_easy *e = t->busy_easy;
    e->vt->aborted(e);
    if (t->busy_easy == e) av_easy_put(t, e); /* a user that did not */
  }
  /* Easy handles next: each keeps a pointer to the multi's shared state. */
  while (t->idle_easy) {
    av_easy *e = t->idle_easy;
    t->idle_easy = e->next;
    curl_easy_cleanup(e->h);
    free(e);
    t->n_easy--;
  }
  if (t->multi) curl_multi_cleanup(t->multi); /* closes pooled sockets */
  t->multi = NULL;
  free(t->default_cainfo);
  free(t->default_capath);
  t->default_cainfo = t->default_capath = NULL;
  for (size_t i = 0; i < t->nsocks; i++)
    if (t->socks[i]) av_sock_close(t->socks[i]);
  free(t->socks); /* the close callbacks free each av_sock, not the map */
  t->socks = NULL;
  t->nsocks = 0;
  if (t->uv && !uv_is_closing((uv_handle_t *)&t->timer)) uv_close((uv_handle_t *)&t->timer, NULL);
}
