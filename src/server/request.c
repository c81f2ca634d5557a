/* A request whose answer waits: it queues for a slot of its endpoint's gate,
 * sleeps the model's delay on a uv timer, then its connection is resumed
 * and routes.c answers it.
 *
 * MHD does not watch a suspended connection, so a uv_poll on its socket
 * notices a client that leaves meanwhile: the request then leaves the queue
 * or gives its slot back at once, and the connection is dropped. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "server.h"

static void av_request_timer_cb(uv_timer_t *timer);

struct av_request *av_request_new(struct av_server *server,
                                  struct MHD_Connection *conn)
{
  struct av_request *req = calloc(1, sizeof *req);
  if (req == NULL)
    return NULL;
  req->server = server;
  req->conn = conn;
  req->call.video = -1;
  req->next = server->live;
  if (server->live)
    server->live->prev = req;
  server->live = req;
  return req;
}

static void av_request_free_if_done(struct av_request *req)
{
  /* libuv owns the embedded handles until their close callbacks ran. */
  if (!req->completed || req->handles > 0)
    return;
  json_decref(req->call.patch);
  av_buf_free(&req->body);
  free(req);
}

static void av_request_closed(uv_handle_t *handle)
{
  struct av_request *req = handle->data;
  req->handles--;
  av_request_free_if_done(req);
}

static void av_request_close_handles(struct av_request *req)
{
  if (req->timer_open) {
    req->timer_open = false;
    uv_close((uv_handle_t *)&req->timer, av_request_closed);
  }
  if (req->watch_open) {
    /* Closing stops the poll at once, before MHD may close the socket. */
    req->watch_open = false;
    uv_close((uv_handle_t *)&req->watch, av_request_closed);
  }
}

/* Hold a slot for delay seconds. */
static void av_request_sleep(struct av_request *req, double delay)
{
  uv_loop_t *loop = req->server->loop;
  if (!req->timer_open) {
    uv_timer_init(loop, &req->timer);
    req->timer.data = req;
    req->timer_open = true;
    req->handles++;
  }
  /* Loop time is in whole ms and lags within a busy turn: refresh it, and
   * add a ms so that the timer never fires before the delay is over. */
  uv_update_time(loop);
  uint64_t ms = delay > 0 ? (uint64_t)llround(delay * 1000) + 1 : 0;
  req->state = AV_REQUEST_SLEEPING;
  uv_timer_start(&req->timer, av_request_timer_cb, ms, 0);
}

/* Give a slot back; the next in the queue starts its delay now. */
static void av_request_release(struct av_gate *gate)
{
  double delay;
  struct av_waiter *next = av_gate_release(gate, &delay);
  if (next)
    av_request_sleep(av_container_of(next, struct av_request, waiter), delay);
}

/* Leave the gate from whatever place the request has in it. */
static void av_request_leave(struct av_request *req)
{
  if (req->state == AV_REQUEST_QUEUED) {
    av_gate_remove(req->gate, &req->waiter);
  } else if (req->state == AV_REQUEST_SLEEPING) {
    uv_timer_stop(&req->timer);
    av_request_release(req->gate);
  }
}

/* Resume the connection; the next handler call sees state. */
static void av_request_wake(struct av_request *req,
                            enum av_request_state state)
{
  req->state = state;
  av_request_close_handles(req);
  MHD_resume_connection(req->conn);
  /* A resumed connection moves only when MHD runs again. */
  av_http_kick(&req->server->http);
}

static void av_request_timer_cb(uv_timer_t *timer)
{
  struct av_request *req = timer->data;
  av_request_leave(req);
  av_request_wake(req, AV_REQUEST_READY);
}

static void av_request_watch_cb(uv_poll_t *watch, int status, int events)
{
  struct av_request *req = watch->data;
  if (status == 0 && !(events & UV_DISCONNECT)) {
    uv_os_fd_t fd;
    char byte;
    uv_fileno((uv_handle_t *)watch, &fd);
    ssize_t got = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (got > 0) {
      /* A pipelined request, not a goodbye: the client stays, and we stop
       * looking (its data would wake us forever). */
      uv_poll_stop(watch);
      return;
    }
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
      return;
  }
  /* End of stream, reset or error: the answer has nobody to go to. */
  av_request_leave(req);
  av_request_wake(req, AV_REQUEST_GONE);
}

static void av_request_watch(struct av_request *req)
{
  const union MHD_ConnectionInfo *info =
    MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
  /* Without a watch, a client that leaves is noticed when its answer is
   * due: slower, still never stuck. */
  if (info == NULL ||
      uv_poll_init(req->server->loop, &req->watch, info->connect_fd) != 0)
    return;
  req->watch.data = req;
  req->watch_open = true;
  req->handles++;
  uv_poll_start(&req->watch, UV_READABLE | UV_DISCONNECT, av_request_watch_cb);
}

void av_request_defer(struct av_request *req, struct av_gate *gate)
{
  double delay;
  req->gate = gate;
  if (av_gate_take(gate, &delay)) {
    av_request_sleep(req, delay);
  } else {
    av_gate_push(gate, &req->waiter);
    req->state = AV_REQUEST_QUEUED;
  }
  MHD_suspend_connection(req->conn);
  av_request_watch(req);
}

void av_request_set_capacity(struct av_gate *gate, unsigned capacity)
{
  double delay;
  struct av_waiter *next;
  gate->capacity = capacity;
  while ((next = av_gate_admit(gate, &delay)))
    av_request_sleep(av_container_of(next, struct av_request, waiter), delay);
}

void av_request_complete(struct av_request *req)
{
  struct av_server *server = req->server;
  av_request_leave(req);
  req->state = AV_REQUEST_DONE;
  av_request_close_handles(req);
  if (req->prev)
    req->prev->next = req->next;
  else
    server->live = req->next;
  if (req->next)
    req->next->prev = req->prev;
  req->completed = true;
  av_request_free_if_done(req);
}

void av_request_abort_all(struct av_server *server)
{
  server->stopping = true;
  /* The queues empty first, so the slots given back next go to nobody. */
  for (struct av_request *req = server->live; req; req = req->next) {
    if (req->state == AV_REQUEST_QUEUED) {
      av_request_leave(req);
      av_request_wake(req, AV_REQUEST_GONE);
    }
  }
  for (struct av_request *req = server->live; req; req = req->next) {
    if (req->state == AV_REQUEST_SLEEPING) {
      av_request_leave(req);
      av_request_wake(req, AV_REQUEST_GONE);
    }
  }
}
