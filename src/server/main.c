/* avideo-server: command line, then the libuv loop until SIGINT/SIGTERM. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

/* Most requests --rate-limit counts. */
#define AV_RATE_MAX 1000000

static void av_main_usage(FILE *out)
{
  fprintf(out,
    "Usage: avideo-server [OPTION]...\n"
    "Emulate a slow video service that degrades under overload.\n"
    "\n"
    "  --host HOST               address to listen on (default 127.0.0.1)\n"
    "  --port PORT               TCP port, 0 picks a free one (default 8000)\n"
    "  --videos N                number of videos, 0..%d (default 1000)\n"
    "  --seed N                  seed of the generated data (default 20241203)\n"
    "  --time-scale X            multiply every delay by X, 0 = no delays\n"
    "                            (default 1.0)\n"
    "  --keepalive-timeout S     close a connection idle for S seconds,\n"
    "                            rounded up to whole seconds, 0 = never\n"
    "                            (default 5)\n"
    "  --video-capacity N        slots of GET /videos/{id}, 1..%d (default 10)\n"
    "  --transcript-capacity N   slots of GET /videos/{id}/transcript, 1..%d\n"
    "                            (default 20)\n"
    "  --rate-limit N/S          at most N requests per S seconds per client\n"
    "                            address (a token bucket, burst N); beyond,\n"
    "                            429 with Retry-After (default none)\n"
    "  --help                    show this help and exit\n"
    "\n"
    "Serves GET /videos/?n=N, GET /videos/{id}, GET /videos/{id}/transcript\n"
    "and PATCH /videos/{id} as compact JSON over HTTP/1.1; GET /stats what\n"
    "it has seen; POST /capacity?video=N&transcript=M changes the capacities.\n"
    "Request bodies are limited to 1 MiB (413 beyond), request line and\n"
    "headers to 16 KiB.\n"
    "When ready, prints \"avideo-server listening on http://HOST:PORT\".\n"
    "SIGINT or SIGTERM stops it.\n",
    AV_VIDEOS_MAX, AV_CAPACITY_MAX, AV_CAPACITY_MAX);
}

enum av_main_kind { AV_OPT_TEXT, AV_OPT_UINT, AV_OPT_SECONDS, AV_OPT_RATE };


struct av_main_option {
  const char *name;
  enum av_main_kind kind;
  unsigned long long max; /* for AV_OPT_UINT */
};

static const struct av_main_option av_main_options[] = {
  { "--host", AV_OPT_TEXT, 0 },
  { "--port", AV_OPT_UINT, 65535 },
  { "--videos", AV_OPT_UINT, AV_VIDEOS_MAX },
  { "--seed", AV_OPT_UINT, UINT64_MAX },
  { "--time-scale", AV_OPT_SECONDS, 0 },
  { "--keepalive-timeout", AV_OPT_SECONDS, 0 },
  { "--video-capacity", AV_OPT_UINT, AV_CAPACITY_MAX },
  { "--transcript-capacity", AV_OPT_UINT, AV_CAPACITY_MAX },
  { "--rate-limit", AV_OPT_RATE, AV_RATE_MAX },
};

static bool av_main_uint(const char *text, unsigned long long max,
                         unsigned long long *out)
{
  char *end;
  if (text[0] < '0' || text[0] > '9')
    return false;
  errno = 0;
  *out = strtoull(text, &end, 10);
  return errno == 0 && *end == '\0' && *out <= max;
}

static bool av_main_seconds(const char *text, double *out)
{
  char *end;
  *out = strtod(text, &end);
  /* A day is more than any sane delay factor or idle timeout. */
  return end != text && *end == '\0' && isfinite(*out) && *out >= 0 &&
         *out <= 86400;
}

/* N/S: N whole in 1..max, S seconds > 0. */
static bool av_main_rate(const char *text, unsigned long long max,
                         unsigned long long *n, double *seconds)
{
  const char *slash = strchr(text, '/');
  char count[32];
  if (slash == NULL || (size_t)(slash - text) >= sizeof count)
    return false;
  memcpy(count, text, (size_t)(slash - text));
  count[slash - text] = '\0';
  return av_main_uint(count, max, n) && *n >= 1 &&
         av_main_seconds(slash + 1, seconds) && *seconds > 0;
}

/* Store one option's value; false with a message when it is bad. */
static bool av_main_set(struct av_options *options,
                        const struct av_main_option *option, const char *value)
{
  unsigned long long number = 0;
  double seconds = 0;
  if ((option->kind == AV_OPT_UINT && !av_main_uint(value, option->max, &number)) ||
      (option->kind == AV_OPT_SECONDS && !av_main_seconds(value, &seconds)) ||
      (option->kind == AV_OPT_TEXT && value[0] == '\0')) {
    fprintf(stderr, "avideo-server: bad value for %s: '%s'\n", option->name,
            value);
    return false;
  }
  if (option->kind == AV_OPT_RATE) {
    if (!av_main_rate(value, option->max, &number, &seconds)) {
      fprintf(stderr,
              "avideo-server: bad value for %s: '%s' (want N/S: N requests, "
              "1..%llu, per S seconds > 0, e.g. 20/1)\n",
              option->name, value, option->max);
      return false;
    }
    options->rate_n = (unsigned)number;
    options->rate_seconds = seconds;
    return true;
  }
  if (strstr(option->name, "capacity") && number == 0) {
    fprintf(stderr, "avideo-server: bad value for %s: '%s' (want 1..%llu)\n",
            option->name, value, option->max);
    return false;
  }
  if (strcmp(option->name, "--host") == 0)
    options->host = value;
  else if (strcmp(option->name, "--port") == 0)
    options->port = (unsigned)number;
  else if (strcmp(option->name, "--videos") == 0)
    options->videos = (size_t)number;
  else if (strcmp(option->name, "--seed") == 0)
    options->seed = number;
  else if (strcmp(option->name, "--time-scale") == 0)
    options->time_scale = seconds;
  else if (strcmp(option->name, "--video-capacity") == 0)
    options->video_capacity = (unsigned)number;
  else if (strcmp(option->name, "--transcript-capacity") == 0)
    options->transcript_capacity = (unsigned)number;
  else
    options->keepalive_timeout = (unsigned)ceil(seconds);
  return true;
}

/* Parse argv; returns -1 to go on, else the exit status. */
static int av_main_parse(int argc, char **argv, struct av_options *options)
{
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      av_main_usage(stdout);
      return 0;
    }
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    const struct av_main_option *option = NULL;
    for (size_t k = 0; k < sizeof av_main_options / sizeof av_main_options[0]; k++)
      if (strlen(av_main_options[k].name) == len &&
          strncmp(av_main_options[k].name, arg, len) == 0)
        option = &av_main_options[k];
    if (option == NULL) {
      fprintf(stderr, "avideo-server: unknown option '%s' (see --help)\n", arg);
      return 2;
    }
    const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
    if (value == NULL) {
      fprintf(stderr, "avideo-server: %s needs a value\n", option->name);
      return 2;
    }
    if (!av_main_set(options, option, value))
      return 2;
  }
  return -1;
}

int main(int argc, char **argv)
{
  struct av_options options = {
    .host = "127.0.0.1",
    .port = 8000,
    .videos = 1000,
    .seed = 20241203,
    .time_scale = 1.0,
    .keepalive_timeout = 5,
    .video_capacity = 10,      /* the talk's */
    .transcript_capacity = 20,
  };
  int status = av_main_parse(argc, argv, &options);
  if (status >= 0)
    return status;

  /* A client gone mid-write must not kill the server (MHD also sends with
   * MSG_NOSIGNAL; this covers stdout closed early too). */
  signal(SIGPIPE, SIG_IGN);

  uv_loop_t loop;
  struct av_server server;
  if (uv_loop_init(&loop) != 0) {
    fprintf(stderr, "avideo-server: cannot create the event loop\n");
    return 1;
  }
  if (!av_server_start(&server, &loop, &options)) {
    uv_run(&loop, UV_RUN_DEFAULT); /* let whatever was opened close */
    uv_loop_close(&loop);
    return 1;
  }
  /* Runs until a signal stopped the server and its last handle closed. */
  uv_run(&loop, UV_RUN_DEFAULT);
  av_server_close(&server);
  uv_run(&loop, UV_RUN_DEFAULT);
  /* Closing the handles restored the default action; stopping already, a
   * repeated signal must not turn the exit 0 into a kill. */
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  av_server_free(&server);
  if (uv_loop_close(&loop) != 0) {
    fprintf(stderr, "avideo-server: handles left open at exit\n");
    return 1;
  }
  return 0;
}
