-- tests/lib/openapi.lua: reads docs/openapi.yaml and checks answers against it.
--
--   local openapi = require("tests.lib.openapi")
--   local spec = openapi.load("docs/openapi.yaml")
--   openapi.find(spec, "GET", "/v1/services/{name}")          -- a route documented?
--   openapi.check_response(spec, "GET", "/v1/services/web", 200,
--     "application/json", body)                                -- true, or nil, why
--   openapi.validate(spec, schema, value)                      -- true, or nil, why
--
-- The YAML reader knows the subset the spec is written in: block mappings
-- and sequences (two-space indents), plain, "double" and 'single' quoted
-- scalars, | and > block scalars, [flow, sequences] of scalars, {} and
-- comments. Anything else is an error naming the line, never a guess.
-- Schemas: type (with nullable), required, properties, additionalProperties,
-- items, enum, oneOf/anyOf/allOf, minimum/maximum, $ref into the document.
local openapi = {}

----------------------------------------------------------------------------
-- YAML subset
----------------------------------------------------------------------------

local function yaml_error(file, n, msg)
  error(string.format("%s:%d: %s", file, n, msg), 0)
end

-- Strips a comment (" #..." outside quotes) and trailing space.
local function strip_comment(s)
  local q
  for i = 1, #s do
    local c = s:sub(i, i)
    if q then
      if c == q then q = nil end
    elseif c == '"' or c == "'" then
      q = c
    elseif c == "#" and (i == 1 or s:sub(i - 1, i - 1):match("%s")) then
      return (s:sub(1, i - 1):gsub("%s+$", ""))
    end
  end
  return (s:gsub("%s+$", ""))
end

local function scalar(text, file, n)
  if text:sub(1, 1) == '"' then
    if not text:match('^".*"$') then yaml_error(file, n, "unterminated \"string\"") end
    local body = text:sub(2, -2)
    local out = body:gsub('\\(.)', { n = "\n", t = "\t", ['"'] = '"', ["\\"] = "\\",
      ["/"] = "/" })
    return out
  elseif text:sub(1, 1) == "'" then
    if not text:match("^'.*'$") then yaml_error(file, n, "unterminated 'string'") end
    return (text:sub(2, -2):gsub("''", "'"))
  elseif text == "{}" then
    return {}
  elseif text:sub(1, 1) == "[" then
    if text:sub(-1) ~= "]" then yaml_error(file, n, "unterminated [flow sequence]") end
    local out, inner = {}, text:sub(2, -2)
    if inner:match("^%s*$") then return out end
    local item, q = "", nil
    for i = 1, #inner + 1 do
      local c = i <= #inner and inner:sub(i, i) or ","
      if q then
        item = item .. c
        if c == q then q = nil end
      elseif c == '"' or c == "'" then
        item, q = item .. c, c
      elseif c == "," then
        out[#out + 1] = scalar((item:gsub("^%s+", ""):gsub("%s+$", "")), file, n)
        item = ""
      elseif c == "[" or c == "{" then
        yaml_error(file, n, "nested flow collections are not in the subset")
      else
        item = item .. c
      end
    end
    return out
  elseif text:match("^[{&*!|>%%@`]") then
    yaml_error(file, n, "unsupported YAML: " .. text)
  elseif text == "true" then return true
  elseif text == "false" then return false
  elseif text == "null" or text == "~" then return openapi.null
  elseif text:match("^-?%d+$") or text:match("^-?%d+%.%d+$") then return tonumber(text)
  end
  return text
end

-- Splits "key: rest" (key plain or quoted). Returns key, rest or nil.
local function split_key(text)
  local key, rest
  if text:sub(1, 1) == '"' or text:sub(1, 1) == "'" then
    local q = text:sub(1, 1)
    local close = text:find(q, 2, true)
    if not close then return nil end
    key = text:sub(2, close - 1)
    rest = text:sub(close + 1)
    if rest ~= ":" and rest:sub(1, 2) ~= ": " then return nil end
    return key, (rest:sub(2):gsub("^%s+", ""))
  end
  local i = text:find(":%s") or (text:sub(-1) == ":" and #text)
  if not i then return nil end
  key = text:sub(1, i - 1)
  rest = text:sub(i + 1):gsub("^%s+", "")
  return key, rest
end

local function parse_lines(text, file)
  local lines = {}
  local n = 0
  for raw in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if raw:find("\t") and raw:match("^%s*\t") then yaml_error(file, n, "tab in indentation") end
    local indent = #raw:match("^ *")
    local content = strip_comment(raw:sub(indent + 1))
    lines[#lines + 1] = { n = n, indent = indent, text = content, raw = raw }
  end
  return lines
end

local parse_block

-- Skips blank lines from i; returns the index of the next line with content.
local function next_content(lines, i)
  while lines[i] and lines[i].text == "" do i = i + 1 end
  return i
end

-- A | or > scalar: every following line indented deeper than parent_indent.
local function block_scalar(lines, i, parent_indent, style)
  local parts, min = {}, nil
  while lines[i] and (lines[i].text == "" or lines[i].indent > parent_indent) do
    local l = lines[i]
    if l.text ~= "" then
      min = min or l.indent
      parts[#parts + 1] = l.raw:sub(min + 1)
    else
      parts[#parts + 1] = ""
    end
    i = i + 1
  end
  while parts[#parts] == "" do parts[#parts] = nil end
  local s
  if style == "|" then
    s = table.concat(parts, "\n") .. "\n"
  else
    s = table.concat(parts, " "):gsub("  +", " ") .. "\n"
  end
  return s, i
end

local function value_after(lines, i, indent, rest, file, ctx_indent)
  if rest == "" then
    local j = next_content(lines, i + 1)
    local l = lines[j]
    if l and (l.indent > ctx_indent or (l.indent == ctx_indent and l.text:sub(1, 1) == "-"
        and (l.text == "-" or l.text:sub(1, 2) == "- "))) then
      return parse_block(lines, j, l.indent, file)
    end
    return openapi.null, i + 1
  elseif rest == "|" or rest == ">" then
    return block_scalar(lines, i + 1, indent, rest)
  end
  return scalar(rest, file, lines[i].n), i + 1
end

local function parse_mapping(lines, i, indent, file)
  local map = {}
  while true do
    i = next_content(lines, i)
    local l = lines[i]
    if not l or l.indent < indent then break end
    if l.indent > indent then yaml_error(file, l.n, "unexpected indentation") end
    if l.text:sub(1, 2) == "- " or l.text == "-" then break end
    local key, rest = split_key(l.text)
    if not key then yaml_error(file, l.n, "expected \"key: value\", got: " .. l.text) end
    if map[key] ~= nil then yaml_error(file, l.n, "key \"" .. key .. "\" twice") end
    map[key], i = value_after(lines, i, indent, rest, file, indent)
  end
  return map, i
end

local function parse_sequence(lines, i, indent, file)
  local seq = {}
  while true do
    i = next_content(lines, i)
    local l = lines[i]
    if not l or l.indent < indent then break end
    if l.indent > indent then yaml_error(file, l.n, "unexpected indentation") end
    if not (l.text == "-" or l.text:sub(1, 2) == "- ") then break end
    local item = l.text:sub(3)
    if item == "" then
      local j = next_content(lines, i + 1)
      if lines[j] and lines[j].indent > indent then
        seq[#seq + 1], i = parse_block(lines, j, lines[j].indent, file)
      else
        seq[#seq + 1], i = openapi.null, i + 1
      end
    elseif split_key(item) and item:sub(1, 1) ~= "[" then
      -- "- key: value" opens a mapping whose keys sit two columns in.
      l.indent, l.text = indent + 2, item
      seq[#seq + 1], i = parse_mapping(lines, i, indent + 2, file)
    else
      seq[#seq + 1], i = scalar(item, file, l.n), i + 1
    end
  end
  return seq, i
end

parse_block = function(lines, i, indent, file)
  local l = lines[i]
  if l.text == "-" or l.text:sub(1, 2) == "- " then
    return parse_sequence(lines, i, indent, file)
  end
  return parse_mapping(lines, i, indent, file)
end

-- The JSON null of decoded answers; YAML null reads as the same value.
local ok_core, mcp = pcall(require, "mcp.core")
openapi.null = ok_core and mcp.json.null or setmetatable({}, { __tostring = function()
  return "null" end })

-- openapi.parse_yaml(text [, name]) -> value; raises "name:line: what".
function openapi.parse_yaml(text, name)
  name = name or "<yaml>"
  local lines = parse_lines(text, name)
  local i = next_content(lines, 1)
  if not lines[i] then return openapi.null end
  if lines[i].indent ~= 0 then
    yaml_error(name, lines[i].n, "the document must start at column 1")
  end
  local v, j = parse_block(lines, i, 0, name)
  j = next_content(lines, j)
  if lines[j] then yaml_error(name, lines[j].n, "unexpected content: " .. lines[j].text) end
  return v
end

----------------------------------------------------------------------------
-- The document
----------------------------------------------------------------------------

-- openapi.load(path) -> spec (the document, with helpers' state).
function openapi.load(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  local doc = openapi.parse_yaml(text, path)
  if type(doc) ~= "table" or type(doc.paths) ~= "table" then
    error(path .. ": not an OpenAPI document (no paths)", 0)
  end
  return doc
end

-- Follows a local $ref ("#/components/schemas/X").
function openapi.resolve(spec, node)
  local seen = 0
  while type(node) == "table" and node["$ref"] do
    local ref = node["$ref"]
    local cur = spec
    for part in ref:gsub("^#/", ""):gmatch("[^/]+") do
      part = part:gsub("~1", "/"):gsub("~0", "~")
      cur = type(cur) == "table" and cur[part] or nil
    end
    if cur == nil then error("unresolved $ref " .. ref, 0) end
    node = cur
    seen = seen + 1
    if seen > 50 then error("$ref loop at " .. ref, 0) end
  end
  return node
end

local function split(path)
  local segs = {}
  for seg in (path:sub(2) .. "/"):gmatch("([^/]*)/") do segs[#segs + 1] = seg end
  return segs
end

-- Does a concrete path (or a route pattern, {p...} for a rest parameter)
-- match the template of a path item?
local function template_matches(template, item, path)
  local ts, ps = split(template), split(path)
  local rest = type(item) == "table" and item["x-rest-parameter"]
  for i, t in ipairs(ts) do
    local p = ps[i]
    if p == nil or p == "" then return false end
    local pname = t:match("^{(.+)}$")
    if pname then
      if pname == rest and i == #ts then return true end
    elseif t ~= p then
      return false
    end
  end
  return #ts == #ps
end

local METHODS = { get = true, put = true, post = true, delete = true, patch = true,
  head = true, options = true }

-- openapi.find(spec, method, pattern_or_path) -> operation, template, path
-- item; nil when not documented. A route pattern's {p...} is a rest
-- parameter, documented as {p} with x-rest-parameter: p.
function openapi.find(spec, method, path)
  local m = method:lower()
  local exact = path:gsub("{([%w_]+)%.%.%.}", "{%1}")
  local item = spec.paths[exact]
  if item and item[m] then return item[m], exact, item end
  for template, it in pairs(spec.paths) do
    if template_matches(template, it, path) and it[m] then return it[m], template, it end
  end
  if m == "head" then return openapi.find(spec, "GET", path) end
  return nil
end

-- Every documented operation: { {method = "GET", path = "/v1/x"}, ... }.
function openapi.operations(spec)
  local out = {}
  for template, item in pairs(spec.paths) do
    for m, op in pairs(item) do
      if METHODS[m] then out[#out + 1] = { method = m:upper(), path = template, op = op } end
    end
  end
  table.sort(out, function(a, b) return a.path .. a.method < b.path .. b.method end)
  return out
end

----------------------------------------------------------------------------
-- Schemas
----------------------------------------------------------------------------

local function is_array(v)
  local mt = getmetatable(v)
  if mt and mt.__jsontype then return mt.__jsontype == "array" end
  if next(v) == nil then return nil end       -- empty: either
  return #v > 0 and next(v, #v) == nil
end

local function type_of(v)
  if v == openapi.null then return "null" end
  local t = type(v)
  if t == "table" then
    local a = is_array(v)
    if a == nil then return "empty" end
    return a and "array" or "object"
  elseif t == "number" then
    return v == math.floor(v) and "integer" or "number"
  elseif t == "string" then return "string"
  elseif t == "boolean" then return "boolean"
  end
  return t
end

local function type_ok(want, got)
  if want == got then return true end
  if got == "empty" then return want == "array" or want == "object" end
  if want == "number" and got == "integer" then return true end
  return false
end

local validate

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  if v == openapi.null then return "null" end
  return tostring(v)
end

validate = function(spec, schema, v, where)
  schema = openapi.resolve(spec, schema)
  if type(schema) ~= "table" then return true end
  if v == openapi.null or v == nil then
    if schema.nullable or schema.type == nil and not schema.enum then return true end
    return nil, where .. ": null where " .. tostring(schema.type) .. " is expected"
  end
  if schema.allOf then
    for _, s in ipairs(schema.allOf) do
      local ok, why = validate(spec, s, v, where)
      if not ok then return nil, why end
    end
  end
  local any = schema.oneOf or schema.anyOf
  if any then
    local whys = {}
    for _, s in ipairs(any) do
      local ok, why = validate(spec, s, v, where)
      if ok then whys = nil break end
      whys[#whys + 1] = why
    end
    if whys then return nil, where .. ": matches none of: " .. table.concat(whys, "; ") end
  end
  local got = type_of(v)
  if schema.type and not type_ok(schema.type, got) then
    return nil, string.format("%s: expected %s, got %s", where, schema.type,
      got == "empty" and "an empty table" or got)
  end
  if schema.enum then
    local found = false
    for _, e in ipairs(schema.enum) do if e == v then found = true end end
    if not found then
      local list = {}
      for i, e in ipairs(schema.enum) do list[i] = show(e) end
      return nil, string.format("%s: %s is not one of %s", where, show(v),
        table.concat(list, ", "))
    end
  end
  if type(v) == "number" then
    if schema.minimum and v < schema.minimum then
      return nil, string.format("%s: %s is below the minimum %s", where, show(v), schema.minimum)
    end
    if schema.maximum and v > schema.maximum then
      return nil, string.format("%s: %s is above the maximum %s", where, show(v), schema.maximum)
    end
  end
  if type(v) == "string" and schema.pattern and not openapi.regex_ok(schema.pattern, v) then
    return nil, string.format("%s: %s does not match %s", where, show(v), schema.pattern)
  end
  if type(v) == "table" and (got == "object" or got == "empty") then
    for _, k in ipairs(schema.required or {}) do
      if v[k] == nil then return nil, string.format("%s: %s is required", where, k) end
    end
    local props = schema.properties or {}
    for k, val in pairs(v) do
      local ps = props[k]
      if ps then
        local ok, why = validate(spec, ps, val, where .. "." .. tostring(k))
        if not ok then return nil, why end
      elseif schema.additionalProperties == false then
        return nil, string.format("%s: unexpected property %s", where, tostring(k))
      elseif type(schema.additionalProperties) == "table" then
        local ok, why = validate(spec, schema.additionalProperties, val,
          where .. "." .. tostring(k))
        if not ok then return nil, why end
      end
    end
  end
  if type(v) == "table" and (got == "array" or got == "empty") and schema.items then
    for i, item in ipairs(v) do
      local ok, why = validate(spec, schema.items, item, string.format("%s[%d]", where, i))
      if not ok then return nil, why end
    end
  end
  return true
end

-- A few regular expressions are in the spec (name patterns); those of the
-- form ^[class][class]{m,n}$ are checked, others pass.
function openapi.regex_ok(pattern, s)
  local first, rest, lo, hi = pattern:match("^%^(%[[^%]]+%])(%[[^%]]+%]){(%d+),(%d+)}%$$")
  if not first then return true end
  local function lua_class(c) return (c:gsub("%-", "%%-"):gsub("%%%-(%w)", "-%1")) end
  local lp = "^" .. lua_class(first) .. lua_class(rest) .. "*$"
  local n = #s - 1
  return s:match(lp) ~= nil and n >= tonumber(lo) and n <= tonumber(hi)
end

-- openapi.validate(spec, schema, value [, where]) -> true, or nil and
-- "$.path.to[2].field: what is wrong".
function openapi.validate(spec, schema, value, where)
  return validate(spec, schema, value, where or "$")
end

----------------------------------------------------------------------------
-- Answers
----------------------------------------------------------------------------

local function decode_json(text)
  if not ok_core then error("tests/lib/openapi.lua: JSON needs mcp.core", 0) end
  return mcp.json.decode(text)
end

local function response_for(op, status)
  local r = op.responses or {}
  local s = tostring(status)
  return r[s] or r[s:sub(1, 1) .. "XX"] or r.default
end

-- openapi.check_response(spec, method, path, status, content_type, body) ->
-- true, or nil and why. path is concrete (/v1/services/web). Answers to
-- undocumented paths or methods pass only as 404/405 in the error shape.
function openapi.check_response(spec, method, path, status, content_type, body)
  local op, template = openapi.find(spec, method, path)
  local resp
  if not op then
    if status ~= 404 and status ~= 405 then
      return nil, string.format("%s %s is not documented", method, path)
    end
    resp = openapi.resolve(spec, spec.components.responses.Error)
    template = "(undocumented)"
  else
    resp = openapi.resolve(spec, response_for(op, status))
    if not resp then
      return nil, string.format("%s %s: status %d is not documented", method, template, status)
    end
  end
  local content = resp.content
  body = body or ""
  if not content then
    if body ~= "" then
      return nil, string.format("%s %s -> %d: a body where none is documented", method,
        template, status)
    end
    return true
  end
  if method == "HEAD" or (body == "" and status == 204) then return true end
  local ct = (content_type or ""):lower():match("^%s*([^;%s]+)") or ""
  local media = content[ct]
  if not media then
    local known = {}
    for k in pairs(content) do known[#known + 1] = k end
    table.sort(known)
    return nil, string.format("%s %s -> %d: content type %q is not documented (%s)", method,
      template, status, ct, table.concat(known, ", "))
  end
  local schema = media.schema
  if ct == "application/json" or ct:match("%+json$") then
    local v, err = decode_json(body)
    if v == nil then return nil, string.format("%s %s -> %d: not JSON: %s", method, template,
      status, tostring(err)) end
    local ok, why = openapi.validate(spec, schema, v)
    if not ok then return nil, string.format("%s %s -> %d: %s", method, template, status, why) end
  elseif ct == "application/x-ndjson" then
    local n = 0
    for line in body:gmatch("[^\n]+") do
      n = n + 1
      local v, err = decode_json(line)
      if v == nil then
        return nil, string.format("%s %s -> %d: line %d is not JSON: %s", method, template,
          status, n, tostring(err))
      end
      local ok, why = openapi.validate(spec, schema, v, string.format("line %d", n))
      if not ok then
        return nil, string.format("%s %s -> %d: %s", method, template, status, why)
      end
    end
  end
  return true
end

return openapi
