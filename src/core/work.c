/* Work ops: loop:work(token, chunk, args...) -> op, for avideo.run_in_thread.
 * The function (a binary chunk from string.dump) runs in libuv's thread
 * pool, in a fresh Lua state of its own. Arguments and results cross the
 * thread boundary as flat byte encodings, never as Lua objects, so no two
 * threads ever touch one Lua state.
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
#define AV_COPY_DEPTH 100 /* nesting levels a copied table may have */

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
  bool ok;                /* the function returned; out holds its results */
  const char *fail_kind;  /* "invalid" when the worker refused the chunk or a result */
  int nargs, nres;
  av_buf args;            /* encoded arguments */
  av_buf out;             /* encoded results, or the error message */
  size_t chunk_len;
  const char *path, *cpath; /* the caller's package.path/cpath, or NULL */
  char text[];            /* chunk, then path and cpath, each NUL-ended */
};

/* ------------------------------------------------------------- encoding
 * A value is a tag byte and its payload in native layout (both ends are one
 * process): integers and floats raw, so integer/float and NaN survive;
 * strings as a size_t length and the bytes; tables as two size_t counts
 * (positive integer keys, all pairs), patched in after the walk, then
 * key, value, key, value... */
enum {
  AV_T_NIL = 'n',
  AV_T_FALSE = 'f',
  AV_T_TRUE = 't',
  AV_T_INT = 'i',
  AV_T_FLOAT = 'd',
  AV_T_STRING = 's',
  AV_T_TABLE = 'T'
};

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

/* Record why the copy stopped; always false. */
static bool av_copy_fail(av_copy *c, const char *fmt, ...) {
  int n = snprintf(c->msg, sizeof c->msg, "%s #%d%s: ", c->what, c->pos, c->path);
  if (n < 0 || (size_t)n >= sizeof c->msg) return false;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->msg + n, sizeof c->msg - (size_t)n, fmt, ap);
  va_end(ap);
  return false;
}

static bool av_copy_put(av_copy *c, const void *p, size_t n) {
  if (av_buf_append(c->out, p, n)) return true;
  c->oom = true;
  return av_copy_fail(c, "out of memory");
}

static bool av_copy_tag(av_copy *c, char tag) { return av_copy_put(c, &tag, 1); }

/* Append the key at idx to the path, Lua-style; "..." once it is full. */
static void av_copy_path_push(av_copy *c, int idx) {
  lua_State *L = c->L;
  size_t room = sizeof c->path - c->plen;
  char *p = c->path + c->plen;
  int n;
  if (lua_type(L, idx) == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    static const char word[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789";
    bool ident = len > 0 && len <= 40 && strspn(s, word) == len && !(s[0] >= '0' && s[0] <= '9');
    if (ident)
      n = snprintf(p, room, ".%s", s);
    else
      n = snprintf(p, room, "[\"%.*s%s\"]", len > 24 ? 24 : (int)len, s, len > 24 ? "..." : "");
  } else if (lua_isinteger(L, idx)) {
    n = snprintf(p, room, "[%lld]", (long long)lua_tointeger(L, idx));
  } else if (lua_type(L, idx) == LUA_TNUMBER) {
    n = snprintf(p, room, "[%.14g]", (double)lua_tonumber(L, idx));
  } else if (lua_type(L, idx) == LUA_TBOOLEAN) {
    n = snprintf(p, room, "[%s]", lua_toboolean(L, idx) ? "true" : "false");
  } else {
    n = snprintf(p, room, "[<%s>]", luaL_typename(L, idx));
  }
  if (n < 0 || (size_t)n >= room) { /* full: end it with "..." and add no more */
    memcpy(c->path + sizeof c->path - 4, "...", 4);
    c->plen = sizeof c->path - 1;
  } else {
    c->plen += (size_t)n;
  }
}

static bool av_copy_value(av_copy *c, int idx, int depth);

static bool av_copy_table(av_copy *c, int idx, int depth) {
  lua_State *L = c->L;
  if (lua_getmetatable(L, idx)) {
    lua_pop(L, 1);
    return av_copy_fail(c, "a table with a metatable cannot be copied %s (only plain tables)", c->where);
  }
  if (depth >= AV_COPY_DEPTH)
    return av_copy_fail(c, "tables nested more than %d levels deep cannot be copied", AV_COPY_DEPTH);
  if (!lua_checkstack(L, 4)) return av_copy_fail(c, "Lua stack overflow");
  lua_pushvalue(L, idx);
  if (lua_rawget(L, c->seen) != LUA_TNIL) {
    lua_pop(L, 1);
    return av_copy_fail(c, "a table that contains itself (a cycle) cannot be copied");
  }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushboolean(L, 1);
  lua_rawset(L, c->seen);

  size_t counts[2] = {0, 0}; /* positive integer keys, all pairs */
  size_t at = c->out->len + 1;
  if (!av_copy_tag(c, AV_T_TABLE) || !av_copy_put(c, counts, sizeof counts)) return false;
  size_t plen = c->plen;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int k = lua_gettop(L) - 1;
    av_copy_path_push(c, k);
    int kt = lua_type(L, k);
    if (kt != LUA_TSTRING && kt != LUA_TNUMBER && kt != LUA_TBOOLEAN) {
      av_copy_fail(c, "a %s key cannot be copied (keys must be booleans, numbers or strings)", lua_typename(L, kt));
      lua_pop(L, 2);
      return false;
    }
    if (!av_copy_value(c, k, depth + 1) || !av_copy_value(c, k + 1, depth + 1)) {
      lua_pop(L, 2);
      return false;
    }
    if (lua_isinteger(L, k) && lua_tointeger(L, k) > 0) counts[0]++;
    counts[1]++;
    c->plen = plen;
    c->path[plen] = '\0';
    lua_pop(L, 1);
  }
  memcpy(c->out->data + at, counts, sizeof counts);
  lua_pushvalue(L, idx);
  lua_pushnil(L);
  lua_rawset(L, c->seen);
  return true;
}

/* Encode the value at idx (absolute) into c->out; false with c->msg set
 * when it cannot be copied. Raises only on Lua memory errors. */
static bool av_copy_value(av_copy *c, int idx, int depth) {
  lua_State *L = c->L;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    return av_copy_tag(c, AV_T_NIL);
  case LUA_TBOOLEAN:
    return av_copy_tag(c, lua_toboolean(L, idx) ? AV_T_TRUE : AV_T_FALSE);
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      lua_Integer i = lua_tointeger(L, idx);
      return av_copy_tag(c, AV_T_INT) && av_copy_put(c, &i, sizeof i);
    } else {
      lua_Number n = lua_tonumber(L, idx);
      return av_copy_tag(c, AV_T_FLOAT) && av_copy_put(c, &n, sizeof n);
    }
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    return av_copy_tag(c, AV_T_STRING) && av_copy_put(c, &len, sizeof len) && av_copy_put(c, s, len);
  }
  case LUA_TTABLE:
    return av_copy_table(c, idx, depth);
  default:
    return av_copy_fail(c, "a %s cannot be copied %s (only nil, booleans, numbers, strings and plain tables can)",
                        luaL_typename(L, idx), c->where);
  }
}

/* Encode the values at first..last into out, numbering them from pos;
 * false with c->msg set on the first that cannot be copied. */
static bool av_copy_values(av_copy *c, lua_State *L, av_buf *out, int first, int last) {
  c->L = L;
  c->out = out;
  c->oom = false;
  lua_newtable(L);
  c->seen = lua_gettop(L);
  for (int i = first; i <= last; i++, c->pos++) {
    c->plen = 0;
    c->path[0] = '\0';
    if (!av_copy_value(c, i, 0)) {
      lua_pop(L, 1);
      return false;
    }
  }
  lua_pop(L, 1);
  return true;
}

/* ------------------------------------------------------------- decoding
 * Only ever reads what av_copy_value wrote, so it trusts the layout. */

typedef struct av_reader {
  const char *p;
} av_reader;

static void av_reader_take(av_reader *r, void *dst, size_t n) {
  memcpy(dst, r->p, n);
  r->p += n;
}

/* Push the next encoded value; raises only on Lua memory errors. */
static void av_value_push(lua_State *L, av_reader *r) {
  char tag = *r->p++;
  switch (tag) {
  case AV_T_NIL:
    lua_pushnil(L);
    break;
  case AV_T_FALSE:
  case AV_T_TRUE:
    lua_pushboolean(L, tag == AV_T_TRUE);
    break;
  case AV_T_INT: {
    lua_Integer i;
    av_reader_take(r, &i, sizeof i);
    lua_pushinteger(L, i);
    break;
  }
  case AV_T_FLOAT: {
    lua_Number n;
    av_reader_take(r, &n, sizeof n);
    lua_pushnumber(L, n);
    break;
  }
  case AV_T_STRING: {
    size_t len;
    av_reader_take(r, &len, sizeof len);
    lua_pushlstring(L, r->p, len);
    r->p += len;
    break;
  }
  default: { /* AV_T_TABLE */
    size_t counts[2];
    av_reader_take(r, counts, sizeof counts);
    luaL_checkstack(L, 3, "copied table nested too deeply");
    size_t nrec = counts[1] - counts[0];
    lua_createtable(L, counts[0] < INT32_MAX ? (int)counts[0] : 0, nrec < INT32_MAX ? (int)nrec : 0);
    for (size_t i = 0; i < counts[1]; i++) {
      av_value_push(L, r);
      av_value_push(L, r);
      lua_rawset(L, -3);
    }
    break;
  }
  }
}

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

/* Message handler: the error as a string, with the worker's traceback. */
static int av_work_msgh(lua_State *W) {
  const char *msg = lua_tostring(W, 1);
  if (msg == NULL) {
    if (luaL_callmeta(W, 1, "__tostring") && lua_type(W, -1) == LUA_TSTRING)
      msg = lua_tostring(W, -1);
    else
      msg = lua_pushfstring(W, "(error object is a %s value)", luaL_typename(W, 1));
  }
  luaL_traceback(W, W, NULL, 1);
  lua_pushfstring(W, "%s\nworker thread %s", msg, lua_tostring(W, -1));
  return 1;
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
  /* only _ENV may be an upvalue; it becomes the worker's own globals */
  const char *name;
  for (int i = 1; (name = lua_getupvalue(W, fn, i)) != NULL; i++) {
    lua_pop(W, 1);
    if (strcmp(name, "_ENV") != 0) {
      const char *msg = lua_pushfstring(W, "the function has upvalue '%s'; only _ENV can cross to a worker thread", name);
      av_job_fail(job, "invalid", msg, strlen(msg));
      return 0;
    }
    lua_rawgeti(W, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    lua_setupvalue(W, fn, i);
  }
  luaL_checkstack(W, job->nargs + 1, "too many arguments for a worker thread");
  av_reader r = {job->args.data};
  for (int i = 0; i < job->nargs; i++) av_value_push(W, &r);
  av_buf_free(&job->args); /* copied in: not needed any more */
  if (lua_pcall(W, job->nargs, LUA_MULTRET, 2) != LUA_OK) {
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
