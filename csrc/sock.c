/*
** sock.c: socket addresses and socket files, shared by listener.c and
** dial.c: Go-style address text, binding a TCP socket, and the unix socket
** files a listener creates and removes, always relative to the directory
** so that a writer of that directory cannot redirect the removal.
*/
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include "peerlisten.h"

const char *const pl_scheme_names[] = {"http", "https", "unix", "unixs", NULL};

void pl_fmt_hostport (char *out, size_t len, const char *host, int port) {
  if (strchr(host, ':')) snprintf(out, len, "[%s]:%d", host, port);
  else snprintf(out, len, "%s:%d", host, port);
}

int pl_sockaddr_ip (const char *ip, int port, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof(*ss));
  if (uv_ip4_addr(ip, port, (struct sockaddr_in *)ss) == 0) return 0;
  if (uv_ip6_addr(ip, port, (struct sockaddr_in6 *)ss) == 0 && strchr(ip, ':')) return 0;
  memset(ss, 0, sizeof(*ss));
  return UV_EINVAL;
}

void pl_sockaddr_name (const struct sockaddr_storage *ss, char *ip, size_t iplen, int *port) {
  if (ss->ss_family == AF_INET6) {
    uv_ip6_name((const struct sockaddr_in6 *)ss, ip, iplen);
    if (port) *port = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
  }
  else {
    uv_ip4_name((const struct sockaddr_in *)ss, ip, iplen);
    if (port) *port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
  }
}

/* ---- TCP socket options ---- */

/* TCP_NODELAY and keep-alive (30 s idle, probes every 1 s, 10 of them: what
** uv_tcp_keepalive sets) for accepted sockets.  Linux copies them from the
** listening socket into every accepted one; set there, they cost no system
** calls per connection.  The first accepted socket is checked once. */
#define KA_INTVL 1
#define KA_CNT 10

int pl_tcp_sockopts_set (int fd) {
  int one = 1, idle = PL_KEEPALIVE_IDLE, intvl = KA_INTVL, cnt = KA_CNT;
  return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0 &&
         setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) == 0 &&
         setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) == 0 &&
         setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) == 0 &&
         setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt)) == 0;
}

int pl_tcp_sockopts_inherited (uv_stream_t *c) {
  uv_os_fd_t fd;
  int v[4] = {0, 0, 0, 0};
  socklen_t n = sizeof(int);
  if (uv_fileno((uv_handle_t *)c, &fd) != 0) return 0;
  if (getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v[0], &n) != 0 || !v[0]) return 0;
  n = sizeof(int);
  if (getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v[1], &n) != 0 || !v[1]) return 0;
  n = sizeof(int);
  if (getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v[2], &n) != 0 || v[2] != PL_KEEPALIVE_IDLE) return 0;
  n = sizeof(int);
  if (getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v[3], &n) != 0 || v[3] != KA_CNT) return 0;
  return 1;
}

/* ---- unix socket files ---- */

/* Opens the directory of path and points *base at its last component;
** -1 when the directory cannot be opened. */
static int open_parent (const char *path, const char **base) {
  char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
  const char *slash = strrchr(path, '/');
  size_t n;
  if (slash == NULL) {
    *base = path;
    return open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  }
  n = slash == path ? 1 : (size_t)(slash - path);
  if (n >= sizeof(dir)) return -1;
  memcpy(dir, path, n);
  dir[n] = '\0';
  *base = slash + 1;
  return open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* Is a process listening on the socket base in directory dfd? */
static int socket_live (int dfd, const char *base, const char *path) {
  struct sockaddr_un sa;
  int fd, live = 0;
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  /* through the directory we hold, when the name fits */
  if (snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/%s", dfd, base)
      >= (int)sizeof(sa.sun_path))
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    live = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno != ECONNREFUSED;
    close(fd);
  }
  return live;
}

/* Makes room for a new socket at path: nothing there is fine; a socket
** nobody listens on (left by a dead process) is removed; anything else is
** refused.  The entry removed is the one inspected: it is looked at again
** right before unlinkat, relative to the directory opened first.  What is
** left: a writer of the directory can still swap the entry between that
** second look and unlinkat (Linux has no unlink-if-inode), so do not put
** unix peer sockets in directories that untrusted users can write.
** Returns 0, or pushes a fail triple and returns 3. */
int pl_unix_clear_stale (lua_State *L, const char *path) {
  struct stat st, again;
  const char *base;
  int dfd = open_parent(path, &base), r = 0;
  if (dfd < 0) return 0;   /* bind reports the missing directory */
  if (base[0] == '\0' || fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    close(dfd);
    return 0;
  }
  if (!S_ISSOCK(st.st_mode))
    r = pl_fail(L, "EEXIST", "listen unix %s: bind: file exists and is not a socket "
                "(refusing to remove it)", path);
  else if (socket_live(dfd, base, path))
    r = pl_fail(L, "EADDRINUSE", "listen unix %s: bind: address already in use", path);
  else if (fstatat(dfd, base, &again, AT_SYMLINK_NOFOLLOW) != 0) {
    /* gone meanwhile: nothing to remove */
  }
  else if (again.st_dev != st.st_dev || again.st_ino != st.st_ino || !S_ISSOCK(again.st_mode))
    r = pl_fail(L, "EEXIST", "listen unix %s: bind: file changed while checking it "
                "(refusing to remove it)", path);
  else if (unlinkat(dfd, base, 0) != 0 && errno != ENOENT)
    r = pl_syserrorf(L, errno, "remove %s", path);
  close(dfd);
  return r;
}

int pl_unix_identify (const char *path, dev_t *dev, ino_t *ino) {
  struct stat st;
  const char *base;
  int dfd = open_parent(path, &base), ok;
  if (dfd < 0) return 0;
  ok = fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode);
  if (ok) { *dev = st.st_dev; *ino = st.st_ino; }
  close(dfd);
  return ok;
}

void pl_unix_remove_ours (const char *path, dev_t dev, ino_t ino) {
  struct stat st;
  const char *base;
  int dfd = open_parent(path, &base);
  if (dfd < 0) return;
  if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode) &&
      st.st_dev == dev && st.st_ino == ino)
    unlinkat(dfd, base, 0);
  close(dfd);
}
