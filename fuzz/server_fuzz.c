/* libFuzzer target: avideo-server's request handling (routes.c: path
 * matching, ?n= parsing, PATCH bodies, store merges, replies), reached the
 * way the server reaches it: libmicrohttpd parses a request and calls
 * av_routes_access. No network: each input goes through one end of a
 * socketpair handed to MHD with MHD_add_connection; the daemon has no
 * listening socket and is run by hand. The time scale is 0, so every
 * answer comes at once and no uv loop is needed.
 *
 * Input: byte 0 picks the method (low 3 bits; 7 = the rest is a raw byte
 * stream), bit 3 a chunked body, bit 4 the request sent twice
 * (keep-alive). Then the request target (path and query) up to '\n', then
 * the body. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server.h"

/* Few videos: the store is rebuilt after every PATCH, so cheap matters;
 * the seed's first ids (frame, ...) are in the seed corpus. */
#define AV_FUZZ_VIDEOS 30
#define AV_FUZZ_SEED 20241203
/* MHD runs per input: a request is answered in two or three, and an input
 * may pipeline one request every 16 bytes or so, so the bound grows with
 * the input (a fixed 64 took long pipelines for hangs). */
#define AV_FUZZ_ROUNDS 64
#define AV_FUZZ_ROUNDS_FOR(len) (AV_FUZZ_ROUNDS + (len) / 4)

static struct av_server server;
static struct MHD_Daemon *daemon_;

static void av_fuzz_log(void *cls, const char *format, va_list args)
{
  (void)cls, (void)format, (void)args; /* MHD's complaints are expected */
}

static void av_fuzz_store(void)
{
  if (!av_store_init(&server.store, AV_FUZZ_VIDEOS, AV_FUZZ_SEED) ||
      !av_replies_init(&server.replies, AV_FUZZ_VIDEOS))
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc, (void)argv;
  server.options.time_scale = 0;
  server.options.videos = AV_FUZZ_VIDEOS;
  /* Time scale 0: every gate lets a lone request through at once. */
  av_gate_init(&server.gates.list, UINT_MAX, 0.05, 0, 0);
  av_gate_init(&server.gates.patch, UINT_MAX, 0.05, 0, 0);
  av_gate_init(&server.gates.video, 10, 0.2, 0.1, 0);
  av_gate_init(&server.gates.transcript, 20, 0.1, 0.1, 0);
  av_fuzz_store();
  /* The options of http.c that shape what reaches the handler. */
  daemon_ = MHD_start_daemon(
    MHD_USE_NO_LISTEN_SOCKET | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
      MHD_USE_TURBO,
    0, NULL, NULL, av_routes_access, &server,
    MHD_OPTION_EXTERNAL_LOGGER, av_fuzz_log, NULL,
    MHD_OPTION_CONNECTION_TIMEOUT, 0u,
    MHD_OPTION_CONNECTION_MEMORY_LIMIT, AV_HEADER_LIMIT,
    MHD_OPTION_NOTIFY_COMPLETED, av_routes_completed, &server,
    MHD_OPTION_STRICT_FOR_CLIENT, 1,
    MHD_OPTION_END);
  if (daemon_ == NULL)
    abort();
  return 0;
}

static const char *const av_fuzz_methods[] = {
  "GET", "PATCH", "HEAD", "POST", "PUT", "DELETE", "OPTIONS",
};

/* Build one request from the structured input. */
static void av_fuzz_text(struct av_buf *out, const char *text)
{
  av_buf_add(out, text, strlen(text));
}

static void av_fuzz_request(struct av_buf *out, uint8_t mode,
                            const char *target, size_t target_len,
                            const char *body, size_t body_len)
{
  char line[64];
  av_fuzz_text(out, av_fuzz_methods[mode & 7]);
  av_fuzz_text(out, " ");
  av_buf_add(out, target, target_len);
  av_fuzz_text(out, " HTTP/1.1\r\nHost: fuzz\r\n");
  if (mode & 8) {
    /* Two chunks, so a body arrives in more than one piece. */
    size_t half = body_len / 2;
    av_fuzz_text(out, "Transfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 2; i++) {
      const char *part = i ? body + half : body;
      size_t len = i ? body_len - half : half;
      if (len == 0)
        continue;
      snprintf(line, sizeof line, "%zx\r\n", len);
      av_fuzz_text(out, line);
      av_buf_add(out, part, len);
      av_fuzz_text(out, "\r\n");
    }
    av_fuzz_text(out, "0\r\n\r\n");
  } else {
    snprintf(line, sizeof line, "Content-Length: %zu\r\n\r\n", body_len);
    av_fuzz_text(out, line);
    av_buf_add(out, body, body_len);
  }
}

/* Read what the server sent; true at end of stream. */
static bool av_fuzz_drain(int fd)
{
  char sink[65536];
  for (;;) {
    ssize_t got = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
    if (got == 0)
      return true;
    if (got < 0)
      return false;
  }
}

static unsigned av_fuzz_connections(void)
{
  return MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_CURRENT_CONNECTIONS)
    ->num_connections;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size == 0)
    return 0;
  uint8_t mode = data[0];
  const char *rest = (const char *)data + 1;
  size_t rest_len = size - 1;
  struct av_buf stream = { 0 };

  if ((mode & 7) == 7) {
    av_buf_add(&stream, rest, rest_len);
  } else {
    const char *nl = memchr(rest, '\n', rest_len);
    size_t target_len = nl ? (size_t)(nl - rest) : rest_len;
    const char *body = nl ? nl + 1 : rest + rest_len;
    size_t body_len = (size_t)(rest + rest_len - body);
    for (int i = 0; i < ((mode & 16) ? 2 : 1); i++)
      av_fuzz_request(&stream, mode, rest, target_len, body, body_len);
  }

  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
    abort();
  fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK);
  /* The whole request fits the socket buffer: send it, then the end. */
  if (stream.len && send(fds[0], stream.data, stream.len, 0) != (ssize_t)stream.len)
    abort();
  shutdown(fds[0], SHUT_WR);
  av_buf_free(&stream);

  struct sockaddr_in peer = { .sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  if (MHD_add_connection(daemon_, fds[1], (struct sockaddr *)&peer,
                         sizeof peer) != MHD_YES)
    abort();
  bool ended = false;
  size_t rounds = AV_FUZZ_ROUNDS_FOR(size);
  for (size_t i = 0; i < rounds && !ended; i++) {
    MHD_run(daemon_);
    ended = av_fuzz_drain(fds[0]) && av_fuzz_connections() == 0;
  }
  /* Every request is answered at once and the client has said all it will
   * say: a connection still open is a hang in the server. */
  if (!ended) {
    fprintf(stderr, "server_fuzz: connection still open after %zu rounds\n", rounds);
    abort();
  }
  close(fds[0]);
  /* Closed connections leave no request state behind. */
  if (server.live != NULL) {
    fprintf(stderr, "server_fuzz: a request outlived its connection\n");
    abort();
  }

  /* PATCHes grow the store: start each input from the same data. */
  if ((mode & 7) == 1 || ((mode & 7) == 7 && memmem(data, size, "PATCH", 5))) {
    av_server_free(&server);
    av_fuzz_store();
  }
  return 0;
}
