/* Embedding: a host program drives avideo's loop from its own event loop
 * (loop:fd(), loop:timeout()), or hands over its libuv loop
 * (loop:attach()), on which three handles of ours then watch our loop. */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "private.h"

/* ------------------------------------------------------------ embedding
 * A host that drives avideo from its own event loop watches our loop's
 * backend fd and wakes after timeout() at the latest, then steps the
 * scheduler without blocking. A libuv host can hand its loop over
 * (attach): we then keep those watchers on its loop ourselves, as three
 * handles of our own there. Our loop stays ours and is nested in the
 * host's rather than replaced by it, so avideo.run can still block on it,
 * and closing touches nothing of the host's but those three handles.
 * Their callbacks run our loop without blocking and call no Lua: the host
 * steps the scheduler once per turn of its loop. */

struct av_host {
  uv_poll_t poll;   /* our backend fd, while ops are pending */
  uv_timer_t timer; /* our next timeout */
  uv_idle_t idle;   /* keeps the host from blocking while work is ready */
  uv_loop_t *uv;    /* the host's loop */
  av_loop *loop;    /* NULL once detached */
  int open;         /* handles we are closing */
  bool polling;
  bool foreign;     /* the host closed some of our handles itself */
};

/* The handles' data fields stay NULL: a host that walks its loop and closes
 * every handle (luv does, when its loop is collected, possibly before ours)
 * reads data as its own type, and luv's close-all skips handles whose data
 * is NULL (its uv.walk does not: it asserts; docs/embedding.md says so).
 * Our callbacks find their av_host from the handle's address instead. */
#define av_host_of(handle, field) ((av_host *)(void *)((char *)(handle) - offsetof(av_host, field)))

/* libuv sets this flag (uv-common.h, the same in every 1.x) once a handle's
 * close has completed. */
#define AV_UV_HANDLE_CLOSED 0x00000002u

/* Whether our loop has watchers queued that it has not handed to epoll
 * yet: libuv does that at the start of its next poll, and until then the
 * backend fd cannot report them. libuv 1.44 (Debian 12) does not count them
 * in uv_backend_timeout (later versions return 0 for them); without this a
 * host waiting on the fd could sleep through a transfer's first event. The
 * queue is a private field of uv_loop_t, but its first word points to
 * itself when it is empty in every libuv 1.x layout. */
static bool av_loop_watchers_queued(av_loop *lp) {
  void *const *q = (void *const *)&lp->uv.watcher_queue;
  return *q != (const void *)q;
}

/* Milliseconds a host may wait on the fd before stepping: 0 = step now,
 * -1 = nothing to wait for. */
static int av_loop_timeout_ms(av_loop *lp) {
  if (lp->busy || lp->ready_head) return 0;
  if (lp->n_pending == 0) return -1;
  if (av_loop_watchers_queued(lp)) return 0;
  if (!uv_loop_alive(&lp->uv)) return -1; /* ops wait on each other only */
  uv_update_time(&lp->uv);
  return uv_backend_timeout(&lp->uv);
}

static void av_host_run(av_host *h);
static void av_host_poll_cb(uv_poll_t *p, int status, int events) { av_host_run(av_host_of(p, poll)); }
static void av_host_timer_cb(uv_timer_t *t) { av_host_run(av_host_of(t, timer)); }
static void av_host_idle_cb(uv_idle_t *i) { av_host_run(av_host_of(i, idle)); }

/* Set the host-side handles to our loop's state. A zero timeout uses the
 * idle handle, not a 0 ms timer: libuv 1.44 reruns a timer restarted at 0
 * from its own callback in the same turn, which would starve the host. */
void av_host_arm(av_loop *lp) {
  av_host *h = lp->host;
  if (!h) return;
  int ms = av_loop_timeout_ms(lp);
  if (ms == 0)
    uv_idle_start(&h->idle, av_host_idle_cb);
  else
    uv_idle_stop(&h->idle);
  if (ms > 0)
    uv_timer_start(&h->timer, av_host_timer_cb, (uint64_t)ms, 0);
  else
    uv_timer_stop(&h->timer);
  bool want = lp->n_pending > 0;
  if (want != h->polling && (!want || uv_poll_start(&h->poll, UV_READABLE, av_host_poll_cb) == 0)) {
    if (!want) uv_poll_stop(&h->poll);
    h->polling = want;
  }
}

/* A host-side handle fired: let our loop do its I/O and timers. */
static void av_host_run(av_host *h) {
  av_loop *lp = h->loop;
  if (!lp) return;
  uv_run(&lp->uv, UV_RUN_NOWAIT);
  av_host_arm(lp);
}

/* Free h once no close of its handles is pending. Handles the host closed
 * may still be closing, and then h must stay (a few hundred bytes, in an
 * unusual shutdown order) rather than be used after it was freed. */
static void av_host_free(av_host *h) {
  if (h->foreign) {
    uv_handle_t *hs[] = {(uv_handle_t *)&h->poll, (uv_handle_t *)&h->timer, (uv_handle_t *)&h->idle};
    for (size_t i = 0; i < sizeof hs / sizeof *hs; i++)
      if (!(hs[i]->flags & AV_UV_HANDLE_CLOSED)) return;
  }
  free(h);
}

static void av_host_close_cb(uv_handle_t *handle) {
  av_host *h;
  switch (handle->type) {
  case UV_POLL: h = av_host_of(handle, poll); break;
  case UV_TIMER: h = av_host_of(handle, timer); break;
  default: h = av_host_of(handle, idle); break;
  }
  if (--h->open == 0) av_host_free(h);
}

/* Close the host-side handles; libuv finishes on the host's next turn. */
void av_host_detach(av_loop *lp) {
  av_host *h = lp->host;
  if (!h) return;
  lp->host = NULL;
  h->loop = NULL;
  uv_handle_t *hs[] = {(uv_handle_t *)&h->poll, (uv_handle_t *)&h->timer, (uv_handle_t *)&h->idle};
  for (size_t i = 0; i < sizeof hs / sizeof *hs; i++) {
    if (uv_is_closing(hs[i])) {
      h->foreign = true;
    } else {
      uv_close(hs[i], av_host_close_cb);
      h->open++;
    }
  }
  if (h->open == 0) av_host_free(h);
}

/* Keep this module mapped for the life of the process. Our handles on a
 * host loop finish closing on the host's next turn, after lua_close, which
 * unloads C modules: their close callback must still be there. */
static void av_module_pin(void) {
  Dl_info info;
  if (dladdr((void *)av_host_close_cb, &info) && info.dli_fname)
    dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE); /* never closed */
}

/* Put our watchers on the host loop `uv`; a libuv error code on failure. */
int av_host_attach(av_loop *lp, uv_loop_t *uv) {
  if (lp->host && lp->host->uv == uv) return 0;
  av_host_detach(lp);
  av_module_pin();
  av_host *h = calloc(1, sizeof *h);
  if (!h) return UV_ENOMEM;
  int rc = uv_poll_init(uv, &h->poll, uv_backend_fd(&lp->uv));
  if (rc != 0) {
    free(h);
    return rc;
  }
  uv_timer_init(uv, &h->timer);
  uv_idle_init(uv, &h->idle);
  h->poll.data = h->timer.data = h->idle.data = NULL; /* see av_host_of */
  h->uv = uv;
  h->loop = lp;
  lp->host = h;
  av_host_arm(lp);
  return 0;
}

/* The luv_ctx_t of luv's public header luv.h begins with its loop; luv keeps
 * it in the registry of the state that required luv. */
typedef struct av_luv_ctx {
  uv_loop_t *loop;
} av_luv_ctx;

/* The host loop named by arg idx: a light userdata (uv_loop_t *), or the
 * luv module table (luv's loop in this state); NULL for nil. */
uv_loop_t *av_host_arg(lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
  case LUA_TNONE:
  case LUA_TNIL:
    return NULL;
  case LUA_TLIGHTUSERDATA:
    return lua_touserdata(L, idx);
  case LUA_TTABLE: {
    lua_getfield(L, LUA_REGISTRYINDEX, "luv_context");
    av_luv_ctx *ctx = lua_type(L, -1) == LUA_TUSERDATA ? lua_touserdata(L, -1) : NULL;
    lua_pop(L, 1);
    if (ctx && ctx->loop) return ctx->loop;
    av_error_arg(L, idx, "a table here must be the luv module, required in this Lua state");
    return NULL;
  }
  default:
    av_error_arg(L, idx, "expected a uv_loop_t * (light userdata), the luv module, or nil, got %s",
                 luaL_typename(L, idx));
    return NULL;
  }
}

/* loop:attach(host) -> loop
 * Hand our watchers to a host's libuv loop; nil takes them back. */
int av_loop_attach(lua_State *L) {
  av_loop *lp = av_loop_check(L, 1);
  uv_loop_t *uv = av_host_arg(L, 2);
  if (uv == &lp->uv) return av_error_arg(L, 2, "that is avideo's own loop");
  if (!uv) {
    av_host_detach(lp);
  } else {
    int rc = av_host_attach(lp, uv);
    if (rc != 0) return luaL_error(L, "avideo: cannot watch the host loop: %s", uv_strerror(rc));
  }
  lua_settop(L, 1);
  return 1;
}

/* loop:fd() -> the backend fd a host watches for reading */
int av_loop_fd(lua_State *L) {
  av_loop *lp = av_loop_check(L, 1);
  lua_pushinteger(L, uv_backend_fd(&lp->uv));
  return 1;
}

/* loop:timeout([busy]) -> ms a host may wait on the fd (0 now, -1 none).
 * busy tells that the scheduler has tasks ready; it is remembered for the
 * host-side handles until the next call. */
int av_loop_timeout(lua_State *L) {
  av_loop *lp = av_loop_check(L, 1);
  if (!lua_isnone(L, 2)) lp->busy = lua_toboolean(L, 2);
  av_host_arm(lp);
  lua_pushinteger(L, av_loop_timeout_ms(lp));
  return 1;
}
