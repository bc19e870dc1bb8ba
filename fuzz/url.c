/* fuzz/url.c: etcd's URL parser (lua/peerlisten/url.lua), one URL and
** the input split at commas as a URL list. */
#define FUZZ_LUA FZ_PRELUDE \
  "local url = require 'peerlisten.url'\n" \
  "local T = {}\n" \
  "function T.init() end\n" \
  "function T.run(data)\n" \
  "  local u = expect('parse', url.parse(data))\n" \
  "  if u and type(u) ~= 'table' then error('parse: not a table') end\n" \
  "  local list = {}\n" \
  "  for s in (data .. ','):gmatch('([^,]*),') do list[#list + 1] = s end\n" \
  "  expect('parse_list', url.parse_list(list))\n" \
  "  url.is_ip(data)\n" \
  "end\n" \
  "return T\n"
#include "fuzz.h"
