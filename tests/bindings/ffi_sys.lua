-- tests/bindings/ffi_sys.lua: the few system calls the binding specs need to
-- set up their world (a socket that holds a port, a datagram socket that
-- plays systemd, setenv), through LuaJIT's FFI. Not a spec: required by them.
local ffi = require("ffi")

-- busted reloads this module for each spec file; the C declarations are
-- process-wide, so they are made once.
if not pcall(ffi.typeof, "struct mcp_test_sockaddr_in") then
  ffi.cdef([[
    struct mcp_test_sockaddr_in { uint16_t family; uint16_t port; uint8_t addr[4];
                                  uint8_t zero[8]; };
    struct mcp_test_sockaddr_un { uint16_t family; char path[108]; };
    int socket(int domain, int type, int protocol);
    int bind(int fd, const void *addr, uint32_t len);
    int listen(int fd, int backlog);
    int connect(int fd, const void *addr, uint32_t len);
    int getsockname(int fd, void *addr, uint32_t *len);
    int close(int fd);
    long recv(int fd, void *buf, size_t len, int flags);
    int setenv(const char *name, const char *value, int overwrite);
    int unsetenv(const char *name);
    int getpid(void);
  ]])
end

local C = ffi.C
local AF_UNIX, AF_INET = 1, 2
local SOCK_STREAM, SOCK_DGRAM = 1, 2
local SOCK_NONBLOCK, SOCK_CLOEXEC = 0x800, 0x80000

local sys = {}

local function inet(ip, port)
  local sa = ffi.new("struct mcp_test_sockaddr_in")
  sa.family = AF_INET
  sa.port = bit.rshift(bit.bswap(port), 16)      -- htons on a little-endian host
  local a, b, c, d = ip:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  sa.addr[0], sa.addr[1] = tonumber(a), tonumber(b)
  sa.addr[2], sa.addr[3] = tonumber(c), tonumber(d)
  return sa
end

local function port_of(fd)
  local sa = ffi.new("struct mcp_test_sockaddr_in")
  local len = ffi.new("uint32_t[1]", ffi.sizeof(sa))
  assert(C.getsockname(fd, sa, len) == 0, "getsockname")
  return bit.rshift(bit.bswap(sa.port), 16)
end

-- A TCP socket bound to ip:port (0: any free port) and listening with
-- backlog; returns fd, port.
function sys.listen_tcp(ip, port, backlog)
  local fd = C.socket(AF_INET, SOCK_STREAM + SOCK_CLOEXEC, 0)
  assert(fd >= 0, "socket")
  local sa = inet(ip or "127.0.0.1", port or 0)
  assert(C.bind(fd, sa, ffi.sizeof(sa)) == 0, "bind " .. tostring(ip) .. ":" .. tostring(port))
  assert(C.listen(fd, backlog or 16) == 0, "listen")
  return fd, port_of(fd)
end

-- A port that was free a moment ago.
function sys.free_port()
  local fd = C.socket(AF_INET, SOCK_STREAM + SOCK_CLOEXEC, 0)
  local sa = inet("127.0.0.1", 0)
  assert(C.bind(fd, sa, ffi.sizeof(sa)) == 0, "bind")
  local port = port_of(fd)
  C.close(fd)
  return port
end

-- Starts a non-blocking connect to 127.0.0.1:port; returns the fd.
function sys.connect_nb(port)
  local fd = C.socket(AF_INET, SOCK_STREAM + SOCK_NONBLOCK + SOCK_CLOEXEC, 0)
  local sa = inet("127.0.0.1", port)
  C.connect(fd, sa, ffi.sizeof(sa))
  return fd
end

-- A datagram socket bound to name: "@name" in the abstract namespace, else
-- a path. Returns the fd.
function sys.listen_dgram(name)
  local fd = C.socket(AF_UNIX, SOCK_DGRAM + SOCK_NONBLOCK + SOCK_CLOEXEC, 0)
  assert(fd >= 0, "socket")
  local sa = ffi.new("struct mcp_test_sockaddr_un")
  sa.family = AF_UNIX
  ffi.copy(sa.path, name, #name)
  if name:sub(1, 1) == "@" then
    sa.path[0] = 0
  end
  assert(C.bind(fd, sa, 2 + #name) == 0, "bind " .. name)
  return fd
end

-- Every datagram waiting on fd, without blocking.
function sys.recv_all(fd)
  local out, buf = {}, ffi.new("char[4096]")
  while true do
    local n = C.recv(fd, buf, 4096, 0)
    if n < 0 then
      return out
    end
    out[#out + 1] = ffi.string(buf, n)
  end
end

function sys.close(fd)
  C.close(fd)
end

function sys.setenv(k, v)
  if v == nil then
    C.unsetenv(k)
  else
    C.setenv(k, v, 1)
  end
end

function sys.getpid()
  return C.getpid()
end

function sys.sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return (out:gsub("%s+$", ""))
end

return sys
