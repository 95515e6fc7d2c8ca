-- fuzz/lua/definition.lua: the driver of definition_fuzz.c. The input is a
-- service definition in TOML; it goes the way a file in services_dir goes:
-- mcp.toml.decode, then definition.validate, then (when valid) what a deploy
-- does with it: the registry's JSON, the spec hash, the container spec of
-- every component on assigned ports, the `podman run` lines.
--
-- What it checks beyond "no error escapes": a rejected definition gets at
-- least one message and every message names the file; an accepted one
-- holds what the rest of the agent relies on (a valid name, volumes inside
-- /srv/<name> or an allowed root, no NUL byte in a path, image or name the
-- C side and Podman will see), and survives the registry's JSON.
local mcp = require("mcp.core")
local definition = require("mcp.definition")
local planner = require("mcp.planner")

local SOURCE = "fuzz.toml"
local ROOTS = { "/data/shared" }
local OPTS = { node = "fuzz", allowed_volume_roots = ROOTS,
  known_policies = { recreate = true, rolling = true } }

local driver = {}

function driver.setup() end

local function under(path, root)
  return path == root or path:sub(1, #root + 1) == root .. "/"
end

local function fail(fmt, ...) return false, string.format(fmt, ...) end

local function no_nul(what, s)
  if type(s) == "string" and s:find("%z") then
    return fail("%s %q holds a NUL byte, yet the definition was accepted", what, s)
  end
  return true
end

local function check_valid(def)
  if not definition.valid_name(def.name) then return fail("accepted name %q", tostring(def.name)) end
  if type(def.components) ~= "table" or #def.components == 0 then
    return fail("accepted a definition without components")
  end
  local ports = {}
  local next_port = 10000
  for _, comp in ipairs(def.components) do
    local ok, err = no_nul("image", comp.image)
    if not ok then return ok, err end
    ok, err = no_nul("component name", comp.name)
    if not ok then return ok, err end
    for _, v in ipairs(comp.volumes) do
      local inside = under(v.source, "/srv/" .. def.name)
      for _, r in ipairs(ROOTS) do inside = inside or under(v.source, r) end
      if not inside then return fail("volume source %q is outside the roots", v.source) end
      for seg in v.source:gmatch("[^/]+") do
        if seg == ".." or seg == "." then
          return fail("volume source %q is not normalised", v.source)
        end
      end
      ok, err = no_nul("volume source", v.source)
      if not ok then return ok, err end
      ok, err = no_nul("volume destination", v.destination)
      if not ok then return ok, err end
    end
    ports[comp.name] = {}
    for _, r in ipairs(comp.routes) do
      ports[comp.name][r.key] = next_port
      next_port = next_port + 1
    end
  end
  local text = mcp.json.encode(def, { sort = true })
  local back = mcp.json.decode(text)
  if type(back) ~= "table" or back.name ~= def.name then
    return fail("the registry's JSON does not give the definition back: %s", text:sub(1, 200))
  end
  if planner.spec_hash(back) ~= planner.spec_hash(def) then
    return fail("spec_hash changes through the registry's JSON: %s", text:sub(1, 200))
  end
  for _, comp in ipairs(def.components) do
    local spec = definition.container_spec(def, comp, { ports = ports, revision = "r1" })
    if spec.name ~= definition.container_name(def.name, comp.name) then
      return fail("container name %q", spec.name)
    end
    mcp.json.encode(spec)
  end
  local lines = definition.render(def, { ports = ports, revision = "r1" })
  if #lines ~= #def.components then return fail("render gave %d lines", #lines) end
  return true
end

function driver.run(input)
  local raw, err = mcp.toml.decode(input, SOURCE)
  if raw == nil then
    if type(err) ~= "string" or err:sub(1, #SOURCE + 1) ~= SOURCE .. ":" then
      return fail("a TOML error that does not name the file: %s", tostring(err))
    end
    return true
  end
  local def, errs = definition.validate(raw, SOURCE, OPTS)
  if not def then
    if type(errs) ~= "table" or #errs == 0 then return fail("rejected without a message") end
    for _, e in ipairs(errs) do
      if type(e) ~= "string" or e:sub(1, #SOURCE + 1) ~= SOURCE .. ":" then
        return fail("a message that does not name the file: %s", tostring(e))
      end
    end
    return true
  end
  return check_valid(def)
end

return driver
