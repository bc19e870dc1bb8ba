/*
** swapconnect.c: an LD_PRELOAD shim for listener_spec.  On the first
** connect() to a unix socket whose name ends like $SWAP_TARGET's, it renames
** $SWAP_VICTIM over $SWAP_TARGET first: a writer of the directory swapping
** the entry between our stale-socket check and its removal, on cue.
*/
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

int connect (int fd, const struct sockaddr *sa, socklen_t len) {
  static int (*real) (int, const struct sockaddr *, socklen_t);
  const char *target = getenv("SWAP_TARGET"), *victim = getenv("SWAP_VICTIM");
  if (real == NULL)
    real = (int (*) (int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
  if (target != NULL && victim != NULL && sa != NULL && sa->sa_family == AF_UNIX) {
    const char *p = ((const struct sockaddr_un *)sa)->sun_path;
    const char *b = strrchr(p, '/'), *tb = strrchr(target, '/');
    if (b != NULL && tb != NULL && strcmp(b, tb) == 0) {
      rename(victim, target);
      unsetenv("SWAP_VICTIM");
    }
  }
  return real(fd, sa, len);
}
