/* One running emulator: its data, gates, HTTP daemon and signal handles,
 * all in one struct on the stack of main. */
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "server.h"

/* The overload model of docs/server.md ("Overload"): min delay (s), factor
 * (s); the capacities are options (main.c has the talk's). */
#define AV_VIDEO_MIN 0.2
#define AV_TRANSCRIPT_MIN 0.1
#define AV_OVERLOAD_FACTOR 0.1
/* The list and PATCH only wait, with no capacity. */
#define AV_FIXED_DELAY 0.05

/* File descriptors kept for stdio, MHD's epoll and eventfd, the loop. */
#define AV_SPARE_FDS 32

static void av_server_stop(struct av_server *server)
{
  if (server->stopping)
    return;
  av_request_abort_all(server);
  av_http_close(&server->http);
  /* The signal handles stay: a second signal during the shutdown must not
   * kill the process. Unreferenced, they let the loop end. */
}

static void av_server_signal_cb(uv_signal_t *handle, int signum)
{
  av_server_stop(handle->data);
}

/* As many connections as file descriptors allow: raise the soft limit to
 * the hard one, as servers do. */
static unsigned av_server_connection_limit(void)
{
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0)
    return 1000;
  if (limit.rlim_cur < limit.rlim_max) {
    rlim_t wanted = limit.rlim_max < 65536 ? limit.rlim_max : 65536;
    if (wanted > limit.rlim_cur) {
      struct rlimit raised = { wanted, limit.rlim_max };
      if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
        limit.rlim_cur = wanted;
    }
  }
  if (limit.rlim_cur <= 2 * AV_SPARE_FDS)
    return AV_SPARE_FDS;
  return limit.rlim_cur - AV_SPARE_FDS > UINT_MAX ? UINT_MAX
                                                   : (unsigned)(limit.rlim_cur - AV_SPARE_FDS);
}

static bool av_server_resolve(const struct av_options *options,
                              struct sockaddr_storage *addr)
{
  struct addrinfo hints = { .ai_family = AF_UNSPEC,
                            .ai_socktype = SOCK_STREAM,
                            .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
  struct addrinfo *found = NULL;
  char port[8];
  snprintf(port, sizeof port, "%u", options->port);
  int err = getaddrinfo(options->host, port, &hints, &found);
  if (err != 0) {
    fprintf(stderr, "avideo-server: cannot resolve --host %s: %s\n",
            options->host, gai_strerror(err));
    return false;
  }
  memcpy(addr, found->ai_addr, found->ai_addrlen);
  freeaddrinfo(found);
  return true;
}

static void av_server_gates(struct av_gates *gates,
                            const struct av_options *options)
{
  double scale = options->time_scale;
  av_gate_init(&gates->list, UINT_MAX, AV_FIXED_DELAY, 0, scale);
  av_gate_init(&gates->patch, UINT_MAX, AV_FIXED_DELAY, 0, scale);
  av_gate_init(&gates->video, options->video_capacity, AV_VIDEO_MIN,
               AV_OVERLOAD_FACTOR, scale);
  av_gate_init(&gates->transcript, options->transcript_capacity, AV_TRANSCRIPT_MIN,
               AV_OVERLOAD_FACTOR, scale);
}

bool av_server_start(struct av_server *server, uv_loop_t *loop,
                     const struct av_options *options)
{
  struct sockaddr_storage addr;

  *server = (struct av_server){ .loop = loop, .options = *options };
  av_server_gates(&server->gates, options);
  av_rate_init(&server->rate, options->rate_n, options->rate_seconds);
  if (!av_server_resolve(options, &addr))
    return false;
  if (!av_store_init(&server->store, options->videos, options->seed) ||
      !av_replies_init(&server->replies, options->videos)) {
    fprintf(stderr, "avideo-server: out of memory building the data\n");
    av_server_free(server);
    return false;
  }

  struct av_http_config config = {
    .addr = (const struct sockaddr *)&addr,
    .keepalive_timeout = options->keepalive_timeout,
    .connection_limit = av_server_connection_limit(),
    .access = av_routes_access,
    .completed = av_routes_completed,
    .connection = av_stats_connection,
    .cls = server,
  };
  if (!av_http_start(&server->http, loop, &config)) {
    av_server_free(server);
    return false;
  }

  uv_signal_init(loop, &server->sigint);
  uv_signal_init(loop, &server->sigterm);
  server->sigint.data = server->sigterm.data = server;
  uv_signal_start(&server->sigint, av_server_signal_cb, SIGINT);
  uv_signal_start(&server->sigterm, av_server_signal_cb, SIGTERM);
  uv_unref((uv_handle_t *)&server->sigint);
  uv_unref((uv_handle_t *)&server->sigterm);

  /* The one line scripts wait for; an IPv6 address needs brackets. */
  const char *open = strchr(options->host, ':') ? "[" : "";
  const char *close = *open ? "]" : "";
  printf("avideo-server listening on http://%s%s%s:%u\n", open, options->host,
         close, server->http.port);
  fflush(stdout);
  return true;
}

void av_server_close(struct av_server *server)
{
  uv_close((uv_handle_t *)&server->sigint, NULL);
  uv_close((uv_handle_t *)&server->sigterm, NULL);
}

void av_server_free(struct av_server *server)
{
  av_replies_free(&server->replies);
  av_store_free(&server->store);
}
