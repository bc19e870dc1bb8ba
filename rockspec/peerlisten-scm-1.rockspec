rockspec_format = "3.0"
package = "peerlisten"
version = "scm-1"
-- The development rockspec, for a checkout: `luarocks make` builds the
-- working tree and ignores `source`. Releases have their own rockspec
-- (peerlisten-X.Y.Z-1.rockspec) pinned to a tag.
source = {
  url = "git+https://github.com/peerlisten/peerlisten.git",
  branch = "main",
}
description = {
  summary = "etcd's peer listeners (configurePeerListeners) for Lua 5.4: TCP, unix and TLS listeners with etcd's checks",
  detailed = [[
peerlisten reproduces etcd's configurePeerListeners in Lua 5.4: plain and TLS
(OpenSSL 3) listeners on TCP and unix sockets driven by libuv, etcd's TLS peer
checks, self-signed certificates, configuration loading and etcd's warnings.
]],
  license = "Apache-2.0",
}
dependencies = {
  "lua >= 5.4, < 5.5",
  "lyaml",   -- etcd YAML config files (Debian: lua-yaml)
  "luasocket",   -- DNS look-ups of certificate names in the cluster checks (Debian: lua-socket)
}
external_dependencies = {
  OPENSSL = { header = "openssl/ssl.h", library = "ssl" },
  LIBUV = { header = "uv.h", library = "uv" },
}
build = {
  type = "builtin",
  modules = {
    ["peerlisten.core"] = {
      sources = {
        "csrc/cert.c",
        "csrc/conn.c",
        "csrc/core.c",
        "csrc/dial.c",
        "csrc/errors.c",
        "csrc/files.c",
        "csrc/listen.c",
        "csrc/listener.c",
        "csrc/signal.c",
        "csrc/sock.c",
        "csrc/test_hooks.c",
        "csrc/tls_cache.c",
        "csrc/tls_ciphers.c",
        "csrc/tls_client.c",
        "csrc/tls_files.c",
        "csrc/tls_policy.c",
        "csrc/tls_report.c",
        "csrc/tls_stream.c",
        "csrc/tls_verify.c",
        "csrc/x509.c",
      },
      defines = { "_XOPEN_SOURCE=700", "_DEFAULT_SOURCE" },
      incdirs = { "csrc", "$(OPENSSL_INCDIR)", "$(LIBUV_INCDIR)" },
      libdirs = { "$(OPENSSL_LIBDIR)", "$(LIBUV_LIBDIR)" },
      libraries = { "ssl", "crypto", "uv" },
    },
    ["peerlisten"] = "lua/peerlisten/init.lua",
    ["peerlisten.cert"] = "lua/peerlisten/cert.lua",
    ["peerlisten.check"] = "lua/peerlisten/check.lua",
    ["peerlisten.check_cluster"] = "lua/peerlisten/check_cluster.lua",
    ["peerlisten.cli"] = "lua/peerlisten/cli.lua",
    ["peerlisten.cli_args"] = "lua/peerlisten/cli_args.lua",
    ["peerlisten.cli_cluster"] = "lua/peerlisten/cli_cluster.lua",
    ["peerlisten.cli_commands"] = "lua/peerlisten/cli_commands.lua",
    ["peerlisten.cluster"] = "lua/peerlisten/cluster.lua",
    ["peerlisten.cluster_check"] = "lua/peerlisten/cluster_check.lua",
    ["peerlisten.cluster_description"] = "lua/peerlisten/cluster_description.lua",
    ["peerlisten.cluster_files"] = "lua/peerlisten/cluster_files.lua",
    ["peerlisten.config"] = "lua/peerlisten/config.lua",
    ["peerlisten.config_flags"] = "lua/peerlisten/config_flags.lua",
    ["peerlisten.config_options"] = "lua/peerlisten/config_options.lua",
    ["peerlisten.dial"] = "lua/peerlisten/dial.lua",
    ["peerlisten.etcd_versions"] = "lua/peerlisten/etcd_versions.lua",
    ["peerlisten.etcd_yaml"] = "lua/peerlisten/etcd_yaml.lua",
    ["peerlisten.log"] = "lua/peerlisten/log.lua",
    ["peerlisten.optional"] = "lua/peerlisten/optional.lua",
    ["peerlisten.peers"] = "lua/peerlisten/peers.lua",
    ["peerlisten.probe"] = "lua/peerlisten/probe.lua",
    ["peerlisten.responder"] = "lua/peerlisten/responder.lua",
    ["peerlisten.startup"] = "lua/peerlisten/startup.lua",
    ["peerlisten.url"] = "lua/peerlisten/url.lua",
  },
  install = {
    bin = { peerlisten = "bin/peerlisten" },
  },
}
test = {
  type = "busted",
}
