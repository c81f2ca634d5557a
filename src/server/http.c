/* libmicrohttpd driven from the libuv loop.
 *
 * MHD runs in "external polling" epoll mode: its whole socket set sits
 * behind one epoll fd, which a single uv_poll watches; a uv timer follows
 * MHD_get_timeout (idle keep-alive closes, and work MHD left pending).
 * Either one calls MHD_run, which never blocks. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>

#include "server.h"

static void av_http_log(void *cls, const char *format, va_list args)
{
  struct av_http *http = cls;
  /* Once listening, a bad client is not the operator's news. */
  if (http->quiet)
    return;
  fputs("avideo-server: ", stderr);
  vfprintf(stderr, format, args);
}

static void av_http_timer_cb(uv_timer_t *timer);

/* Arm the timer for MHD's next deadline (at once when kicked). */
static void av_http_arm(struct av_http *http)
{
  MHD_UNSIGNED_LONG_LONG ms = 0;
  if (http->kicked)
    http->kicked = false;
  else if (MHD_get_timeout(http->daemon, &ms) != MHD_YES) {
    uv_timer_stop(&http->timer);
    return;
  }
  uv_timer_start(&http->timer, av_http_timer_cb, (uint64_t)ms, 0);
}

static void av_http_run(struct av_http *http)
{
  http->running = true;
  MHD_run(http->daemon);
  http->running = false;
  av_http_arm(http);
}

static void av_http_timer_cb(uv_timer_t *timer)
{
  av_http_run(timer->data);
}

static void av_http_poll_cb(uv_poll_t *poll, int status, int events)
{
  /* An error on the epoll fd itself cannot be fixed here; MHD_run will see
   * whatever is ready. */
  av_http_run(poll->data);
}

bool av_http_start(struct av_http *http, uv_loop_t *loop,
                   const struct av_http_config *config)
{
  unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                   MHD_USE_ERROR_LOG | MHD_USE_TURBO;
  const struct sockaddr *addr = config->addr;
  unsigned port = 0;

  *http = (struct av_http){ 0 };
  if (addr->sa_family == AF_INET6) {
    flags |= MHD_USE_IPv6;
    port = ntohs(((const struct sockaddr_in6 *)(const void *)addr)->sin6_port);
  } else {
    port = ntohs(((const struct sockaddr_in *)(const void *)addr)->sin_port);
  }
  http->daemon = MHD_start_daemon(
    flags, (uint16_t)port, NULL, NULL, config->access, config->cls,
    MHD_OPTION_EXTERNAL_LOGGER, av_http_log, http,
    MHD_OPTION_SOCK_ADDR, addr,
    MHD_OPTION_CONNECTION_TIMEOUT, config->keepalive_timeout,
    MHD_OPTION_CONNECTION_LIMIT, config->connection_limit,
    MHD_OPTION_CONNECTION_MEMORY_LIMIT, AV_HEADER_LIMIT,
    MHD_OPTION_NOTIFY_COMPLETED, config->completed, config->cls,
    MHD_OPTION_NOTIFY_CONNECTION, config->connection, config->cls,
    /* Strict, as h11 behind the talk's service is: a client under test
     * should learn that HTTP/1.1 needs a Host header. */
    MHD_OPTION_STRICT_FOR_CLIENT, 1,
    MHD_OPTION_END);
  if (http->daemon == NULL) {
    fprintf(stderr, "avideo-server: cannot start the HTTP server\n");
    return false;
  }
  http->port = MHD_get_daemon_info(http->daemon, MHD_DAEMON_INFO_BIND_PORT)->port;
  int epoll_fd =
    MHD_get_daemon_info(http->daemon, MHD_DAEMON_INFO_EPOLL_FD)->epoll_fd;
  int err = uv_poll_init(loop, &http->poll, epoll_fd);
  if (err) {
    fprintf(stderr, "avideo-server: cannot watch MHD's epoll fd: %s\n",
            uv_strerror(err));
    MHD_stop_daemon(http->daemon);
    http->daemon = NULL;
    return false;
  }
  uv_timer_init(loop, &http->timer);
  http->poll.data = http;
  http->timer.data = http;
  uv_poll_start(&http->poll, UV_READABLE, av_http_poll_cb);
  av_http_arm(http);
  http->quiet = true;
  return true;
}

void av_http_kick(struct av_http *http)
{
  if (http->running)
    http->kicked = true; /* av_http_run arms the timer on its way out */
  else
    uv_timer_start(&http->timer, av_http_timer_cb, 0, 0);
}

void av_http_close(struct av_http *http)
{
  if (http->daemon == NULL)
    return;
  /* Connections resumed for shutdown get their last handler call here. */
  MHD_run(http->daemon);
  /* Out of libuv's epoll set before MHD closes the fd. */
  uv_close((uv_handle_t *)&http->poll, NULL);
  uv_close((uv_handle_t *)&http->timer, NULL);
  MHD_stop_daemon(http->daemon);
  http->daemon = NULL;
}
