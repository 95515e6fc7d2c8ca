-- tests/helper.lua: loaded by busted before any spec (tests/run.sh passes
-- --helper). Under `make check` the ASan runtime is preloaded into busted's
-- luajit so that the sanitized C module can load; programs the specs start
-- (curl, podman, the test environment's scripts) must not inherit it: an
-- uninstrumented curl with ASan preloaded hangs here. The runtime stays
-- loaded in this process; only the environment of children loses it.
if os.getenv("LD_PRELOAD") then
  local ffi = require("ffi")
  ffi.cdef("int unsetenv(const char *name);")
  ffi.C.unsetenv("LD_PRELOAD")
end
