/* stamp FILE: as its first action reads CLOCK_REALTIME and writes it, in ns since the epoch,
   to FILE (or stdout). The static build of dispatch-latency's probe (see build.rs): no dynamic
   loader and no language runtime start before the clock is read, so "process started" is as
   close to the exec as a process can tell. */
#include <stdio.h>
#include <time.h>

int main(int argc, char **argv) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  FILE *f = argc > 1 ? fopen(argv[1], "w") : stdout;
  if (f == NULL) {
    perror("stamp");
    return 1;
  }
  fprintf(f, "%lld\n", (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
  return fclose(f) == 0 ? 0 : 1;
}
