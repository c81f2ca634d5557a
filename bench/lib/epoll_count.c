/*
 * epoll_count.so: counts a process's epoll_ctl calls, for the client-cost
 * counters of bench/run (see bench/README.md and bench/lib/counters.py).
 *
 *   LD_PRELOAD=epoll_count.so BENCH_EPOLL_COUNTS=FILE program ...
 *
 * Every epoll_ctl call goes through to libc's and is counted by operation,
 * and a failed one by errno. When the process exits normally it appends one
 * line to FILE:
 *
 *   pid=P add=A mod=M del=D fail.ERRNO=K ...
 *
 * (ERRNO a number). Unlike strace, it does not stop the process at each
 * system call, so the client runs at its own speed; that matters, because
 * how often libcurl asks to stop and start watching a socket depends on
 * whether a response is already there when it looks.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#define MAX_ERRNO 256

static unsigned long ops[4]; /* by EPOLL_CTL_ADD (1), _DEL (2), _MOD (3) */
static unsigned long failures[MAX_ERRNO];
static int (*real_epoll_ctl)(int, int, int, struct epoll_event *);

__attribute__((visibility("default"))) int epoll_ctl(int epfd, int op, int fd,
                                                     struct epoll_event *event) {
  int (*real)(int, int, int, struct epoll_event *) = __atomic_load_n(&real_epoll_ctl, __ATOMIC_ACQUIRE);
  if (!real) {
    real = (int (*)(int, int, int, struct epoll_event *))dlsym(RTLD_NEXT, "epoll_ctl");
    if (!real) {
      errno = ENOSYS;
      return -1;
    }
    __atomic_store_n(&real_epoll_ctl, real, __ATOMIC_RELEASE);
  }
  int rc = real(epfd, op, fd, event);
  int err = errno;
  __atomic_fetch_add(&ops[op & 3], 1, __ATOMIC_RELAXED);
  if (rc < 0) __atomic_fetch_add(&failures[err >= 0 && err < MAX_ERRNO ? err : 0], 1, __ATOMIC_RELAXED);
  errno = err;
  return rc;
}

__attribute__((destructor)) static void epoll_count_report(void) {
  const char *path = getenv("BENCH_EPOLL_COUNTS");
  if (!path || !*path) return;
  char line[4096];
  int len = snprintf(line, sizeof line, "pid=%ld add=%lu mod=%lu del=%lu", (long)getpid(),
                     ops[EPOLL_CTL_ADD], ops[EPOLL_CTL_MOD], ops[EPOLL_CTL_DEL]);
  for (int e = 0; e < MAX_ERRNO && len > 0 && (size_t)len < sizeof line - 64; e++)
    if (failures[e]) len += snprintf(line + len, sizeof line - (size_t)len, " fail.%d=%lu", e, failures[e]);
  if (len <= 0 || (size_t)len >= sizeof line - 1) return;
  line[len++] = '\n';
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;
  ssize_t written = write(fd, line, (size_t)len);
  (void)written;
  close(fd);
}
