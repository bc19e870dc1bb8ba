/*
** files.c: the file primitives the Lua layer needs (stat, mkdir -p, a
** directory probe, atomic writes, the working directory), with Go's
** wording of OS errors and libuv's error names as codes.
*/
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/rand.h>

#include "peerlisten.h"
#include "x509.h"

static int rand_fail (lua_State *L) {
  char buf[256];
  pl_ssl_errstr(buf, sizeof buf);
  ERR_clear_error();
  if (buf[0] == '\0') return pl_fail(L, "ECERT", "cannot generate random number");
  return pl_fail(L, "ECERT", "cannot generate random number: %s", buf);
}

/* Go's os.FileMode string ("drwxr-xr-x") of a stat mode. */
static void cert_modestring (mode_t m, char *out) {
  static const char rwx[] = "rwxrwxrwx";
  int i, n = 0;
  if (S_ISDIR(m)) out[n++] = 'd';
  if (S_ISBLK(m) || S_ISCHR(m)) out[n++] = 'D';
  if (S_ISFIFO(m)) out[n++] = 'p';
  if (S_ISSOCK(m)) out[n++] = 'S';
  if (m & S_ISUID) out[n++] = 'u';
  if (m & S_ISGID) out[n++] = 'g';
  if (S_ISCHR(m)) out[n++] = 'c';
  if (m & S_ISVTX) out[n++] = 't';
  if (n == 0) out[n++] = '-';
  for (i = 0; i < 9; i++)
    out[n++] = (m & (1u << (8 - i))) ? rwx[i] : '-';
  out[n] = '\0';
}

/* core.cert_stat(path) -> { type = "file"|"directory"|"other", mode = perm,
**   mode_string = "drwx------" } | nil, "stat <path>: <reason>", code */
static int cert_stat (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  char ms[24];
  if (stat(path, &st) != 0)
    return pl_os_fail(L, "stat", path, errno);
  lua_createtable(L, 0, 4);
  lua_pushstring(L, S_ISDIR(st.st_mode) ? "directory"
                    : S_ISREG(st.st_mode) ? "file" : "other");
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
  lua_setfield(L, -2, "mode");
  cert_modestring(st.st_mode, ms);
  lua_pushstring(L, ms);
  lua_setfield(L, -2, "mode_string");
  lua_pushinteger(L, (lua_Integer)st.st_size);
  lua_setfield(L, -2, "size");
  return 1;
}

/*
** core.cert_mkdir_all(path, mode) -> true | nil, "mkdir <p>: <reason>", code
** Creates path and its missing parents with mode (umask applies).  Like Go's
** os.MkdirAll, an existing non-directory on the way is "not a directory"
** naming that entry.
*/
static int cert_mkdir_all (lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  mode_t mode = (mode_t)luaL_optinteger(L, 2, 0700);
  char buf[PATH_MAX];
  struct stat st;
  char *p;
  luaL_argcheck(L, len > 0, 1, "empty path");
  if (stat(path, &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      lua_pushboolean(L, 1);
      return 1;
    }
    return pl_os_fail(L, "mkdir", path, ENOTDIR);
  }
  if (len >= sizeof buf)
    return pl_os_fail(L, "mkdir", path, ENAMETOOLONG);
  memcpy(buf, path, len + 1);
  for (p = buf + 1; ; p++) {
    if (*p == '/' || *p == '\0') {
      char c = *p;
      *p = '\0';
      if (p[-1] != '/' && mkdir(buf, mode) != 0) {
        int err = errno;
        if (err != EEXIST)
          return pl_os_fail(L, "mkdir", buf, err);
        if (stat(buf, &st) != 0)
          return pl_os_fail(L, "stat", buf, errno);
        if (!S_ISDIR(st.st_mode))
          return pl_os_fail(L, "mkdir", buf, ENOTDIR);
      }
      *p = c;
      if (c == '\0') break;
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.cert_probe_dir(dir) -> true | nil, msg, code: creates and removes
** <dir>/.touch (mode 0600), etcd's writability test.  The probe is created
** exclusively: another writer of dir may have planted .touch as a symlink,
** which truncating would follow.  An existing .touch (a leftover, or such a
** link) is unlinked, which never touches a link's target, and tried once more. */
static int cert_probe_dir (lua_State *L) {
  const char *dir = luaL_checkstring(L, 1);
  const char *path = lua_pushfstring(L, "%s/.touch", dir);
  int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  int fd = open(path, flags, 0600);
  if (fd < 0 && errno == EEXIST && unlink(path) == 0)
    fd = open(path, flags, 0600);
  if (fd < 0)
    return pl_os_fail(L, "open", path, errno);
  close(fd);
  if (unlink(path) != 0)
    return pl_os_fail(L, "remove", path, errno);
  lua_pushboolean(L, 1);
  return 1;
}


/*
** core.write_file_atomic(path, data [, mode = 0600]) -> true | nil, msg, code
** Writes data to a new temporary file beside path (created with mode, so a
** key is never readable by others, not even briefly), fsyncs it, renames it
** over path and fsyncs the directory.  On failure the temporary file is
** removed and path is untouched.
*/
static int write_file_atomic (lua_State *L) {
  size_t len, plen, off = 0;
  const char *path = luaL_checklstring(L, 1, &plen);
  const char *data = luaL_checklstring(L, 2, &len);
  mode_t mode = (mode_t)luaL_optinteger(L, 3, 0600);
  char dir[PATH_MAX], tmp[PATH_MAX];
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  int fd = -1, tries, err, dfd;
  if (plen + 32 >= sizeof tmp)
    return pl_os_fail(L, "open", path, ENAMETOOLONG);
  if (slash == NULL) strcpy(dir, ".");
  else if (slash == path) strcpy(dir, "/");
  else {
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
  }
  for (tries = 0; tries < 16 && fd < 0; tries++) {
    unsigned char rnd[6];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
      return rand_fail(L);
    if (snprintf(tmp, sizeof tmp, "%s/.%s.tmp-%02x%02x%02x%02x%02x%02x",
                 dir, base, rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5])
        >= (int)sizeof tmp)
      return pl_os_fail(L, "open", path, ENAMETOOLONG);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0 && errno != EEXIST)
      return pl_os_fail(L, "open", path, errno);
  }
  if (fd < 0)
    return pl_os_fail(L, "open", path, EEXIST);
  while (off < len) {
    ssize_t n = write(fd, data + off, len - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      goto fail_write;
    }
    off += (size_t)n;
  }
  if (fsync(fd) != 0) {
    err = errno;
    goto fail_write;
  }
  if (close(fd) != 0) {
    err = errno;
    fd = -1;
    goto fail_write;
  }
  if (rename(tmp, path) != 0) {
    err = errno;
    unlink(tmp);
    return pl_os_fail(L, "rename", path, err);
  }
  dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)fsync(dfd);   /* the rename is done; a failed flush changes nothing */
    close(dfd);
  }
  lua_pushboolean(L, 1);
  return 1;
fail_write:
  if (fd >= 0) close(fd);
  unlink(tmp);
  return pl_os_fail(L, "write", path, err);
}

/* core.cert_cwd() -> current directory | nil, msg, code */
static int cert_cwd (lua_State *L) {
  char buf[PATH_MAX];
  if (getcwd(buf, sizeof buf) == NULL)
    return pl_os_fail(L, "getwd", ".", errno);
  lua_pushstring(L, buf);
  return 1;
}


static const luaL_Reg file_funcs[] = {
  {"cert_stat", cert_stat},
  {"cert_mkdir_all", cert_mkdir_all},
  {"cert_probe_dir", cert_probe_dir},
  {"cert_cwd", cert_cwd},
  {"write_file_atomic", write_file_atomic},
  {NULL, NULL}
};

/* Adds the file primitives to the module table on top. */
int pl_open_files (lua_State *L) {
  luaL_setfuncs(L, file_funcs, 0);
  return 0;
}
