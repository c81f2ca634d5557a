/*
 * launch: run one benchmark client pinned to a core and report its rusage.
 *
 *   launch CORE OUTFILE PROGRAM [ARG...]
 *
 * Forks, pins the child to CORE, execs PROGRAM, waits for it with wait4 and
 * writes one line to OUTFILE:
 *
 *   user_us sys_us maxrss_kib wall_us exit_code
 *
 * (exit_code is -SIGNAL when the client was killed), then exits with the
 * client's code. SIGTERM sent to the process group ends the client only:
 * this program ignores it, so it can still report. The harness cannot fork the clients itself: Linux carries
 * a process's peak RSS across exec, so a child forked from the Python
 * harness would report at least the harness's own RSS. Forked from this
 * small program, the client's peak RSS is its own.
 */
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long usec(struct timeval tv) { return tv.tv_sec * 1000000LL + tv.tv_usec; }

static long long now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s CORE OUTFILE PROGRAM [ARG...]\n", argv[0]);
    return 125;
  }
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  CPU_SET(atoi(argv[1]), &cpus);
  FILE *out = fopen(argv[2], "w");
  if (!out) {
    perror(argv[2]);
    return 125;
  }
  signal(SIGTERM, SIG_IGN);
  long long start = now_us();
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    return 125;
  }
  if (pid == 0) {
    fclose(out);
    signal(SIGTERM, SIG_DFL);
    if (sched_setaffinity(0, sizeof cpus, &cpus) != 0) {
      perror("sched_setaffinity");
      _exit(126);
    }
    execvp(argv[3], argv + 3);
    perror(argv[3]);
    _exit(127);
  }
  int status;
  struct rusage ru;
  if (wait4(pid, &status, 0, &ru) < 0) {
    perror("wait4");
    return 125;
  }
  long long wall = now_us() - start;
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  fprintf(out, "%lld %lld %ld %lld %d\n", usec(ru.ru_utime), usec(ru.ru_stime), ru.ru_maxrss,
          wall, code);
  fclose(out);
  return code >= 0 ? code : 128 - code;
}
