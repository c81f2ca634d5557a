/* The loop userdata, a binding over the layers: core.loop() makes the
 * loop layer (libuv, ops, deadlines: ops.c), the transport on it
 * (transport.c) and a host's watchers (host.c); step() runs libuv until
 * some op is ready and hands the ready ops to the Lua scheduler; close()
 * cancels every op and takes the layers down from the top. */
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>
#include <unistd.h>

#include "private.h"

static void av_close_walk_cb(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Cancel every op still owned by the loop, then close libcurl and libuv.
 * Ops' own finalizers may run later: they see op->loop == NULL. */
static void av_loop_trace_free(av_core_loop *cl) {
  if (cl->trace) {
    av_buf_free(&cl->trace->requests);
    av_buf_free(&cl->trace->limits);
  }
  free(cl->trace);
  cl->trace = NULL;
}

static void av_loop_shutdown(lua_State *L, av_loop *lp) {
  if (lp->closed) return;
  av_transport *t = &((av_core_loop *)lp)->transport;
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
  av_transport_close(t);
  uv_walk(&lp->uv, av_close_walk_cb, NULL);
  while (uv_run(&lp->uv, UV_RUN_DEFAULT) != 0) {
  }
  uv_loop_close(&lp->uv);
  free(lp->heap);
  lp->heap = NULL;
  av_loop_trace_free((av_core_loop *)lp);
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
  av_core_loop *cl = lua_newuserdatauv(L, sizeof *cl, 1);
  av_loop *lp = &cl->loop;
  memset(cl, 0, sizeof *cl);
  lp->closed = true; /* until fully set up, so __gc does nothing */
  luaL_setmetatable(L, AV_LOOP_MT);
  int rc = uv_loop_init(&lp->uv);
  if (rc != 0) return luaL_error(L, "avideo: cannot create event loop: %s", uv_strerror(rc));
  uv_timer_init(&lp->uv, &lp->deadline_timer);
  lp->deadline_timer.data = lp;
  lp->closed = false;
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  if (av_transport_init(&cl->transport, &lp->uv) != 0) {
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
  const av_transport *t = &((av_core_loop *)lp)->transport;
  lua_pushinteger(L, (lua_Integer)lp->n_pending);
  lua_pushinteger(L, (lua_Integer)t->n_running);
  lua_pushinteger(L, (lua_Integer)t->n_easy);
  lua_pushinteger(L, (lua_Integer)av_transport_sockets(t));
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

/* loop:trace(on [, headers]): start (true) or stop recording ended
 * requests, with their header lines if `headers`; what was recorded and
 * not taken is dropped when it stops. */
static int av_loop_trace(lua_State *L) {
  av_core_loop *cl = (av_core_loop *)av_loop_check(L, 1);
  bool on = lua_toboolean(L, 2);
  cl->trace_headers = lua_toboolean(L, 3);
  if (on && !cl->trace) {
    if (!(cl->trace = calloc(1, sizeof *cl->trace))) return luaL_error(L, "out of memory");
    if (++cl->trace_epochs == 0) cl->trace_epochs = 1; /* 0 means "never shown" */
    cl->trace->epoch = cl->trace_epochs;
  }
  if (!on) av_loop_trace_free(cl);
  return 0;
}

/* loop:trace_take() -> the requests and the limit samples recorded since
 * the last take (two lists of tables: trace.c), empty when no trace is on */
static int av_loop_trace_take(lua_State *L) {
  av_core_loop *cl = (av_core_loop *)av_loop_check(L, 1);
  av_trace_push(L, cl->trace);
  if (cl->trace) cl->trace->requests.len = cl->trace->limits.len = 0;
  return 2;
}

/* core.now() -> monotonic seconds */
static int av_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

/* core.wall_now() -> seconds since the epoch, with their fraction: where
 * a trace's monotonic times are in the calendar (HAR's dates) */
static int av_wall_now(lua_State *L) {
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) != 0) return luaL_error(L, "cannot read the clock");
  lua_pushnumber(L, (lua_Number)tv.tv_sec + (lua_Number)tv.tv_usec / 1e6);
  return 1;
}

/* core.isatty(fd) -> whether fd is a terminal (a progress line redraws
 * itself only there) */
static int av_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)) == 1);
  return 1;
}

/* core.is_special(path) -> whether path names something that is neither
 * a regular file nor a directory (a device such as /dev/null, a FIFO, a
 * socket): response:save writes to it directly, not through a .part file
 * renamed over it. */
static int av_is_special(lua_State *L) {
  struct stat st;
  const char *path = luaL_checkstring(L, 1);
  lua_pushboolean(L, stat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode));
  return 1;
}

void av_loop_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"step", av_loop_step},   {"pending", av_loop_pending}, {"sleep", av_timer_new},
      {"close", av_loop_close}, {"attach", av_loop_attach},   {"fd", av_loop_fd},
      {"timeout", av_loop_timeout}, {"trace", av_loop_trace}, {"trace_take", av_loop_trace_take},
      {NULL, NULL}};
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
  lua_pushcfunction(L, av_wall_now);
  lua_setfield(L, -2, "wall_now");
  lua_pushcfunction(L, av_isatty);
  lua_setfield(L, -2, "isatty");
  lua_pushcfunction(L, av_is_special);
  lua_setfield(L, -2, "is_special");
}
