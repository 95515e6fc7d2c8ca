-- tests/lib/certs.lua: a throwaway PKI for TLS tests, made with openssl(1):
-- a CA, a server certificate for 127.0.0.1/localhost, a client certificate
-- it signed, and a client certificate signed by another CA (not trusted).
local certs = {}

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

-- certs.make(dir) -> { ca, server_cert, server_key, client_cert, client_key,
-- other_cert, other_key } (paths), or raises with openssl's complaint.
function certs.make(dir)
  local script = [[
set -e
cd "$1"
ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.crt -days 2 -subj "/CN=mcp test CA"
openssl req -x509 $ec -keyout other-ca.key -out other-ca.crt -days 2 -subj "/CN=other CA"
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > server.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl req $ec -keyout server.key -out server.csr -subj "/CN=localhost"
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
  -days 2 -extfile server.ext
openssl req $ec -keyout client.key -out client.csr -subj "/O=mcp/CN=operator"
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt \
  -days 2 -extfile client.ext
openssl req $ec -keyout other.key -out other.csr -subj "/CN=intruder"
openssl x509 -req -in other.csr -CA other-ca.crt -CAkey other-ca.key -CAcreateserial \
  -out other.crt -days 2 -extfile client.ext
]]
  local f = assert(io.open(dir .. "/mk.sh", "w"))
  f:write(script)
  f:close()
  if not sh(string.format("sh '%s/mk.sh' '%s' > '%s/openssl.log' 2>&1", dir, dir, dir)) then
    local l = io.open(dir .. "/openssl.log")
    error("openssl failed: " .. (l and l:read("*a") or "?"))
  end
  return { ca = dir .. "/ca.crt", server_cert = dir .. "/server.crt",
    server_key = dir .. "/server.key", client_cert = dir .. "/client.crt",
    client_key = dir .. "/client.key", other_cert = dir .. "/other.crt",
    other_key = dir .. "/other.key" }
end

return certs
