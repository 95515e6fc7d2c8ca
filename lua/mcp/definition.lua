-- mcp.definition: what a service definition may say, and what it means.
--
-- validate() turns the table a definition file produced (TOML through the C
-- parser, JSON, or a Lua file returning a table) into the one normalised
-- shape the rest of the agent reads, every default filled in; or into a list
-- of ALL the errors, each naming the file, the field path, the value and
-- what was expected, so an operator fixes a file in one pass.
--
-- container_spec() says what a component means to Podman; render() writes
-- the same spec as `podman run` lines, so the API call the agent makes and
-- the command an operator is shown cannot disagree.
--
-- Pure: no I/O, no C modules. The loader reads files; the executor acts.
local duration = require("mcp.duration")

local definition = {}

-- The defaults, in one place; docs/definitions.md documents each of them.
definition.DEFAULTS = {
  active = true,
  policy = "recreate",
  auto_deploy = false,
  user = "0:0",
  restart = "unless-stopped",
  stop_timeout = 10,
  init = true,
  on_unhealthy = "restart",
  route_mode = "l7",
  route_public = false,
  health_path = "/",
  health_expect_status = { min = 200, max = 399 },
  health_interval = 10,
  health_timeout = 2,
  health_start_period = 0,
  health_failures = 3,
  health_successes = 1,
}
local D = definition.DEFAULTS

-- The route key of the one unnamed route a component may have: the key
-- under which its host port is assigned and recorded.
definition.DEFAULT_ROUTE = "default"

local TOP_FIELDS = { "name", "node", "active", "policy", "depends_on", "auto_deploy",
  "path", "tier", "build", "components" }
local COMPONENT_FIELDS = { "name", "image", "cmd", "entrypoint", "env", "volumes", "network",
  "user", "restart", "stop_timeout", "init", "health", "routes", "on_unhealthy" }
local ROUTE_FIELDS = { "name", "port", "mode", "hostname", "public" }
local HEALTH_FIELDS = { "kind", "path", "port", "expect_status", "expect_body", "command", "fn",
  "interval", "timeout", "start_period", "failures", "successes" }
local VOLUME_FIELDS = { "source", "destination", "options" }

-- Names people carry over from docker-compose and Kubernetes; too far from
-- ours for the edit distance to find.
local TOP_ALIASES = { component = "components", services = "components",
  depends = "depends_on", dependencies = "depends_on", enabled = "active" }
local COMPONENT_ALIASES = { command = "cmd", args = "cmd", environment = "env", ports = "routes",
  volume = "volumes", mounts = "volumes", restart_policy = "restart", healthcheck = "health",
  network_mode = "network", route = "routes" }

local HEALTH_KINDS = { "http", "tcp", "exec", "lua", "running" }
-- Which fields each health kind reads; the timing fields apply to all.
local HEALTH_KIND_FIELDS = {
  http = { path = true, port = true, expect_status = true, expect_body = true },
  tcp = { port = true },
  exec = { command = true },
  lua = { fn = true, port = true },
  running = {},
}
local HEALTH_COMMON = { kind = true, interval = true, timeout = true, start_period = true,
  failures = true, successes = true }

local RESTARTS = { "no", "on-failure", "always", "unless-stopped" }
local ON_UNHEALTHY = { "restart", "stop", "none" }
local MODES = { "l4", "l7" }
local VOLUME_OPTIONS = { ro = true, rw = true, z = true, Z = true, U = true, nocopy = true }
local VOLUME_OPTIONS_TEXT = "ro, rw, z, Z, U, nocopy"

-- Networks that cannot publish a port: Podman drops -p for them with only a
-- warning, so a route there would silently never be reachable.
local UNPUBLISHABLE = { host = true, none = true }

----------------------------------------------------------------------------
-- Small helpers

local function quote(s)
  s = tostring(s)
  local cut = #s > 120
  if cut then s = s:sub(1, 117) end
  s = s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    if c == "\n" then return "\\n" end
    if c == "\t" then return "\\t" end
    return string.format("\\x%02x", c:byte())
  end)
  return '"' .. s .. '"' .. (cut and "..." or "")
end

local function is_integer(v)
  return type(v) == "number" and v == v and v % 1 == 0 and v > -2 ^ 53 and v < 2 ^ 53
end

local function num(v)
  if is_integer(v) then return string.format("%d", v) end
  return string.format("%.14g", v)
end

local function is_list(t)
  if type(t) ~= "table" then return false end
  local n = 0
  for k in pairs(t) do
    if not is_integer(k) or k < 1 then return false end
    n = n + 1
  end
  for i = 1, n do
    if t[i] == nil then return false end
  end
  return true
end

-- "got ..." in messages: the type, and the value when it is short to show.
local function show(v)
  local t = type(v)
  if t == "string" then return "string " .. quote(v) end
  if t == "number" then return "number " .. num(v) end
  if t == "boolean" then return "boolean " .. tostring(v) end
  if t == "table" then
    if next(v) == nil then return "an empty table" end
    return is_list(v) and "a list" or "a table"
  end
  if t == "nil" then return "nothing" end
  return "a " .. t
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "string" or type(a) == "number") then return a < b end
    return type(a) < type(b)
  end)
  return keys
end

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local function join_path(path, key)
  if path == "" then return key end
  return path .. "." .. key
end

local function deep_copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = deep_copy(x) end
  return c
end

local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    local ca = a:byte(i)
    for j = 1, #b do
      local cost = (ca == b:byte(j)) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

local function suggestion(key, known, aliases)
  local lk = key:lower()
  if aliases and aliases[lk] then return aliases[lk] end
  local best, best_d
  for _, k in ipairs(known) do
    local d = distance(lk, k)
    if best_d == nil or d < best_d then best, best_d = k, d end
  end
  if best_d and best_d <= 2 and best_d < #key then return best end
  return nil
end

local function valid_name(s)
  return type(s) == "string" and #s <= 63 and s:match("^[a-z0-9][a-z0-9-]*$") ~= nil
end
definition.valid_name = valid_name

local NAME_RULE = "expected 1 to 63 lowercase letters, digits or '-', starting with a letter"
  .. " or digit"

local function normalize_path(p)
  local parts = {}
  for part in p:gmatch("[^/]+") do
    if part == ".." then
      parts[#parts] = nil
    elseif part ~= "." then
      parts[#parts + 1] = part
    end
  end
  return "/" .. table.concat(parts, "/")
end
definition.normalize_path = normalize_path

local function under(path, root)
  return root == "/" or path == root or path:sub(1, #root + 1) == root .. "/"
end

----------------------------------------------------------------------------
-- The error collector. Every message is "SOURCE: PATH: message".

local Ctx = {}
Ctx.__index = Ctx

local function new_ctx(source)
  return setmetatable({ source = source, errors = {},
    lua = source:match("%.lua$") ~= nil }, Ctx)
end

function Ctx:err(path, msg)
  if path == "" then
    self.errors[#self.errors + 1] = self.source .. ": " .. msg
  else
    self.errors[#self.errors + 1] = self.source .. ": " .. path .. ": " .. msg
  end
end

-- A list written the way the operator's file format writes one, for hints.
function Ctx:list_syntax(items)
  local q = {}
  for i, s in ipairs(items) do q[i] = quote(s) end
  if self.lua then return "{ " .. table.concat(q, ", ") .. " }" end
  return "[" .. table.concat(q, ", ") .. "]"
end

-- Reports keys of t outside known (a list, in documentation order).
function Ctx:fields(path, t, known, aliases)
  local set = set_of(known)
  for _, k in ipairs(sorted_keys(t)) do
    if type(k) ~= "string" then
      self:err(path .. "[" .. tostring(k) .. "]", "unexpected list item " .. show(t[k])
        .. " among named fields: expected " .. table.concat(known, ", "))
    elseif not set[k] then
      local s = suggestion(k, known, aliases)
      if s then
        self:err(join_path(path, k), 'unknown field (did you mean "' .. s .. '"?)')
      else
        self:err(join_path(path, k), "unknown field: expected one of " .. table.concat(known, ", "))
      end
    end
  end
end

function Ctx:expect(path, what, v)
  self:err(path, "expected " .. what .. ", got " .. show(v))
end

function Ctx:missing(path, what)
  self:err(path, "missing: expected " .. what)
end

-- Each checker returns the normalised value, or nil after recording an error.
function Ctx:string(path, v, what)
  if type(v) ~= "string" then return self:expect(path, what or "a string", v) end
  return v
end

function Ctx:bool(path, v, default)
  if v == nil then return default end
  if type(v) ~= "boolean" then return self:expect(path, "true or false", v) end
  return v
end

function Ctx:enum(path, v, choices, default)
  if v == nil then return default end
  local text = table.concat(choices, ", ")
  if type(v) ~= "string" then return self:expect(path, "one of " .. text, v) end
  for _, c in ipairs(choices) do
    if c == v then return v end
  end
  self:err(path, quote(v) .. " is not one of " .. text)
end

function Ctx:name(path, v, what)
  if type(v) ~= "string" then return self:expect(path, what, v) end
  if not valid_name(v) then
    return self:err(path, quote(v) .. " is not a valid name: " .. NAME_RULE)
  end
  return v
end

function Ctx:integer(path, v, what, min, max)
  if not is_integer(v) then return self:expect(path, what, v) end
  if (min and v < min) or (max and v > max) then
    return self:err(path, num(v) .. " is out of range: expected " .. what)
  end
  return v
end

-- Longer than this is a typo, not a timeout (and would overflow timers).
local MAX_DURATION = 366 * 86400

function Ctx:duration(path, v, default)
  if v == nil then return default end
  local s, msg = duration.parse(v)
  if not s then return self:err(path, msg) end
  if s > MAX_DURATION then
    return self:err(path, show(v) .. " is longer than a year: expected a duration of at "
      .. "most 366d")
  end
  return s
end

-- Offset of the first byte of s that is not valid UTF-8, or nil.
local function utf8_bad_offset(s)
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    local len, min
    if c < 0x80 then len = 1
    elseif c >= 0xC2 and c <= 0xDF then len, min = 2, 0x80
    elseif c >= 0xE0 and c <= 0xEF then len, min = 3, 0x800
    elseif c >= 0xF0 and c <= 0xF4 then len, min = 4, 0x10000
    else return i end
    if len > 1 then
      if i + len - 1 > n then return i end
      local cp = c % (2 ^ (7 - len))
      for j = i + 1, i + len - 1 do
        local b = s:byte(j)
        if b < 0x80 or b > 0xBF then return i end
        cp = cp * 64 + (b - 0x80)
      end
      if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return i end
    end
    i = i + len
  end
  return nil
end
definition.utf8_bad_offset = utf8_bad_offset

-- Every string of a raw definition (keys too) must be UTF-8: it is shown in
-- JSON answers, logs and podman commands. TOML and JSON decoders already
-- refuse bad bytes; a Lua definition can hold anything.
local function check_utf8(ctx, path, v, depth)
  if depth > 20 then return end
  if type(v) == "string" then
    local at = utf8_bad_offset(v)
    local nul = v:find("%z")
    if nul and not at then
      -- A NUL cuts a path, an argument or an environment entry short.
      ctx:err(path, string.format("%q holds a NUL byte at offset %d", v:sub(1, 60), nul))
    elseif at then
      local shown = v:sub(1, 60):gsub("[^\32-\126]", function(c)
        return string.format("\\x%02X", c:byte())
      end)
      ctx:err(path, string.format("\"%s\" is not valid UTF-8 (byte \\x%02X at offset %d)",
        shown, v:byte(at), at))
    end
  elseif type(v) == "table" then
    for k, x in pairs(v) do
      if type(k) == "string" and utf8_bad_offset(k) then
        ctx:err(path, "a key is not valid UTF-8")
      else
        local sub = type(k) == "number" and string.format("%s[%d]", path, k)
          or join_path(path, tostring(k))
        check_utf8(ctx, sub, x, depth + 1)
      end
    end
  end
end

function Ctx:string_list(path, v, what)
  if type(v) == "string" then
    local words = {}
    for w in v:gmatch("%S+") do words[#words + 1] = w end
    return self:err(path, "expected " .. what .. ", got " .. show(v) .. " (write it as a list: "
      .. self:list_syntax(words) .. ")")
  end
  if not is_list(v) then return self:expect(path, what, v) end
  local out, ok = {}, true
  for i, s in ipairs(v) do
    if type(s) ~= "string" then
      self:expect(path .. "[" .. i .. "]", "a string", s)
      ok = false
    end
    out[i] = s
  end
  return ok and out or nil
end

----------------------------------------------------------------------------
-- Image references: [registry[:port]/]path[:tag][@digest]

-- Runs of lowercase letters and digits joined by ".", "_", "__" or dashes,
-- as the distribution spec has it.
local function valid_path_component(c)
  local pos = c:match("^[a-z0-9]+()")
  if not pos then return false end
  while pos <= #c do
    local sep, nxt = c:match("^([._-]+)()", pos)
    if not sep then return false end          -- any other character: not a name
    if not (sep == "." or sep == "_" or sep == "__" or sep:match("^%-+$")) then return false end
    pos = c:match("^[a-z0-9]+()", nxt)
    if not pos then return false end
  end
  return true
end

-- Returns { registry = "host:port" | nil, path = "a/b", tag = "v1" | nil,
-- digest = "sha256:..." | nil } or nil and what is wrong.
function definition.parse_image(ref)
  if type(ref) ~= "string" or ref == "" then return nil, "it is empty" end
  local rest, digest = ref, nil
  local at = ref:find("@", 1, true)
  if at then
    rest, digest = ref:sub(1, at - 1), ref:sub(at + 1)
    local alg, hex = digest:match("^([a-z0-9][a-z0-9+._-]*):([0-9a-fA-F]+)$")
    if not alg or #hex < 32 then
      return nil, "the digest " .. quote(digest) .. " is not algorithm:hex (sha256:...)"
    end
  end
  local tag
  local colon = rest:match(".*():")
  if colon and not rest:find("/", colon, true) then
    tag = rest:sub(colon + 1)
    rest = rest:sub(1, colon - 1)
    if not tag:match("^[%w_][%w_.-]*$") or #tag > 128 then
      return nil, "the tag " .. quote(tag) .. " is not 1 to 128 letters, digits, '_', '.' or '-'"
    end
  end
  local registry
  local first, remainder = rest:match("^([^/]+)/(.+)$")
  if first and (first:find("[.:]") or first == "localhost") then
    local host, port = first:match("^([^:]+):?(%d*)$")
    if not host or not host:match("^[%w][%w.-]*$") or (first:find(":") and port == "") then
      return nil, "the registry " .. quote(first) .. " is not host[:port]"
    end
    registry, rest = first, remainder
  end
  if rest == "" then return nil, "it has no repository path" end
  for c in (rest .. "/"):gmatch("([^/]*)/") do
    if not valid_path_component(c) then
      return nil, "the path component " .. quote(c)
        .. " is not lowercase letters and digits separated by '.', '_' or '-'"
    end
  end
  return { registry = registry, path = rest, tag = tag, digest = digest }
end

-- The version an operator recognises: the tag ("v0.3.2"), or for an image
-- pinned only by digest the digest's first 12 hex digits ("sha256:0123456789ab").
function definition.version(image)
  local ref = definition.parse_image(image)
  if not ref then return nil end
  if ref.tag then return ref.tag end
  if ref.digest then return ref.digest:match("^[^:]+:") .. ref.digest:match(":(.*)$"):sub(1, 12) end
  return nil
end

local function check_image(ctx, path, v)
  if v == nil then
    return ctx:missing(path, 'an image reference like "registry.example:8443/app:v1.2.3"')
  end
  if type(v) ~= "string" then return ctx:expect(path, "an image reference string", v) end
  local ref, why = definition.parse_image(v)
  if not ref then
    return ctx:err(path, quote(v) .. " is not an image reference: " .. why
      .. "; expected [registry[:port]/]path[:tag][@digest]")
  end
  if not ref.tag and not ref.digest then
    return ctx:err(path, quote(v) .. ' is not pinned: expected a version tag (":v1.2.3") or a'
      .. ' digest ("@sha256:...")')
  end
  -- A digest pins the image whatever the tag says; "latest" alone does not.
  if ref.tag == "latest" and not ref.digest then
    return ctx:err(path, 'tag "latest" is not pinned')
  end
  return v
end

----------------------------------------------------------------------------
-- Components' parts

-- One variable: KEY checked, PORT* refused, a repeat refused. raw is the
-- "KEY=VALUE" string as written, when the list form was used.
local function env_entry(ctx, p, key, value, raw, seen, out)
  local what = raw and (quote(raw) .. " sets " .. key) or key
  if not key:match("^[A-Za-z_][A-Za-z0-9_]*$") then
    return ctx:err(p, (raw and quote(raw) .. ": " or "") .. quote(key) .. " is not a variable"
      .. " name: expected letters, digits and '_', not starting with a digit")
  end
  if key == "PORT" or key:match("^PORT_") then
    return ctx:err(p, (raw and what .. ", which" or key) .. " is reserved: the agent sets PORT"
      .. " and PORT_<ROUTE> from the component's routes")
  end
  if seen[key] then
    return ctx:err(p, what .. " again (first set at " .. seen[key] .. ")")
  end
  seen[key] = p
  out[#out + 1] = key .. "=" .. value
  return true
end

local function check_env(ctx, path, v)
  if v == nil then return {} end
  if type(v) ~= "table" then
    return ctx:expect(path, 'a list of "KEY=VALUE" strings or a table of KEY = "VALUE"', v)
  end
  local seen, out, ok = {}, {}, true
  if is_list(v) then
    for i, e in ipairs(v) do
      local p = path .. "[" .. i .. "]"
      local key, value
      if type(e) ~= "string" then
        ctx:expect(p, 'a "KEY=VALUE" string', e)
      else
        key, value = e:match("^([^=]*)=(.*)$")
        if not key then ctx:err(p, quote(e) .. ' is not "KEY=VALUE"') end
      end
      ok = key and env_entry(ctx, p, key, value, e, seen, out) and ok
    end
  else
    for _, key in ipairs(sorted_keys(v)) do
      local value = v[key]
      local p = path .. "." .. tostring(key)
      if type(key) ~= "string" then
        ctx:err(path .. "[" .. tostring(key) .. "]", "unexpected list item " .. show(value)
          .. ' in a table of KEY = "VALUE": use one form or the other')
        ok = false
      elseif type(value) == "number" or type(value) == "boolean" then
        -- Lua files write DEBUG = 1; the container sees the text either way.
        ok = env_entry(ctx, p, key, type(value) == "number" and num(value) or tostring(value),
          nil, seen, out) and ok
      elseif type(value) ~= "string" then
        ctx:expect(p, "a string value", value)
        ok = false
      else
        ok = env_entry(ctx, p, key, value, nil, seen, out) and ok
      end
    end
  end
  table.sort(out)
  return ok and out or nil
end

local function volume_roots(service, opts)
  local roots = { "/srv/" .. (service or "<service>") }
  for _, r in ipairs(opts.allowed_volume_roots or {}) do
    roots[#roots + 1] = normalize_path(r)
  end
  return roots
end

local function check_volume_parts(ctx, p, raw, host, container, options, roots)
  local ok = true
  if host:sub(1, 1) ~= "/" then
    ctx:err(p, "host path " .. quote(host) .. " is not absolute: expected a directory under "
      .. table.concat(roots, ", ") .. " (named volumes are not supported)")
    ok = false
  end
  if container:sub(1, 1) ~= "/" then
    ctx:err(p, "container path " .. quote(container) .. " is not absolute")
    ok = false
  end
  local opts_out, seen = {}, {}
  for _, o in ipairs(options) do
    if not VOLUME_OPTIONS[o] then
      ctx:err(p, "option " .. quote(o) .. " in " .. quote(raw) .. " is not one of "
        .. VOLUME_OPTIONS_TEXT)
      ok = false
    elseif not seen[o] then
      seen[o] = true
      opts_out[#opts_out + 1] = o
    end
  end
  if seen.ro and seen.rw then
    ctx:err(p, quote(raw) .. " says both ro and rw")
    ok = false
  end
  if seen.z and seen.Z then
    ctx:err(p, quote(raw) .. " says both z (shared label) and Z (private label)")
    ok = false
  end
  if not ok then return nil end
  local h, c = normalize_path(host), normalize_path(container)
  -- Without a valid service name there is no /srv/<service> to hold the
  -- path to; the name's own error says what to fix first.
  local inside = roots.unknown
  for _, r in ipairs(roots) do
    if under(h, r) then inside = true end
  end
  if not inside then
    local shown = quote(host) .. (h ~= host and " (that is " .. h .. ")" or "")
    return ctx:err(p, "host path " .. shown .. " is outside the allowed roots: "
      .. table.concat(roots, ", "))
  end
  return { source = h, destination = c, options = opts_out }
end

local function check_volume(ctx, p, v, roots)
  if type(v) == "string" then
    local parts = {}
    for part in (v .. ":"):gmatch("([^:]*):") do parts[#parts + 1] = part end
    if (#parts ~= 2 and #parts ~= 3) or parts[1] == "" or parts[2] == ""
        or (#parts == 3 and parts[3] == "") then
      return ctx:err(p, quote(v) .. ' is not "host:container[:options]"')
    end
    local options = {}
    if parts[3] then
      for o in (parts[3] .. ","):gmatch("([^,]*),") do options[#options + 1] = o end
    end
    return check_volume_parts(ctx, p, v, parts[1], parts[2], options, roots)
  end
  if type(v) == "table" and not is_list(v) then
    local before = #ctx.errors
    ctx:fields(p, v, VOLUME_FIELDS)
    local src, dst
    if v.source == nil then
      ctx:missing(p .. ".source", "an absolute host path")
    else
      src = ctx:string(p .. ".source", v.source, "an absolute host path")
    end
    if v.destination == nil then
      ctx:missing(p .. ".destination", "an absolute container path")
    else
      dst = ctx:string(p .. ".destination", v.destination, "an absolute container path")
    end
    local options = v.options or {}
    if type(options) == "string" then
      local list = {}
      for o in (options .. ","):gmatch("([^,]*),") do list[#list + 1] = o end
      options = list
    else
      options = ctx:string_list(p .. ".options", options, "a list of mount options")
    end
    if #ctx.errors > before or not options then return nil end
    local raw = src .. ":" .. dst .. (#options > 0 and ":" .. table.concat(options, ",") or "")
    return check_volume_parts(ctx, p, raw, src, dst, options, roots)
  end
  return ctx:expect(p, 'a "host:container[:options]" string', v)
end

local function check_volumes(ctx, path, v, service, opts)
  local roots = volume_roots(service, opts)
  roots.unknown = service == nil
  if v == nil then
    return { { source = roots[1], destination = roots[1], options = {} } }
  end
  if not is_list(v) then
    return ctx:expect(path, 'a list of "host:container[:options]" strings', v)
  end
  local out, ok, dests = {}, true, {}
  for i, item in ipairs(v) do
    local p = path .. "[" .. i .. "]"
    local vol = check_volume(ctx, p, item, roots)
    if not vol then
      ok = false
    elseif dests[vol.destination] then
      ctx:err(p, "container path " .. vol.destination .. " is mounted twice (also at "
        .. dests[vol.destination] .. ")")
      ok = false
    else
      dests[vol.destination] = p
      out[#out + 1] = vol
    end
  end
  return ok and out or nil
end

local function valid_hostname(h)
  if #h > 253 or h:sub(-1) == "." then return false end
  for label in (h .. "."):gmatch("([^.]*)%.") do
    if #label == 0 or #label > 63 then return false end
    if not (label:match("^[a-z0-9]$") or label:match("^[a-z0-9][a-z0-9-]*[a-z0-9]$")) then
      return false
    end
  end
  return true
end

local function check_route(ctx, p, r)
  if type(r) ~= "table" or (is_list(r) and next(r) ~= nil) then
    return ctx:expect(p, "a table of route fields", r)
  end
  local before = #ctx.errors
  ctx:fields(p, r, ROUTE_FIELDS)
  local route = {}
  if r.name ~= nil then route.name = ctx:name(p .. ".name", r.name, "a route name") end
  if r.port == nil then
    ctx:missing(p .. ".port", "the container port, an integer 1-65535")
  else
    route.port = ctx:integer(p .. ".port", r.port, "an integer port 1-65535", 1, 65535)
  end
  route.mode = ctx:enum(p .. ".mode", r.mode, MODES, D.route_mode)
  if r.hostname ~= nil then
    local h = ctx:string(p .. ".hostname", r.hostname, "a DNS name")
    if h then
      if valid_hostname(h:lower()) then
        route.hostname = h:lower()
      else
        ctx:err(p .. ".hostname", quote(h) .. " is not a DNS name: expected dot-separated labels"
          .. " of letters, digits and '-'")
      end
    end
  end
  route.public = ctx:bool(p .. ".public", r.public, D.route_public)
  if #ctx.errors > before then return nil end
  route.key = route.name or definition.DEFAULT_ROUTE
  return route
end

local function check_routes(ctx, path, v)
  if v == nil then return {} end
  if not is_list(v) then
    return ctx:err(path, "expected a list of routes, got " .. show(v)
      .. (type(v) == "table" and " (even one route goes in a list)" or ""))
  end
  local out, ok, names = {}, true, {}
  for i, r in ipairs(v) do
    local p = path .. "[" .. i .. "]"
    local route = check_route(ctx, p, r)
    if not route then
      ok = false
    elseif #v > 1 and not route.name then
      ctx:missing(p .. ".name", "a route name: a component with more than one route names"
        .. " each of them")
      ok = false
    elseif route.name and names[route.name] then
      ctx:err(p .. ".name", quote(route.name) .. " is used by " .. names[route.name] .. " too")
      ok = false
    else
      if route.name then names[route.name] = p end
      out[#out + 1] = route
    end
  end
  return ok and out or nil
end

local function route_list_text(routes)
  local t = {}
  for _, r in ipairs(routes) do
    t[#t + 1] = (r.name or "unnamed") .. " on " .. r.port
  end
  return table.concat(t, ", ")
end

-- Resolves health.port (a route name or a container port) to the route the
-- check talks to: only published ports are reachable from the agent.
local function health_route(ctx, p, v, routes, required, kind)
  if v == nil then
    if #routes == 1 then return routes[1] end
    if not required then return nil end
    if #routes == 0 then
      return ctx:err(join_path(p, "kind"), quote(kind) .. " checks a route, but the component"
        .. " has no routes: add one, or use kind exec, lua or running")
    end
    return ctx:missing(p .. ".port", "the route to check: the component has "
      .. #routes .. " routes (" .. route_list_text(routes) .. ")")
  end
  if type(v) == "string" then
    for _, r in ipairs(routes) do
      if r.name == v then return r end
    end
    return ctx:err(p .. ".port", quote(v) .. " is not one of the component's routes"
      .. (#routes > 0 and " (" .. route_list_text(routes) .. ")" or " (it has none)"))
  end
  if is_integer(v) then
    for _, r in ipairs(routes) do
      if r.port == v then return r end
    end
    return ctx:err(p .. ".port", num(v) .. " is not the container port of one of the"
      .. " component's routes" .. (#routes > 0 and " (" .. route_list_text(routes) .. ")"
      or " (it has none)"))
  end
  return ctx:expect(p .. ".port", "a route name or a container port", v)
end

local function check_expect_status(ctx, p, v)
  if v == nil then return deep_copy(D.health_expect_status) end
  local what = "an HTTP status 100-599, a list of them, or { min = 200, max = 399 }"
  if is_integer(v) then
    if v < 100 or v > 599 then
      return ctx:err(p, num(v) .. " is out of range: expected " .. what)
    end
    return { v }
  end
  if type(v) == "table" and not is_list(v) then
    local before = #ctx.errors
    ctx:fields(p, v, { "min", "max" })
    local min = ctx:integer(p .. ".min", v.min, "an HTTP status 100-599", 100, 599)
    local max = ctx:integer(p .. ".max", v.max, "an HTTP status 100-599", 100, 599)
    if #ctx.errors > before then return nil end
    if min > max then return ctx:err(p, "min " .. min .. " is above max " .. max) end
    return { min = min, max = max }
  end
  if is_list(v) and next(v) ~= nil then
    local out = {}
    for i, s in ipairs(v) do
      out[i] = ctx:integer(p .. "[" .. i .. "]", s, "an HTTP status 100-599", 100, 599)
      if not out[i] then return nil end
    end
    return out
  end
  return ctx:expect(p, what, v)
end

local function valid_fn_name(s)
  for part in (s .. "."):gmatch("([^.]*)%.") do
    if not part:match("^[%a_][%w_]*$") then return false end
  end
  return true
end

local function check_health(ctx, p, v, routes, routes_ok)
  if v == nil then
    local r = routes[1]
    return {
      kind = r and "tcp" or "running",
      route = r and r.key, port = r and r.port,
      interval = D.health_interval, timeout = D.health_timeout,
      start_period = D.health_start_period,
      failures = D.health_failures, successes = D.health_successes,
    }
  end
  if type(v) ~= "table" or (is_list(v) and next(v) ~= nil) then
    return ctx:expect(p, "a table of health check fields", v)
  end
  local before = #ctx.errors
  ctx:fields(p, v, HEALTH_FIELDS)
  local h = {}
  if v.kind == nil then
    ctx:missing(p .. ".kind", "one of " .. table.concat(HEALTH_KINDS, ", "))
  else
    h.kind = ctx:enum(p .. ".kind", v.kind, HEALTH_KINDS)
  end
  local kind = h.kind
  if kind then
    for _, k in ipairs(HEALTH_FIELDS) do
      if v[k] ~= nil and not HEALTH_COMMON[k] and not HEALTH_KIND_FIELDS[kind][k] then
        ctx:err(p .. "." .. k, "not used by health kind " .. quote(kind))
      end
    end
  end
  if kind == "http" or kind == "tcp" or kind == "lua" then
    if routes_ok then
      local r = health_route(ctx, p, v.port, routes, kind ~= "lua", kind)
      if r then h.route, h.port = r.key, r.port end
    end
  end
  if kind == "http" then
    h.path = D.health_path
    if v.path ~= nil then
      local s = ctx:string(p .. ".path", v.path, 'a URL path starting with "/"')
      if s and s:sub(1, 1) ~= "/" then
        ctx:err(p .. ".path", quote(s) .. ' does not start with "/"')
      end
      h.path = s
    end
    h.expect_status = check_expect_status(ctx, p .. ".expect_status", v.expect_status)
    if v.expect_body ~= nil then
      h.expect_body = ctx:string(p .. ".expect_body", v.expect_body,
        "a string the response body must contain")
    end
  elseif kind == "exec" then
    if v.command == nil then
      ctx:missing(p .. ".command", "the check's command as a list of strings")
    else
      h.command = ctx:string_list(p .. ".command", v.command, "a list of strings")
      if h.command and #h.command == 0 then
        ctx:err(p .. ".command", "is empty: expected the check's command as a list of strings")
      end
    end
  elseif kind == "lua" then
    if v.fn == nil then
      ctx:missing(p .. ".fn", "a function, or the name of a function in the service's policy")
    elseif type(v.fn) == "string" then
      if valid_fn_name(v.fn) then
        h.fn = v.fn
      else
        ctx:err(p .. ".fn", quote(v.fn) .. " is not a function name: expected a Lua name such"
          .. ' as "check_db" or "checks.db"')
      end
    elseif type(v.fn) == "function" then
      h.fn = v.fn
    else
      ctx:expect(p .. ".fn", "a function, or the name of a function in the service's policy",
        v.fn)
    end
  end
  h.interval = ctx:duration(p .. ".interval", v.interval, D.health_interval)
  h.timeout = ctx:duration(p .. ".timeout", v.timeout, D.health_timeout)
  h.start_period = ctx:duration(p .. ".start_period", v.start_period, D.health_start_period)
  if h.interval and h.interval <= 0 then
    ctx:err(p .. ".interval", duration.format(h.interval) .. " is not a usable interval:"
      .. " expected more than 0s")
  elseif h.timeout and h.timeout <= 0 then
    ctx:err(p .. ".timeout", duration.format(h.timeout) .. " is not a usable timeout:"
      .. " expected more than 0s")
  elseif h.interval and h.timeout and h.timeout > h.interval then
    -- Overlapping checks of one container would pile up behind a hung service.
    ctx:err(p .. ".timeout", duration.format(h.timeout) .. " is longer than the interval "
      .. duration.format(h.interval) .. ": a check must end before the next one starts")
  end
  h.failures = v.failures == nil and D.health_failures
    or ctx:integer(p .. ".failures", v.failures, "an integer of 1 or more", 1)
  h.successes = v.successes == nil and D.health_successes
    or ctx:integer(p .. ".successes", v.successes, "an integer of 1 or more", 1)
  if #ctx.errors > before then return nil end
  return h
end

local function check_user(ctx, p, v)
  if v == nil then return D.user end
  if is_integer(v) and v >= 0 then return num(v) end
  if type(v) ~= "string" then
    return ctx:expect(p, 'a user: "uid:gid", "uid" or a name', v)
  end
  local a, b = v:match("^([^:]+):([^:]+)$")
  if not a then a = v end
  for _, part in ipairs({ a, b }) do
    if not part:match("^[%w_][%w_.-]*$") then
      return ctx:err(p, quote(v) .. ' is not a user: expected "uid:gid", "uid" or a name')
    end
  end
  return v
end

local function check_network(ctx, p, v)
  if v == nil then return nil end
  if type(v) ~= "string" then return ctx:expect(p, "a network name", v) end
  if not (v:match("^[%w][%w_.-]*$") or v:match("^container:[%w][%w_.-]*$")
      or v:match("^ns:/.+$")) then
    return ctx:err(p, quote(v) .. ' is not a network: expected a Podman network name,'
      .. ' "host", "none", "container:NAME" or "ns:/path"')
  end
  return v
end

local function check_component(ctx, p, c, service, opts)
  if type(c) ~= "table" or (is_list(c) and next(c) ~= nil) then
    return ctx:expect(p, "a table of component fields", c)
  end
  local before = #ctx.errors
  ctx:fields(p, c, COMPONENT_FIELDS, COMPONENT_ALIASES)
  local comp = {}
  if c.name == nil then
    ctx:missing(p .. ".name", 'a component name like "' .. (service or "web") .. '"')
  else
    comp.name = ctx:name(p .. ".name", c.name, "a component name")
  end
  comp.image = check_image(ctx, p .. ".image", c.image)
  if c.cmd ~= nil then comp.cmd = ctx:string_list(p .. ".cmd", c.cmd, "a list of strings") end
  if c.entrypoint ~= nil then
    comp.entrypoint = ctx:string_list(p .. ".entrypoint", c.entrypoint, "a list of strings")
  end
  comp.env = check_env(ctx, p .. ".env", c.env)
  comp.volumes = check_volumes(ctx, p .. ".volumes", c.volumes, service, opts)
  comp.network = check_network(ctx, p .. ".network", c.network)
  comp.user = check_user(ctx, p .. ".user", c.user)
  comp.restart = ctx:enum(p .. ".restart", c.restart, RESTARTS, D.restart)
  comp.stop_timeout = ctx:duration(p .. ".stop_timeout", c.stop_timeout, D.stop_timeout)
  comp.init = ctx:bool(p .. ".init", c.init, D.init)
  local routes_before = #ctx.errors
  comp.routes = check_routes(ctx, p .. ".routes", c.routes)
  local routes_ok = comp.routes ~= nil and #ctx.errors == routes_before
  if routes_ok and #comp.routes > 0 and comp.network then
    local mode = comp.network:match("^(%a+):") or comp.network
    if UNPUBLISHABLE[mode] or mode == "container" or mode == "ns" then
      ctx:err(p .. ".network", quote(comp.network) .. " cannot publish the component's routes:"
        .. " expected a bridged network (leave network out, or name a Podman network)")
    end
  end
  comp.health = check_health(ctx, p .. ".health", c.health, comp.routes or {}, routes_ok)
  comp.on_unhealthy = ctx:enum(p .. ".on_unhealthy", c.on_unhealthy, ON_UNHEALTHY,
    D.on_unhealthy)
  if #ctx.errors > before then return nil end
  return comp
end

local function check_policy(ctx, v, known)
  if v == nil then return D.policy end
  if type(v) ~= "string" then return ctx:expect("policy", "a policy name", v) end
  if not v:match("^[a-z][a-z0-9_-]*$") then
    return ctx:err("policy", quote(v) .. " is not a policy name: expected lowercase letters,"
      .. " digits, '_' or '-'")
  end
  if known then
    local names = {}
    for k, x in pairs(known) do
      if type(k) == "string" and x then names[#names + 1] = k end
      if type(k) == "number" then names[#names + 1] = x end
    end
    table.sort(names)
    if not set_of(names)[v] then
      local s = suggestion(v, names)
      return ctx:err("policy", quote(v) .. " is not a known policy: expected one of "
        .. table.concat(names, ", ") .. (s and ' (did you mean "' .. s .. '"?)' or ""))
    end
  end
  return v
end

local function check_depends(ctx, v, self_name)
  if v == nil then return {} end
  local list = ctx:string_list("depends_on", v, "a list of service names")
  if not list then return nil end
  local out, seen, ok = {}, {}, true
  for i, s in ipairs(list) do
    local p = "depends_on[" .. i .. "]"
    if not ctx:name(p, s, "a service name") then
      ok = false
    elseif s == self_name then
      ctx:err(p, quote(s) .. " is the service itself: a service cannot depend on itself")
      ok = false
    elseif seen[s] then
      ctx:err(p, quote(s) .. " is listed twice (also at " .. seen[s] .. ")")
      ok = false
    else
      seen[s] = p
      out[#out + 1] = s
    end
  end
  return ok and out or nil
end

local VALIDATE_OPTS = { node = true, allowed_volume_roots = true, known_policies = true }

-- validate(t, source, opts) -> def | nil, { "SOURCE: PATH: message", ... }
-- opts: node (the agent's node, the default for def.node), allowed_volume_roots
-- (host dirs allowed for volumes besides /srv/<service>), known_policies (a
-- set or list of policy names; when given, def.policy must be one of them).
function definition.validate(t, source, opts)
  source = source or "definition"
  opts = opts or {}
  for k in pairs(opts) do
    if not VALIDATE_OPTS[k] then
      error("definition.validate: unknown option " .. tostring(k)
        .. " (expected node, allowed_volume_roots, known_policies)", 2)
    end
  end
  local ctx = new_ctx(source)
  if type(t) ~= "table" or (is_list(t) and next(t) ~= nil) then
    ctx:expect("", "a table of service fields", t)
    return nil, ctx.errors
  end
  check_utf8(ctx, "", t, 0)
  if #ctx.errors > 0 then return nil, ctx.errors end
  ctx:fields("", t, TOP_FIELDS, TOP_ALIASES)
  local def = { source = source }
  if t.name == nil then
    ctx:missing("name", 'the service name, like "mcq"')
  else
    def.name = ctx:name("name", t.name, "a service name")
  end
  if t.node ~= nil then
    local n = ctx:string("node", t.node, "a node name")
    if n and not n:match("^[%w][%w._-]*$") then
      ctx:err("node", quote(n) .. " is not a node name: expected letters, digits, '.', '_' or '-'")
    end
    def.node = n
  else
    def.node = opts.node
  end
  def.active = ctx:bool("active", t.active, D.active)
  def.policy = check_policy(ctx, t.policy, opts.known_policies)
  def.depends_on = check_depends(ctx, t.depends_on, def.name)
  def.auto_deploy = ctx:bool("auto_deploy", t.auto_deploy, D.auto_deploy)
  if t.path ~= nil then def.path = ctx:string("path", t.path, "a string") end
  if t.tier ~= nil then def.tier = ctx:string("tier", t.tier, "a string") end
  if t.build ~= nil then
    if type(t.build) ~= "table" then
      ctx:expect("build", "a table (kept for the build tooling)", t.build)
    else
      def.build = deep_copy(t.build)
    end
  end
  local service = def.name
  local comps = t.components
  if comps == nil then
    ctx:missing("components", "a non-empty list of components")
  elseif not is_list(comps) then
    ctx:err("components", "expected a non-empty list of components, got " .. show(comps)
      .. (type(comps) == "table" and " (even one component goes in a list)" or ""))
  elseif #comps == 0 then
    ctx:err("components", "is empty: expected at least one component")
  else
    def.components = {}
    local names = {}
    for i, c in ipairs(comps) do
      local p = "components[" .. i .. "]"
      local comp = check_component(ctx, p, c, service, opts)
      if comp then
        if names[comp.name] then
          ctx:err(p .. ".name", quote(comp.name) .. " is used by " .. names[comp.name] .. " too")
        else
          names[comp.name] = p
        end
        def.components[#def.components + 1] = comp
      end
    end
  end
  if #ctx.errors > 0 then return nil, ctx.errors end
  return def
end

-- The component of def named name, or nil.
function definition.component(def, name)
  for _, c in ipairs(def.components) do
    if c.name == name then return c end
  end
  return nil
end

-- The environment variable that carries a route's host port.
function definition.port_env(route)
  if not route.name then return "PORT" end
  return "PORT_" .. route.name:upper():gsub("-", "_")
end

----------------------------------------------------------------------------
-- Service sets

-- topo_order(defs, opts) -> { names, dependencies first }
--                         | nil, "message[\nmessage...]", { messages }
-- defs: a map name -> def, or a list of defs. defs is taken as the whole
-- set unless opts.complete == false: then a depends_on naming a service
-- outside it is skipped (a partial set orders what it has) rather than an
-- error. Ties are broken by name, so the order is stable.
function definition.topo_order(defs, opts)
  opts = opts or {}
  local complete = opts.complete ~= false
  local by_name = {}
  if is_list(defs) then
    for _, d in ipairs(defs) do by_name[d.name] = d end
  else
    for k, d in pairs(defs) do by_name[d.name or k] = d end
  end
  local names = sorted_keys(by_name)
  local errors, order, state, stack = {}, {}, {}, {}
  local function src(name)
    return (by_name[name].source or name) .. ": "
  end
  local function visit(name)
    if state[name] == "done" then return end
    if state[name] == "active" then
      local cycle, start = {}, nil
      for i, n in ipairs(stack) do
        if n == name then start = i end
        if start then cycle[#cycle + 1] = n end
      end
      cycle[#cycle + 1] = name
      errors[#errors + 1] = src(name) .. "depends_on: dependency cycle: "
        .. table.concat(cycle, " -> ")
      return
    end
    state[name] = "active"
    stack[#stack + 1] = name
    for i, dep in ipairs(by_name[name].depends_on or {}) do
      if by_name[dep] then
        visit(dep)
      elseif complete then
        errors[#errors + 1] = src(name) .. "depends_on[" .. i .. "]: " .. quote(dep)
          .. " is not a defined service"
      end
    end
    stack[#stack] = nil
    state[name] = "done"
    order[#order + 1] = name
  end
  for _, name in ipairs(names) do visit(name) end
  if #errors > 0 then return nil, table.concat(errors, "\n"), errors end
  return order
end

----------------------------------------------------------------------------
-- What a component means to Podman

local LABEL_ORDER = { "mcp.managed", "mcp.service", "mcp.component", "mcp.revision" }

-- Container names: rolling deploys start the new revision beside the old
-- one, under a suffix, so the two never collide.
function definition.container_name(service, component, suffix)
  local n = service .. "-" .. component
  if suffix then n = n .. "-" .. suffix end
  return n
end

local function netns_of(network)
  if network == nil then return nil, nil end
  local mode, value = network:match("^(%a+):(.+)$")
  if mode == "container" then return { nsmode = "container", value = value }, nil end
  if mode == "ns" then return { nsmode = "path", value = value }, nil end
  if network == "host" or network == "none" or network == "bridge"
      or network == "slirp4netns" or network == "pasta" then
    return { nsmode = network }, nil
  end
  return { nsmode = "bridge" }, { [network] = {} }
end

-- container_spec(def, component, opts) -> the table the Podman binding
-- takes (libpod's SpecGenerator field names). component: a component of def
-- or its name. opts: revision (required), ports = { [component] = {
-- [route key] = host port } } (required for every route), suffix (optional).
-- Routes publish on 127.0.0.1 unless public = true (0.0.0.0): the node's
-- proxy is on the same host, so nothing else needs to reach the port.
function definition.container_spec(def, component, opts)
  opts = opts or {}
  local comp = component
  if type(component) == "string" then
    comp = definition.component(def, component)
    if not comp then
      error("definition.container_spec: service " .. def.name .. " has no component "
        .. component, 2)
    end
  end
  if type(opts.revision) ~= "string" or opts.revision == "" then
    error("definition.container_spec: opts.revision is required (the mcp.revision label)", 2)
  end
  local env = {}
  for _, e in ipairs(comp.env) do
    local k, v = e:match("^([^=]*)=(.*)$")
    env[k] = v
  end
  local portmappings = {}
  local ports = opts.ports and opts.ports[comp.name] or {}
  for _, r in ipairs(comp.routes) do
    local host_port = ports[r.key]
    if not is_integer(host_port) then
      error("definition.container_spec: no host port assigned for route " .. r.key
        .. " of " .. def.name .. "/" .. comp.name .. " (opts.ports[\"" .. comp.name
        .. "\"][\"" .. r.key .. "\"])", 2)
    end
    env[definition.port_env(r)] = num(host_port)
    -- One route: $PORT too, whatever its name, so single-port images need
    -- no knowledge of route names.
    if #comp.routes == 1 then env.PORT = num(host_port) end
    portmappings[#portmappings + 1] = {
      container_port = r.port, host_port = host_port,
      host_ip = r.public and "0.0.0.0" or "127.0.0.1", protocol = "tcp",
    }
  end
  local mounts = {}
  for _, v in ipairs(comp.volumes) do
    mounts[#mounts + 1] = { type = "bind", source = v.source, destination = v.destination,
      options = deep_copy(v.options) }
  end
  local netns, networks = netns_of(comp.network)
  return {
    name = definition.container_name(def.name, comp.name, opts.suffix),
    image = comp.image,
    command = deep_copy(comp.cmd),
    entrypoint = deep_copy(comp.entrypoint),
    env = env,
    labels = {
      ["mcp.managed"] = "true", ["mcp.service"] = def.name,
      ["mcp.component"] = comp.name, ["mcp.revision"] = opts.revision,
    },
    portmappings = portmappings,
    mounts = mounts,
    user = comp.user,
    netns = netns,
    networks = networks,
    restart_policy = comp.restart,
    init = comp.init,
    -- Podman counts whole seconds; rounding up never cuts a shutdown short.
    stop_timeout = math.ceil(comp.stop_timeout),
  }
end

local function shell_quote(s)
  if s ~= "" and s:match("^[%w@%%+=:,./_-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end
definition.shell_quote = shell_quote

local function json_string_list(list)
  local q = {}
  for i, s in ipairs(list) do
    q[i] = '"' .. s:gsub('[%c"\\]', function(c)
      if c == '"' then return '\\"' end
      if c == "\\" then return "\\\\" end
      return string.format("\\u%04x", c:byte())
    end) .. '"'
  end
  return "[" .. table.concat(q, ",") .. "]"
end

local function network_arg(spec)
  local ns = spec.netns
  if not ns then return nil end
  if spec.networks then return (next(spec.networks)) end
  if ns.nsmode == "container" then return "container:" .. ns.value end
  if ns.nsmode == "path" then return "ns:" .. ns.value end
  return ns.nsmode
end

-- The argv of `podman run` for a container spec.
function definition.spec_argv(spec)
  local a = { "podman", "run", "-d", "--name", spec.name }
  for _, k in ipairs(LABEL_ORDER) do
    a[#a + 1] = "--label"
    a[#a + 1] = k .. "=" .. spec.labels[k]
  end
  a[#a + 1] = "--user"
  a[#a + 1] = spec.user
  a[#a + 1] = "--restart"
  a[#a + 1] = spec.restart_policy
  if spec.init then a[#a + 1] = "--init" end
  a[#a + 1] = "--stop-timeout"
  a[#a + 1] = num(spec.stop_timeout)
  local net = network_arg(spec)
  if net then
    a[#a + 1] = "--network"
    a[#a + 1] = net
  end
  for _, m in ipairs(spec.mounts) do
    a[#a + 1] = "-v"
    a[#a + 1] = m.source .. ":" .. m.destination
      .. (#m.options > 0 and ":" .. table.concat(m.options, ",") or "")
  end
  for _, k in ipairs(sorted_keys(spec.env)) do
    a[#a + 1] = "-e"
    a[#a + 1] = k .. "=" .. spec.env[k]
  end
  for _, pm in ipairs(spec.portmappings) do
    a[#a + 1] = "-p"
    a[#a + 1] = pm.host_ip .. ":" .. num(pm.host_port) .. ":" .. num(pm.container_port)
  end
  if spec.entrypoint then
    a[#a + 1] = "--entrypoint"
    a[#a + 1] = json_string_list(spec.entrypoint)
  end
  a[#a + 1] = spec.image
  for _, s in ipairs(spec.command or {}) do a[#a + 1] = s end
  return a
end

-- render(def, opts) -> { "podman run ...", ... }, one line per component, in
-- definition order; opts as for container_spec.
function definition.render(def, opts)
  local lines = {}
  for _, comp in ipairs(def.components) do
    local argv = definition.spec_argv(definition.container_spec(def, comp, opts))
    for i, s in ipairs(argv) do argv[i] = shell_quote(s) end
    lines[#lines + 1] = table.concat(argv, " ")
  end
  return lines
end

-- True when an HTTP status meets a normalised health.expect_status.
function definition.status_ok(expect, status)
  if expect.min then return status >= expect.min and status <= expect.max end
  for _, s in ipairs(expect) do
    if s == status then return true end
  end
  return false
end

return definition
