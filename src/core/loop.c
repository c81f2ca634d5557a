/* The loop: a libuv loop, libcurl's multi, the ops waiting on them, and
 * step(), which runs libuv until some op is ready and hands the ready ops
 * to the Lua scheduler. No Lua code ever runs from a libuv callback: the
 * callbacks only move ops to the ready list. A host program may drive the
 * loop from its own event loop instead (fd(), timeout(), attach()). */
#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "private.h"

/* ------------------------------------------------------------------ ops */

void av_op_init(av_op *op, av_loop *loop, const av_op_vtable *vt) {
  memset(op, 0, sizeof *op);
  op->vt = vt;
  op->loop = loop;
  op->state = AV_OP_IDLE;
  op->ref = LUA_NOREF;
  op->heap_index = -1;
}

/* The anchor table is the loop userdata's user value; it keeps each pending
 * op (and, through the op's user value 1, its token) alive. An op keeps its
 * loop alive through its user value 2. */
void av_op_start(lua_State *L, av_op *op, int idx, int tidx, int loopidx) {
  idx = lua_absindex(L, idx);
  loopidx = lua_absindex(L, loopidx);
  lua_pushvalue(L, tidx);
  lua_setiuservalue(L, idx, AV_UV_TOKEN);
  lua_pushvalue(L, loopidx);
  lua_setiuservalue(L, idx, AV_UV_LOOP);
  lua_getiuservalue(L, loopidx, 1);
  lua_pushvalue(L, idx);
  op->ref = luaL_ref(L, -2);
  lua_pop(L, 1);
  op->state = AV_OP_PENDING;
  op->loop->n_pending++;
  op->loop->n_anchored++;
}

void av_op_finish(av_op *op) {
  av_loop *lp = op->loop;
  /* An op finished before libuv's poll phase (by a timer due when the turn
   * began) must not wait for that poll to time out: uv_stop makes this
   * turn's poll return at once, and step hand the op to Lua. */
  uv_stop(&lp->uv);
  av_deadline_clear(op);
  op->state = AV_OP_READY;
  op->rnext = NULL;
  op->rprev = lp->ready_tail;
  if (lp->ready_tail)
    lp->ready_tail->rnext = op;
  else
    lp->ready_head = op;
  lp->ready_tail = op;
  lp->n_ready++;
}

static void av_ready_unlink(av_loop *lp, av_op *op) {
  if (op->rprev) op->rprev->rnext = op->rnext; else lp->ready_head = op->rnext;
  if (op->rnext) op->rnext->rprev = op->rprev; else lp->ready_tail = op->rprev;
  op->rprev = op->rnext = NULL;
  lp->n_ready--;
}

static void av_op_unanchor(lua_State *L, av_op *op, int idx) {
  lua_getiuservalue(L, idx, AV_UV_LOOP);
  lua_getiuservalue(L, -1, 1);
  luaL_unref(L, -1, op->ref);
  lua_pop(L, 2);
  op->ref = LUA_NOREF;
  op->state = AV_OP_IDLE;
  op->loop->n_pending--;
}

bool av_op_cancel(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  av_op *op = lua_touserdata(L, idx);
  if (!op->loop) return false;
  if (op->state == AV_OP_PENDING) {
    av_deadline_clear(op);
    op->vt->cancel(op);
  } else if (op->state == AV_OP_READY) {
    av_ready_unlink(op->loop, op);
  } else {
    return false;
  }
  av_op_unanchor(L, op, idx);
  return true;
}

/* ------------------------------------------------------------ deadlines
 * One uv timer serves every op deadline: a binary min-heap keyed by the
 * loop's millisecond clock. */

static void av_deadline_cb(uv_timer_t *t);

static bool heap_less(av_op *a, av_op *b) { return a->deadline < b->deadline; }

static void heap_place(av_loop *lp, size_t i, av_op *op) {
  lp->heap[i] = op;
  op->heap_index = (int)i;
}

static void heap_up(av_loop *lp, size_t i) {
  av_op *op = lp->heap[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!heap_less(op, lp->heap[p])) break;
    heap_place(lp, i, lp->heap[p]);
    i = p;
  }
  heap_place(lp, i, op);
}

static void heap_down(av_loop *lp, size_t i) {
  av_op *op = lp->heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= lp->heap_len) break;
    if (c + 1 < lp->heap_len && heap_less(lp->heap[c + 1], lp->heap[c])) c++;
    if (!heap_less(lp->heap[c], op)) break;
    heap_place(lp, i, lp->heap[c]);
    i = c;
  }
  heap_place(lp, i, op);
}

/* Keep the uv timer on the earliest deadline. */
static void av_deadline_rearm(av_loop *lp) {
  if (lp->heap_len == 0) {
    uv_timer_stop(&lp->deadline_timer);
    return;
  }
  uint64_t now = uv_now(&lp->uv);
  uint64_t at = lp->heap[0]->deadline;
  uv_timer_start(&lp->deadline_timer, av_deadline_cb, at > now ? at - now : 0, 0);
}

void av_deadline_clear(av_op *op) {
  av_loop *lp = op->loop;
  if (op->heap_index < 0) return;
  size_t i = (size_t)op->heap_index;
  op->heap_index = -1;
  av_op *last = lp->heap[--lp->heap_len];
  if (i < lp->heap_len) {
    heap_place(lp, i, last);
    heap_up(lp, i);
    heap_down(lp, (size_t)last->heap_index);
  }
  if (i == 0) av_deadline_rearm(lp);
}

void av_deadline_set(av_op *op, uint64_t ms) {
  av_loop *lp = op->loop;
  av_deadline_clear(op);
  if (lp->heap_len == lp->heap_cap) {
    size_t cap = lp->heap_cap ? lp->heap_cap * 2 : 64;
    av_op **h = realloc(lp->heap, cap * sizeof *h);
    if (!h) abort(); /* a deadline we cannot keep would hang a task */
    lp->heap = h;
    lp->heap_cap = cap;
  }
  op->deadline = av_loop_now_ms(lp) + ms;
  heap_place(lp, lp->heap_len, op);
  heap_up(lp, lp->heap_len++);
  if (op->heap_index == 0) av_deadline_rearm(lp);
}

static void av_deadline_cb(uv_timer_t *t) {
  av_loop *lp = t->data;
  uint64_t now = uv_now(&lp->uv);
  while (lp->heap_len > 0 && lp->heap[0]->deadline <= now) {
    av_op *op = lp->heap[0];
    av_deadline_clear(op);
    op->vt->expire(op); /* may set a new deadline or finish the op */
  }
  av_deadline_rearm(lp);
}

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
 * reads data as its own type, and luv skips handles whose data is NULL.
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
static void av_host_arm(av_loop *lp) {
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
static void av_host_detach(av_loop *lp) {
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
static int av_host_attach(av_loop *lp, uv_loop_t *uv) {
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
static uv_loop_t *av_host_arg(lua_State *L, int idx) {
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
static int av_loop_attach(lua_State *L) {
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
static int av_loop_fd(lua_State *L) {
  av_loop *lp = av_loop_check(L, 1);
  lua_pushinteger(L, uv_backend_fd(&lp->uv));
  return 1;
}

/* loop:timeout([busy]) -> ms a host may wait on the fd (0 now, -1 none).
 * busy tells that the scheduler has tasks ready; it is remembered for the
 * host-side handles until the next call. */
static int av_loop_timeout(lua_State *L) {
  av_loop *lp = av_loop_check(L, 1);
  if (!lua_isnone(L, 2)) lp->busy = lua_toboolean(L, 2);
  av_host_arm(lp);
  lua_pushinteger(L, av_loop_timeout_ms(lp));
  return 1;
}

/* ----------------------------------------------------------------- loop */

uint64_t av_loop_now_ms(av_loop *lp) {
  uv_update_time(&lp->uv);
  return uv_now(&lp->uv);
}

av_loop *av_loop_check(lua_State *L, int idx) {
  av_loop *lp = luaL_checkudata(L, idx, AV_LOOP_MT);
  if (lp->closed) luaL_error(L, "avideo loop is closed");
  return lp;
}

static void av_close_walk_cb(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Cancel every op still owned by the loop, then close libcurl and libuv.
 * Ops' own finalizers may run later: they see op->loop == NULL. */
static void av_loop_shutdown(lua_State *L, av_loop *lp) {
  if (lp->closed) return;
  lp->closing = true;
  av_host_detach(lp); /* before our backend fd goes away */
  lua_getiuservalue(L, 1, 1);
  int anchor = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, anchor)) {
    if (lua_type(L, -1) == LUA_TUSERDATA) {
      av_op *op = lua_touserdata(L, -1);
      if (op->state == AV_OP_PENDING) {
        av_deadline_clear(op);
        op->vt->cancel(op);
      }
      op->state = AV_OP_IDLE;
      op->ref = LUA_NOREF;
      op->loop = NULL;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_newtable(L);
  lua_setiuservalue(L, 1, 1);
  lp->ready_head = lp->ready_tail = NULL;
  lp->n_ready = lp->n_pending = 0;
  av_curl_close(lp);
  uv_walk(&lp->uv, av_close_walk_cb, NULL);
  while (uv_run(&lp->uv, UV_RUN_DEFAULT) != 0) {
  }
  uv_loop_close(&lp->uv);
  free(lp->heap);
  free(lp->socks);
  lp->heap = NULL;
  lp->socks = NULL;
  lp->closed = true;
}

/* core.loop([host]) -> loop
 * host as for loop:attach; without one, the loop a C host left in the
 * registry with avideo_set_loop, if any. */
static int av_loop_new(lua_State *L) {
  uv_loop_t *host = NULL;
  if (lua_isnoneornil(L, 1)) {
    lua_getfield(L, LUA_REGISTRYINDEX, AVIDEO_HOST_LOOP_KEY);
    host = lua_touserdata(L, -1);
    lua_pop(L, 1);
  } else {
    host = av_host_arg(L, 1);
  }
  lua_settop(L, 0); /* the loop is at index 1, as its methods expect */
  av_loop *lp = lua_newuserdatauv(L, sizeof *lp, 1);
  memset(lp, 0, sizeof *lp);
  lp->closed = true; /* until fully set up, so __gc does nothing */
  luaL_setmetatable(L, AV_LOOP_MT);
  int rc = uv_loop_init(&lp->uv);
  if (rc != 0) return luaL_error(L, "avideo: cannot create event loop: %s", uv_strerror(rc));
  uv_timer_init(&lp->uv, &lp->curl_timer);
  uv_timer_init(&lp->uv, &lp->deadline_timer);
  lp->curl_timer.data = lp;
  lp->deadline_timer.data = lp;
  lp->closed = false;
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  if (av_curl_init(lp) != 0) {
    av_loop_shutdown(L, lp);
    return luaL_error(L, "avideo: cannot create libcurl multi handle");
  }
  if (host) {
    rc = av_host_attach(lp, host);
    if (rc != 0) {
      av_loop_shutdown(L, lp);
      return luaL_error(L, "avideo: cannot watch the host loop: %s", uv_strerror(rc));
    }
  }
  return 1;
}

/* loop:step(nowait, out) -> n
 * Run libuv until at least one op is ready (or, with nowait, once without
 * blocking), then store ready ops as out[2i-1] = token, out[2i] = op.
 * n == 0 without nowait means nothing is pending: waiting would be forever. */
static int av_loop_step(lua_State *L) {
  av_loop *lp = av_loop_check(L, 1);
  bool nowait = lua_toboolean(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  if (lp->ready_head == NULL) {
    if (nowait) {
      uv_run(&lp->uv, UV_RUN_NOWAIT);
    } else {
      /* uv_run returns 0 once nothing is active: no op can become ready */
      while (lp->ready_head == NULL && uv_run(&lp->uv, UV_RUN_ONCE) != 0) {
      }
    }
  }
  lua_getiuservalue(L, 1, 1);
  int anchor = lua_gettop(L);
  lua_Integer n = 0;
  while (lp->ready_head) {
    av_op *op = lp->ready_head;
    av_ready_unlink(lp, op);
    lua_rawgeti(L, anchor, op->ref);          /* op */
    lua_getiuservalue(L, -1, AV_UV_TOKEN);    /* op token */
    lua_rawseti(L, 3, 2 * n + 1);
    lua_rawseti(L, 3, 2 * n + 2);
    luaL_unref(L, anchor, op->ref);
    op->ref = LUA_NOREF;
    op->state = AV_OP_IDLE;
    lp->n_pending--;
    n++;
  }
  /* luaL_ref's table never shrinks: once empty after a large burst, replace it */
  if (lp->n_pending == 0 && lp->n_anchored > 4096) {
    lua_newtable(L);
    lua_setiuservalue(L, 1, 1);
    lp->n_anchored = 0;
  }
  av_host_arm(lp);
  lua_pushinteger(L, n);
  return 1;
}

/* loop:pending() -> ops owned by the loop, transfers inside libcurl, easy handles, sockets */
static int av_loop_pending(lua_State *L) {
  av_loop *lp = av_loop_check(L, 1);
  size_t socks = 0;
  for (size_t i = 0; i < lp->nsocks; i++) socks += lp->socks[i] != NULL;
  lua_pushinteger(L, (lua_Integer)lp->n_pending);
  lua_pushinteger(L, (lua_Integer)lp->n_running);
  lua_pushinteger(L, (lua_Integer)lp->n_easy);
  lua_pushinteger(L, (lua_Integer)socks);
  return 4;
}

static int av_loop_close(lua_State *L) {
  av_loop *lp = luaL_checkudata(L, 1, AV_LOOP_MT);
  av_loop_shutdown(L, lp);
  return 0;
}

static int av_loop_tostring(lua_State *L) {
  av_loop *lp = luaL_checkudata(L, 1, AV_LOOP_MT);
  lua_pushfstring(L, "avideo.loop (%s%p)", lp->closed ? "closed, " : "", (void *)lp);
  return 1;
}

/* core.now() -> monotonic seconds */
static int av_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

void av_loop_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"step", av_loop_step},   {"pending", av_loop_pending}, {"sleep", av_timer_new},
      {"close", av_loop_close}, {"attach", av_loop_attach},   {"fd", av_loop_fd},
      {"timeout", av_loop_timeout}, {NULL, NULL}};
  luaL_newmetatable(L, AV_LOOP_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, av_loop_close);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, av_loop_close);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, av_loop_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  lua_pushcfunction(L, av_loop_new);
  lua_setfield(L, -2, "loop");
  lua_pushcfunction(L, av_now);
  lua_setfield(L, -2, "now");
}
