/* Timer ops: loop:sleep(token, seconds) -> op, ready after the delay.
 * Timers are entries in the loop's deadline heap, not uv handles, so they
 * cost one small userdata and nothing to close. */
#include <math.h>

#include "private.h"

static void av_timer_cancel(av_op *op) { (void)op; /* the deadline is already cleared */ }

static void av_timer_expire(av_op *op) { av_op_finish(op); }

static const av_op_vtable av_timer_vt = {av_timer_cancel, av_timer_expire};

/* Milliseconds for a delay in seconds; an error for NaN or negative. */
static uint64_t av_timer_ms(lua_State *L, int arg) {
  lua_Number s = luaL_checknumber(L, arg);
  if (isnan(s) || s < 0) av_error_arg(L, arg, "delay must be a non-negative number, got %f", s);
  if (s > 1e9) s = 1e9; /* about 31 years: treat as forever, but stay in range */
  return (uint64_t)ceil(s * 1000.0);
}

int av_timer_new(lua_State *L) {
  av_loop *lp = av_loop_check(L, 1);
  luaL_checkany(L, 2);
  uint64_t ms = av_timer_ms(L, 3);
  av_op *op = lua_newuserdatauv(L, sizeof *op, AV_OP_NUV);
  av_op_init(op, lp, &av_timer_vt);
  luaL_setmetatable(L, AV_TIMER_MT);
  av_op_start(L, op, -1, 2, 1);
  av_deadline_set(op, ms);
  return 1;
}

static int av_timer_op_cancel(lua_State *L) {
  luaL_checkudata(L, 1, AV_TIMER_MT);
  lua_pushboolean(L, av_op_cancel(L, 1));
  return 1;
}

void av_timer_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"cancel", av_timer_op_cancel}, {NULL, NULL}};
  luaL_newmetatable(L, AV_TIMER_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}
