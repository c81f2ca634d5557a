/* Work ops: loop:work(token, chunk, args...) -> op, for avideo.run_in_thread.
 * The function (a binary chunk from string.dump) runs in libuv's thread
 * pool, in a fresh Lua state of its own. Arguments and results cross the
 * thread boundary as flat byte encodings (codec.c), never as Lua objects,
 * so no two threads ever touch one Lua state.
 *
 * The job (chunk, encodings, libuv request) is malloc'd apart from the op
 * userdata: a cancelled op can be unanchored and collected while its worker
 * still runs (uv_cancel fails once a job started), and then the orphaned
 * job lives on until after_work, which frees it on the loop thread. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "private.h"

#define AV_WORK_MT "avideo.work_op"

/* Jobs alive in this Lua state (queued, running, or holding results): one
 * per Lua state, kept in the registry under the address of av_work_counts_key
 * (so a second require of the module shares it, and there is no C global),
 * and an upvalue of loop:work. It lives until lua_close, which runs every
 * loop's finalizer, waiting for the jobs, before it frees any memory. */
typedef struct av_work_counts {
  size_t jobs;
} av_work_counts;

static const char av_work_counts_key = 'j';

typedef struct av_job av_job;

typedef struct av_work {
  av_op op;    /* first: an av_work is an av_op */
  av_job *job; /* NULL once its result was taken, or once it was orphaned */
} av_work;

struct av_job {
  uv_work_t req;
  av_work *owner;         /* NULL once orphaned: after_work then frees the job */
  av_work_counts *counts;
  bool queued;            /* between uv_queue_work and after_work */
  int abandoned;          /* set (atomically) once orphaned: the worker's hook stops its function */
  bool ok;                /* the function returned; out holds its results */
  bool fail_table;        /* it raised a table: out holds a plain copy of it, its traceback and
                           * whether it was an avideo error */
  const char *fail_kind;  /* "invalid" when the worker refused the chunk or a result */
  int nargs, nres;
  av_buf args;            /* encoded arguments */
  av_buf out;             /* encoded results, or the error message */
  size_t chunk_len;
  const char *path, *cpath; /* the caller's package.path/cpath, or NULL */
  char text[];            /* chunk, then path and cpath, each NUL-ended */
};

/* -------------------------------------------------------------- the job */

static void av_job_free(av_job *job) {
  job->counts->jobs--;
  av_buf_free(&job->args);
  av_buf_free(&job->out);
  free(job);
}

/* The op lets go of its job: free it now unless a worker may still use
 * it, in which case after_work frees it. */
static void av_job_orphan(av_job *job) {
  if (!job->queued) {
    av_job_free(job);
    return;
  }
  job->owner = NULL;
  /* a running function nobody waits for any more stops at its worker's
   * next hook: one that never ends kept a thread, and the process's exit
   * (which waits for every job) hung */
  __atomic_store_n(&job->abandoned, 1, __ATOMIC_RELAXED);
  /* succeeds only while the job waits for a thread; either way libuv then
   * calls after_work, once */
  uv_cancel((uv_req_t *)&job->req);
}

/* Replace the job's output with an error message (worker side). */
static void av_job_fail(av_job *job, const char *kind, const char *msg, size_t len) {
  job->ok = false;
  job->fail_kind = kind;
  job->nres = 0;
  job->out.len = 0;
  av_buf_append(&job->out, msg, len); /* empty on OOM: result() says so */
}

/* ---------------------------------------------------------- worker side */

/* The registry key of the worker's job (a light userdata). */
static const char av_work_job_key = 'w';

/* Count hook: the job was abandoned (its op cancelled or collected): end
 * the function. (LuaJIT runs no hook inside compiled code.) */
static void av_work_hook(lua_State *W, lua_Debug *ar) {
  (void)ar;
  lua_pushlightuserdata(W, (void *)&av_work_job_key);
  lua_rawget(W, LUA_REGISTRYINDEX);
  av_job *job = lua_touserdata(W, -1);
  lua_pop(W, 1);
  if (job && __atomic_load_n(&job->abandoned, __ATOMIC_RELAXED)) {
    /* from now on at every instruction: a pcall that catches this error
     * is left at once by the next one */
    lua_sethook(W, av_work_hook, LUA_MASKCOUNT, 1);
    luaL_error(W, "abandoned: nobody waits for this worker thread any more");
  }
}

/* The registry key of the table error's box (av_work_msgh). */
static const char av_work_box_key = 'b';

/* __tostring of a table error, called protected: it may raise too. */
static int av_work_tostring(lua_State *W) {
  luaL_callmeta(W, 1, "__tostring");
  return 1;
}

/* Message handler: the error as a string, with the worker's traceback; a
 * table error as a box { error, traceback, text } (the box's metatable is
 * the registry's av_work_box_key value), so that it can be copied back. */
static int av_work_msgh(lua_State *W) {
  const char *msg = lua_tostring(W, 1);
  if (msg == NULL) {
    lua_pushcfunction(W, av_work_tostring);
    lua_pushvalue(W, 1);
    if (lua_pcall(W, 1, 1, 0) == LUA_OK && lua_type(W, -1) == LUA_TSTRING)
      msg = lua_tostring(W, -1);
    else
      msg = lua_pushfstring(W, "(error object is a %s value)", luaL_typename(W, 1));
  }
  luaL_traceback(W, W, NULL, 1);
  lua_pushfstring(W, "%s\nworker thread %s", msg, lua_tostring(W, -1));
  if (lua_type(W, 1) != LUA_TTABLE) return 1;
  int text = lua_gettop(W);
  lua_createtable(W, 3, 0);
  lua_pushvalue(W, 1);
  lua_rawseti(W, -2, 1);
  lua_pushvalue(W, text - 1); /* the traceback */
  lua_rawseti(W, -2, 2);
  lua_pushvalue(W, text);
  lua_rawseti(W, -2, 3);
  lua_pushlightuserdata(W, (void *)&av_work_box_key);
  lua_rawget(W, LUA_REGISTRYINDEX);
  lua_setmetatable(W, -2);
  return 1;
}

/* A table error's box at the top: its error (a plain table, or an avideo
 * error as a plain copy of its fields), its traceback and whether it is an
 * avideo error, encoded into job->out; false for any other table with a
 * metatable, or one that cannot be copied (the box's text then stands for
 * it). Raises only on Lua memory errors. */
static bool av_work_fail_table(lua_State *W, av_job *job) {
  int box = lua_gettop(W);
  lua_rawgeti(W, box, 1);
  int err = lua_gettop(W);
  bool avideo_error = false;
  if (luaL_getmetafield(W, err, "__name") != LUA_TNIL) {
    avideo_error = lua_type(W, -1) == LUA_TSTRING && strcmp(lua_tostring(W, -1), "avideo.Error") == 0;
    lua_pop(W, 1);
  }
  /* another table with a metatable would lose it: its text says more */
  if (!avideo_error && lua_getmetatable(W, err)) {
    lua_settop(W, box);
    return false;
  }
  lua_newtable(W); /* the plain copy */
  lua_pushnil(W);
  while (lua_next(W, err)) {
    lua_pushvalue(W, -2);
    lua_insert(W, -2);
    lua_rawset(W, -4);
  }
  lua_rawgeti(W, box, 2);
  lua_pushboolean(W, avideo_error);
  av_copy c = {.what = "error", .where = "back from a worker thread", .pos = 1};
  job->out.len = 0;
  bool ok = av_copy_values(&c, W, &job->out, err + 1, err + 3);
  lua_settop(W, box);
  if (!ok) return false;
  job->ok = false;
  job->fail_table = true;
  job->fail_kind = NULL;
  job->nres = 3;
  return true;
}

/* Set package[field] in the worker state to the caller's value. */
static void av_work_set_package(lua_State *W, const char *field, const char *value) {
  if (!value) return;
  lua_getglobal(W, "package");
  if (lua_istable(W, -1)) {
    lua_pushstring(W, value);
    lua_setfield(W, -2, field);
  }
  lua_pop(W, 1);
}

/* Protected body of a worker: open the state, load the chunk, call it with
 * the arguments, encode its results. Lua errors here are not the user's
 * (out of memory): av_work_run reports them. */
static int av_work_main(lua_State *W) {
  av_job *job = lua_touserdata(W, 1);
  luaL_openlibs(W);
  lua_pushlightuserdata(W, (void *)&av_work_box_key);
  lua_newtable(W);
  lua_rawset(W, LUA_REGISTRYINDEX);
  lua_pushlightuserdata(W, (void *)&av_work_job_key);
  lua_pushlightuserdata(W, job);
  lua_rawset(W, LUA_REGISTRYINDEX);
  lua_sethook(W, av_work_hook, LUA_MASKCOUNT, 10000);
  av_work_set_package(W, "path", job->path);
  av_work_set_package(W, "cpath", job->cpath);
  lua_pushcfunction(W, av_work_msgh); /* 2 */
  if (luaL_loadbufferx(W, job->text, job->chunk_len, "=run_in_thread", "b") != LUA_OK) {
    size_t len;
    const char *msg = lua_tolstring(W, -1, &len);
    av_job_fail(job, "invalid", msg, len);
    return 0;
  }
  int fn = lua_gettop(W); /* 3 */
  /* only _ENV may be an upvalue; it becomes the worker's own globals (5.1
   * has no _ENV: a loaded chunk's environment is the globals already) */
  const char *name;
  for (int i = 1; (name = lua_getupvalue(W, fn, i)) != NULL; i++) {
    lua_pop(W, 1);
    if (strcmp(name, "_ENV") != 0) {
      const char *msg = lua_pushfstring(W, "the function has upvalue '%s'; only _ENV can cross to a worker thread", name);
      av_job_fail(job, "invalid", msg, strlen(msg));
      return 0;
    }
    lua_pushglobaltable(W);
    lua_setupvalue(W, fn, i);
  }
  luaL_checkstack(W, job->nargs + 1, "too many arguments for a worker thread");
  av_reader r = {job->args.data};
  for (int i = 0; i < job->nargs; i++) av_value_push(W, &r);
  av_buf_free(&job->args); /* copied in: not needed any more */
  if (lua_pcall(W, job->nargs, LUA_MULTRET, 2) != LUA_OK) {
    if (lua_type(W, -1) == LUA_TTABLE && lua_getmetatable(W, -1)) {
      lua_pushlightuserdata(W, (void *)&av_work_box_key);
      lua_rawget(W, LUA_REGISTRYINDEX);
      bool boxed = lua_rawequal(W, -1, -2);
      lua_pop(W, 2);
      if (boxed && av_work_fail_table(W, job)) return 0;
      if (boxed) lua_rawgeti(W, -1, 3); /* not copyable: its text */
    }
    size_t len;
    const char *msg = lua_tolstring(W, -1, &len);
    if (!msg) msg = "(error object is not a string)", len = strlen(msg);
    av_job_fail(job, NULL, msg, len);
    return 0;
  }
  int last = lua_gettop(W);
  av_copy c = {.what = "result", .where = "back from a worker thread", .pos = 1};
  if (!av_copy_values(&c, W, &job->out, fn, last)) {
    av_job_fail(job, c.oom ? NULL : "invalid", c.msg, strlen(c.msg));
    return 0;
  }
  job->ok = true;
  job->nres = last - fn + 1;
  return 0;
}

/* libuv thread pool: the whole life of the worker's Lua state. */
static void av_work_run(uv_work_t *req) {
  av_job *job = req->data;
  lua_State *W = luaL_newstate();
  if (!W) {
    static const char msg[] = "not enough memory for a worker Lua state";
    av_job_fail(job, NULL, msg, sizeof msg - 1);
    return;
  }
  lua_pushcfunction(W, av_work_main);
  lua_pushlightuserdata(W, job);
  if (lua_pcall(W, 1, 0, 0) != LUA_OK) {
    size_t len;
    const char *msg = lua_tolstring(W, -1, &len);
    if (!msg) msg = "worker thread failed", len = strlen(msg);
    av_job_fail(job, NULL, msg, len);
  }
  lua_close(W);
}

/* ------------------------------------------------------------ loop side */

/* Loop thread, after the worker ended (or was cancelled before it ran). */
static void av_work_after(uv_work_t *req, int status) {
  av_job *job = req->data;
  job->queued = false;
  av_work *w = job->owner;
  if (!w) {
    av_job_free(job);
    return;
  }
  if (status != 0) { /* only an orphan is ever cancelled; be safe anyway */
    static const char msg[] = "worker job was cancelled";
    av_job_fail(job, NULL, msg, sizeof msg - 1);
  }
  if (w->op.state == AV_OP_PENDING) av_op_finish(&w->op);
}

static void av_work_cancel(av_op *op) {
  av_work *w = (av_work *)op;
  av_job *job = w->job;
  w->job = NULL;
  if (job) av_job_orphan(job);
}

static void av_work_expire(av_op *op) { (void)op; /* work ops have no deadline */ }

static const av_op_vtable av_work_vt = {av_work_cancel, av_work_expire};

/* The caller's package[field] as a string, or NULL (value left on the stack). */
static const char *av_work_package(lua_State *L, int pkg, const char *field, size_t *len) {
  *len = 0;
  if (!lua_istable(L, pkg)) {
    lua_pushnil(L);
    return NULL;
  }
  lua_getfield(L, pkg, field);
  return lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, len) : NULL;
}

/* loop:work(token, chunk, args...) -> op | nil, "invalid", message
 * Arguments are numbered as the function sees them: its first is #1. */
static int av_work_new(lua_State *L) {
  av_work_counts *counts = lua_touserdata(L, lua_upvalueindex(1));
  av_loop *lp = av_loop_check(L, 1);
  luaL_checkany(L, 2);
  size_t chunk_len;
  const char *chunk = luaL_checklstring(L, 3, &chunk_len);
  int last = lua_gettop(L);

  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "package");
  int pkg = lua_gettop(L);
  size_t plen, cplen;
  const char *path = av_work_package(L, pkg, "path", &plen);
  const char *cpath = av_work_package(L, pkg, "cpath", &cplen);

  av_work *w = lua_newuserdatauv(L, sizeof *w, AV_OP_NUV);
  int idx = lua_gettop(L);
  av_op_init(&w->op, lp, &av_work_vt);
  w->job = NULL;
  luaL_setmetatable(L, AV_WORK_MT);

  /* from here the userdata owns the job: a Lua error below leaks nothing */
  av_job *job = malloc(sizeof *job + chunk_len + plen + cplen + 2);
  if (!job) return luaL_error(L, "out of memory");
  memset(job, 0, sizeof *job);
  job->counts = counts;
  counts->jobs++;
  job->owner = w;
  w->job = job;
  job->req.data = job;
  job->chunk_len = chunk_len;
  char *p = job->text;
  memcpy(p, chunk, chunk_len);
  p += chunk_len;
  if (path) {
    memcpy(p, path, plen + 1);
    job->path = p;
    p += plen + 1;
  }
  if (cpath) {
    memcpy(p, cpath, cplen + 1);
    job->cpath = p;
  }

  av_copy c = {.what = "argument", .where = "to a worker thread", .pos = 1};
  if (!av_copy_values(&c, L, &job->args, 4, last)) {
    if (c.oom) return luaL_error(L, "out of memory");
    w->job = NULL;
    av_job_free(job); /* now, so refusals do not wait for the GC */
    lua_pushnil(L);
    lua_pushliteral(L, "invalid");
    lua_pushstring(L, c.msg);
    return 3;
  }
  job->nargs = last - 3;

  av_op_start(L, &w->op, idx, 2, 1);
  job->queued = true;
  int rc = uv_queue_work(&lp->uv, &job->req, av_work_run, av_work_after);
  if (rc != 0) {
    job->queued = false;
    av_op_cancel(L, idx);
    return luaL_error(L, "avideo: cannot start a worker job: %s", uv_strerror(rc));
  }
  lua_pushvalue(L, idx);
  return 1;
}

/* op:result() -> true, results... | false, message [, kind]
 * kind is "invalid" when the worker refused the function or a result, and
 * absent when the function itself raised (message has its traceback). */
static int av_work_result(lua_State *L) {
  av_work *w = luaL_checkudata(L, 1, AV_WORK_MT);
  av_job *job = w->job;
  if (!job || job->queued || w->op.state != AV_OP_IDLE)
    return luaL_error(L, "worker job has no result (not finished, cancelled, or already taken)");
  int n;
  if (job->ok) {
    luaL_checkstack(L, job->nres + 1, "too many results from a worker thread");
    lua_pushboolean(L, 1);
    av_reader r = {job->out.data};
    for (int i = 0; i < job->nres; i++) av_value_push(L, &r);
    n = job->nres + 1;
  } else if (job->fail_table) {
    /* false, the error's plain copy, "table", its traceback, whether it
     * was an avideo error */
    lua_pushboolean(L, 0);
    av_reader r = {job->out.data};
    av_value_push(L, &r);
    lua_pushliteral(L, "table");
    av_value_push(L, &r);
    av_value_push(L, &r);
    n = 5;
  } else {
    lua_pushboolean(L, 0);
    if (job->out.len > 0)
      lua_pushlstring(L, job->out.data, job->out.len);
    else
      lua_pushliteral(L, "not enough memory in a worker thread");
    n = 2;
    if (job->fail_kind) {
      lua_pushstring(L, job->fail_kind);
      n = 3;
    }
  }
  /* the values are Lua's now: free the job early, not at GC */
  w->job = NULL;
  av_job_free(job);
  return n;
}

/* op:cancel() -> true if it was not yet delivered. Results nobody will
 * take (the op was ready, or delivered but not read) are freed now. */
static int av_work_op_cancel(lua_State *L) {
  av_work *w = luaL_checkudata(L, 1, AV_WORK_MT);
  lua_pushboolean(L, av_op_cancel(L, 1));
  av_job *job = w->job;
  w->job = NULL;
  if (job) av_job_orphan(job);
  return 1;
}

/* A pending op is anchored by its loop, so it is collected only after it
 * was cancelled (job already orphaned) or together with its loop (the
 * loop's own finalizer may run after this one and waits for the worker). */
static int av_work_gc(lua_State *L) {
  av_work *w = luaL_checkudata(L, 1, AV_WORK_MT);
  av_job *job = w->job;
  w->job = NULL;
  if (job) av_job_orphan(job);
  return 0;
}

/* loop:jobs() -> worker jobs alive in this Lua state (queued, running, or
 * holding results not yet taken), for leak checks. */
static int av_work_jobs(lua_State *L) {
  av_work_counts *counts = lua_touserdata(L, lua_upvalueindex(1));
  luaL_checkudata(L, 1, AV_LOOP_MT);
  lua_pushinteger(L, (lua_Integer)counts->jobs);
  return 1;
}

void av_work_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"result", av_work_result}, {"cancel", av_work_op_cancel}, {NULL, NULL}};
  luaL_newmetatable(L, AV_WORK_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, av_work_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_getmetatable(L, AV_LOOP_MT);
  lua_getfield(L, -1, "__index");
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &av_work_counts_key) != LUA_TUSERDATA) {
    lua_pop(L, 1);
    av_work_counts *counts = lua_newuserdatauv(L, sizeof *counts, 0);
    counts->jobs = 0;
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &av_work_counts_key);
  }
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, av_work_new, 1);
  lua_setfield(L, -3, "work");
  lua_pushcclosure(L, av_work_jobs, 1);
  lua_setfield(L, -2, "jobs");
  lua_pop(L, 2);
}
