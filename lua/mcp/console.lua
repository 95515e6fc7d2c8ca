-- mcp.console: what `mcp-agent console` evaluates, inside the running agent.
--
-- core/console.c owns the socket and calls three functions here:
--   console.session(info)        -> a session table, one per connected client
--   console.eval(session, text)  -> kind, text   (run as a task with the [lua] limits)
--   console.complete(session, w) -> { candidates } (run directly, must not wait)
-- kind is "result" (text: the values, pretty-printed), "error" (text: the
-- message) or "continue" (the chunk is incomplete: the client asks for more).
--
-- Each input is tried first as an expression (`return <text>`), then as a
-- statement, as Knot Resolver's control socket does. Code typed here runs
-- with the JIT off, so the task's instruction budget ends a runaway loop.
local mcp = require("mcp.core")
local jit = require("jit")

local console = {}

-- Helpers: values every console sees, looked up after the console's own
-- globals and before the agent's. console.helper(name, value, usage, doc)
-- adds one; `lazy` ones are computed at each lookup (mcp.podman may appear
-- after this module loads).
console.helpers = {}
console.lazy = {}
console.docs = {}

function console.helper(name, value, usage, doc)
  console.helpers[name] = value
  console.docs[name] = { usage = usage or name, doc = doc or "" }
end

function console.lazy_helper(name, get, usage, doc)
  console.lazy[name] = get
  console.docs[name] = { usage = usage or name, doc = doc or "" }
end

------------------------------------------------------------------------------
-- Text shown as it is (not quoted like a string result).

local text_mt = { __tostring = function(self) return self.text end }

function console.text(s)
  return setmetatable({ text = tostring(s) }, text_mt)
end

------------------------------------------------------------------------------
-- Pretty-printing.

local MAX_ITEMS = 100     -- entries shown per table; the rest is counted
local MAX_DEPTH = 8       -- nesting shown; deeper tables print as {...}
local WIDTH = 78          -- a table whose one-line form is longer is split

local reserved = {}
for w in ([[and break do else elseif end false for function goto if in local nil not
  or repeat return then true until while]]):gmatch("%a+") do
  reserved[w] = true
end

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == "\n" then return "\\n" end
    if c == "\t" then return "\\t" end
    if c == "\r" then return "\\r" end
    if c == '"' or c == "\\" then return "\\" .. c end
    return ("\\%03d"):format(c:byte())
  end) .. '"'
end

local function number_text(v)
  if v == math.floor(v) and v > -2^53 and v < 2^53 then
    return ("%d"):format(v)
  end
  return tostring(v)
end

local function function_text(f)
  if debug and debug.getinfo then
    local info = debug.getinfo(f, "S")
    if info and info.what ~= "C" and info.linedefined >= 0 then
      return ("<function %s:%d>"):format(info.short_src, info.linedefined)
    end
  end
  return "<" .. tostring(f) .. ">"
end

local type_rank = { number = 1, string = 2, boolean = 3 }

local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then
    return (type_rank[ta] or 4) < (type_rank[tb] or 4) or
      ((type_rank[ta] or 4) == (type_rank[tb] or 4) and ta < tb)
  end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local render

local function key_text(k, seen, depth)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") and not reserved[k] then
    return k
  end
  return "[" .. render(k, seen, depth + 1, "") .. "]"
end

local function table_text(t, seen, depth, indent)
  local mt = getmetatable(t)
  if type(mt) == "table" and rawget(mt, "__tostring") then
    local ok, s = pcall(tostring, t)
    if ok and type(s) == "string" then return s end
  end
  if seen[t] then return "<cycle>" end
  if next(t) == nil then return "{}" end
  if depth >= MAX_DEPTH then return "{...}" end
  seen[t] = true

  -- The array part first, in order; then the other keys, sorted.
  local n = 0
  while rawget(t, n + 1) ~= nil do n = n + 1 end
  local keys, total = {}, n
  for k in next, t do
    if not (type(k) == "number" and k >= 1 and k <= n and k == math.floor(k)) then
      keys[#keys + 1] = k
      total = total + 1
    end
  end
  if #keys <= 10000 then table.sort(keys, key_less) end

  local inner = indent .. "  "
  local items, multi, width = {}, false, #indent + 4
  local shown = 0
  for i = 1, n do
    if shown == MAX_ITEMS then break end
    local s = render(rawget(t, i), seen, depth + 1, inner)
    items[#items + 1] = s
    shown = shown + 1
  end
  for _, k in ipairs(keys) do
    if shown == MAX_ITEMS then break end
    local s = key_text(k, seen, depth) .. " = " .. render(rawget(t, k), seen, depth + 1, inner)
    items[#items + 1] = s
    shown = shown + 1
  end
  if total > shown then
    items[#items + 1] = ("... (%d more)"):format(total - shown)
  end
  seen[t] = nil

  for _, s in ipairs(items) do
    width = width + #s + 2
    if s:find("\n", 1, true) then multi = true end
  end
  if not multi and width <= WIDTH then
    return "{ " .. table.concat(items, ", ") .. " }"
  end
  if not multi and #keys == 0 then
    -- A long list of short values: as many per line as fit.
    local lines, line = {}, nil
    for _, s in ipairs(items) do
      if line and #inner + #line + #s + 2 > WIDTH then
        lines[#lines + 1] = line .. ","
        line = nil
      end
      line = line and line .. ", " .. s or s
    end
    lines[#lines + 1] = line .. ","
    return "{\n" .. inner .. table.concat(lines, "\n" .. inner) .. "\n" .. indent .. "}"
  end
  return "{\n" .. inner .. table.concat(items, ",\n" .. inner) .. ",\n" .. indent .. "}"
end

render = function(v, seen, depth, indent)
  local tv = type(v)
  if tv == "string" then return quote(v) end
  if tv == "number" then return number_text(v) end
  if tv == "table" then return table_text(v, seen, depth, indent) end
  if tv == "function" then return function_text(v) end
  if tv == "nil" or tv == "boolean" then return tostring(v) end
  return "<" .. tostring(v) .. ">"
end

-- console.pretty(v) -> the text the console shows for v.
function console.pretty(v)
  return render(v, {}, 0, "")
end

-- The values r[first..last] as the console shows them: on one line,
-- separated by ", ", when each fits on one; else one below the other.
local function results_text(r, first, last)
  local parts, multi = {}, false
  for i = first, last do
    parts[#parts + 1] = console.pretty(r[i])
    if parts[#parts]:find("\n", 1, true) then multi = true end
  end
  return table.concat(parts, multi and "\n" or ", ")
end

------------------------------------------------------------------------------
-- Rows: a list of records as aligned columns (ps(), tasks(), events()).

local preferred = { "id", "time", "service", "name", "component", "kind", "type", "event",
  "state", "version", "uptime", "health", "waiting", "message" }

local function scalar(v)
  local t = type(v)
  return t == "string" or t == "number" or t == "boolean"
end

-- One cell: a list of scalars joined by ",", an epoch `time` as UTC.
local function cell_text(column, v)
  if v == nil then return "-" end
  if column == "time" and type(v) == "number" and v > 1e8 then
    return os.date("!%Y-%m-%d %H:%M:%S", math.floor(v))
  end
  if scalar(v) then return tostring(v) end
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do
      if not scalar(x) then return console.pretty(v) end
      parts[i] = tostring(x)
    end
    if #parts > 0 or next(v) == nil then
      return #parts > 0 and table.concat(parts, ",") or "-"
    end
  end
  return console.pretty(v)
end

-- console.rows(list, columns) -> text: one line per record, a header of the
-- column names in capitals. Without columns: the scalar fields of the
-- records, the usual ones (id, service, name, state, ...) first.
function console.rows(list, columns)
  if type(list) ~= "table" then return list end
  if #list == 0 then return console.text("(none)") end
  if not columns then
    local present, rest, rank = {}, {}, {}
    for i, c in ipairs(preferred) do rank[c] = i end
    for _, row in ipairs(list) do
      if type(row) ~= "table" then return list end
      for k, v in pairs(row) do
        if type(k) == "string" and scalar(v) and not present[k] then
          present[k] = true
          rest[#rest + 1] = k
        end
      end
    end
    table.sort(rest, function(a, b)
      local ra, rb = rank[a] or 1000, rank[b] or 1000
      if ra ~= rb then return ra < rb end
      return a < b
    end)
    columns = rest
  end
  local cells, widths = {}, {}
  for j, c in ipairs(columns) do widths[j] = #c end
  for i, row in ipairs(list) do
    cells[i] = {}
    for j, c in ipairs(columns) do
      local v = type(row) == "table" and row[c]
      cells[i][j] = cell_text(c, v)
      local s = cells[i][j]
      if #s > widths[j] then widths[j] = #s end
    end
  end
  local function line(values)
    local out = {}
    for j, s in ipairs(values) do
      out[j] = j < #values and s .. (" "):rep(widths[j] - #s) or s
    end
    return table.concat(out, "  ")
  end
  local head = {}
  for j, c in ipairs(columns) do head[j] = c:upper() end
  local lines = { line(head) }
  for i = 1, #cells do lines[#lines + 1] = line(cells[i]) end
  return console.text(table.concat(lines, "\n"))
end

------------------------------------------------------------------------------
-- The helpers. Those that need the agent's logic call mcp.agent, the lead's
-- module; a build without the function says so instead of guessing.

local function agent_fn(name, shown)
  local ok, agent = pcall(require, "mcp.agent")
  local f = ok and type(agent) == "table" and rawget(agent, name)
  if type(f) ~= "function" then
    error(("%s: not available in this build (mcp.agent.%s is missing)"):format(shown, name), 0)
  end
  return f
end

-- Calls mcp.agent.NAME(...); turns the `nil, err` channel into an error.
local function agent_call(name, shown, ...)
  local r = { n = 0 }
  local function pack(...) r = { n = select("#", ...), ... } end
  pack(agent_fn(name, shown)(...))
  if r[1] == nil and r.n >= 2 and r[2] ~= nil then
    error(shown .. ": " .. tostring(r[2]), 0)
  end
  return unpack(r, 1, r.n)
end

local function shown_as_text(v, ...)
  if type(v) == "string" then return console.text(v), ... end
  return v, ...
end

local function as_rows(list, columns, ...)
  if type(list) == "table" and next(list) == nil then return console.text("(none)") end
  if type(list) == "table" and type(columns) == "table" then
    return console.rows(list, columns)
  end
  if type(list) == "table" and #list > 0 and next(list, #list) == nil then
    return console.rows(list)
  end
  return shown_as_text(list, columns, ...)
end

local PS_COLUMNS = { "service", "component", "state", "version", "uptime", "health", "ports" }

console.helper("ps", function()
  local rows = agent_call("ps", "ps()")
  if type(rows) == "table" and #rows > 0 and type(rows[1]) == "table" then
    return console.rows(rows, PS_COLUMNS)
  end
  return as_rows(rows)
end, "ps()", "containers of this node: service, component, state, version, uptime, health")

console.helper("services", function()
  return as_rows(agent_call("services", "services()"))
end, "services()", "the service definitions loaded, with their state")

console.helper("show", function(name)
  if type(name) ~= "string" then error("show(name): name must be a service name", 2) end
  return shown_as_text(agent_call("show", "show()", name))
end, "show(name)", "one service: its definition, containers, ports and health")

console.helper("events", function(n)
  if n ~= nil and type(n) ~= "number" then error("events(n): n must be a number", 2) end
  return as_rows(agent_call("events", "events()", n or 20))
end, "events(n)", "the last n events (default 20)")

console.helper("health", {
  run = function(name)
    if type(name) ~= "string" then
      error("health.run(name): name must be a service name", 2)
    end
    return shown_as_text(agent_call("health_run", "health.run()", name))
  end,
}, "health.run(name)", "runs a service's health checks once and waits for the answer")

console.helper("reload", function()
  local r = agent_call("reload", "reload()", "console")
  if type(r) == "table" and r.generation and r.files then
    return console.text(("generation %s \226\134\146 %s: %d files, %s ms"):format(
      tostring(r.previous or "none"), tostring(r.generation), r.files,
      r.took_ms and ("%.0f"):format(r.took_ms) or "?"))
  end
  return shown_as_text(r)
end, "reload()", "reloads definitions, policies and the Lua library now")

console.helper("last_error", function()
  local err = agent_call("last_reload_error", "last_error()")
  if err == nil then return console.text("no reload error") end
  return shown_as_text(err)
end, "last_error()", "the error of the last failed reload, if any")

console.helper("tasks", function()
  return console.rows(mcp.task.list(), { "id", "name", "waiting" })
end, "tasks()", "the agent's live tasks (mcp.task.list())")

console.lazy_helper("podman", function() return mcp.podman end, "podman",
  "mcp.podman, the Podman bindings")
console.lazy_helper("config", function() return mcp.config end, "config",
  "mcp.config, the agent's configuration")
console.lazy_helper("agent", function()
  local ok, agent = pcall(require, "mcp.agent")
  return ok and agent or nil
end, "agent", "mcp.agent, the agent's Lua side")

------------------------------------------------------------------------------
-- Sessions.

-- The module as it is now: a reload may have replaced this one, and a
-- session opened before it should see the new helpers.
local function current()
  local m = package.loaded["mcp.console"]
  return type(m) == "table" and m.helpers and m or console
end

local function lookup(k)
  local m = current()
  local v = m.helpers[k]
  if v ~= nil then return v end
  local get = m.lazy[k]
  if get then
    v = get()
    if v ~= nil then return v end
  end
  return _G[k]
end

local function new_env()
  return setmetatable({}, { __index = function(_, k) return lookup(k) end })
end

function console.session(info)
  return { id = info and info.id, uid = info and info.uid, env = new_env(), trace = nil }
end

------------------------------------------------------------------------------
-- Evaluation.

local function incomplete(err)
  return type(err) == "string" and err:find("<eof>'?$") ~= nil
end

local function identity(...) return ... end

-- An expression runs as `return (...)(EXPR\n)` with identity as the chunk's
-- argument: the same values as `return EXPR`, but a call in EXPR is not a
-- tail call, so error("x") keeps its "console:1:" position.
local function compile_expr(s, expr)
  local fn, err = load("return " .. expr, "=console", "t", s.env)
  if not fn then return nil, err end
  return load("return (...)(" .. expr .. "\n)", "=console", "t", s.env)
end

-- Returns fn, or nil, err, more (more: the chunk may yet become valid).
local function compile(s, text)
  if text:sub(1, 1) == "=" then
    local fn, err = compile_expr(s, text:sub(2))
    return fn, err, not fn and incomplete(err)
  end
  local fn, err_expr = compile_expr(s, text)
  if fn then return fn end
  local fn2, err = load(text, "=console", "t", s.env)
  if fn2 then return fn2 end
  return nil, err, incomplete(err) or incomplete(err_expr)
end

local function error_text(e)
  if type(e) == "string" then return e end
  local mt = getmetatable(e)
  if type(mt) == "table" and rawget(mt, "__tostring") then
    local ok, s = pcall(tostring, e)
    if ok then return s end
  end
  return "error: " .. console.pretty(e)
end

local commands = {}

function console.eval(s, text)
  local cmd, arg = text:match("^%s*:(%a+)%s*(.-)%s*$")
  if cmd then
    local f = commands[cmd]
    if not f then
      return "error", (":%s: unknown command (try :help)"):format(cmd)
    end
    return f(s, arg)
  end
  if not text:find("%S") then return "result", "" end

  local fn, err, more = compile(s, text)
  if not fn then
    return more and "continue" or "error", err
  end
  -- The budget holds only for interpreted code; functions defined in the
  -- chunk inherit the mode.
  jit.off(fn, true)
  local trace
  local r = { n = 0 }
  local function pack(...) r = { n = select("#", ...), ... } end
  pack(xpcall(fn, function(e)
    trace = debug.traceback(error_text(e), 2)
    return e
  end, identity))
  if not r[1] then
    s.trace = trace
    return "error", error_text(r[2])
  end
  if r.n >= 2 then rawset(s.env, "_", r[2]) end
  return "result", results_text(r, 2, r.n)
end

------------------------------------------------------------------------------
-- Commands (a line starting with ':').

function commands.help()
  local names, lines = {}, {}
  local docs = current().docs
  for name in pairs(docs) do names[#names + 1] = name end
  table.sort(names)
  local width = 0
  for _, name in ipairs(names) do width = math.max(width, #docs[name].usage) end
  lines[#lines + 1] = "helpers:"
  for _, name in ipairs(names) do
    local d = docs[name]
    lines[#lines + 1] = ("  %-" .. width .. "s  %s"):format(d.usage, d.doc)
  end
  for _, l in ipairs({
    "  mcp" .. (" "):rep(math.max(width - 3, 0)) .. "  the whole mcp namespace (Tab completes names)",
    "",
    "commands:",
    "  :help   this text",
    "  :trace  the traceback of the last error",
    "  :env    the globals set at this console",
    "  :reset  forgets them",
    "  :quit   leaves (or Ctrl-D)",
    "",
    "An expression prints its value (=expr too); a statement runs; `_` is the",
    "last value. Globals you set stay in this console; _G.x sets the agent's.",
    "Input continues (>>) while a statement is incomplete. Ctrl-C aborts an",
    "evaluation that waits (Podman, sleep); code that only computes stops at",
    "its instruction budget ([lua] task_instructions).",
  }) do
    lines[#lines + 1] = l
  end
  return "result", table.concat(lines, "\n")
end

function commands.trace(s)
  return "result", s.trace or "no error yet"
end

function commands.env(s)
  local names = {}
  for k in pairs(s.env) do names[#names + 1] = tostring(k) end
  table.sort(names)
  if #names == 0 then return "result", "(no globals set at this console)" end
  return "result", table.concat(names, "  ")
end

function commands.reset(s)
  s.env = new_env()
  s.trace = nil
  return "result", "console globals cleared"
end

function commands.quit()
  return "result", ""
end
commands.q = commands.quit

------------------------------------------------------------------------------
-- Completion: names in scope and fields of tables, read without calling any
-- function (rawget and __index tables only), so it never waits or runs code.

local MAX_CANDIDATES = 500

local function field(v, k)
  for _ = 1, 10 do
    if type(v) == "string" then return string[k] end
    if type(v) ~= "table" then return nil end
    local x = rawget(v, k)
    if x ~= nil then return x end
    local mt = getmetatable(v)
    v = type(mt) == "table" and rawget(mt, "__index") or nil
  end
  return nil
end

local function add_keys(v, out)
  for _ = 1, 10 do
    if type(v) == "string" then v = string end
    if type(v) ~= "table" then return end
    for k in next, v do
      if type(k) == "string" and out[k] == nil then out[k] = rawget(v, k) end
    end
    local mt = getmetatable(v)
    v = type(mt) == "table" and rawget(mt, "__index") or nil
  end
end

function console.complete(s, word)
  local head, sep, partial = word:match("^(.-)([%.:])([%w_]*)$")
  local names = {}
  if not head then
    partial = word
    add_keys(_G, names)
    local m = current()
    for k, v in pairs(m.helpers) do names[k] = v end
    for k in pairs(m.lazy) do names[k] = true end
    for k, v in pairs(s.env) do if type(k) == "string" then names[k] = v end end
    for k in pairs(reserved) do names[k] = names[k] or true end
    head, sep = "", ""
  else
    local v, first = nil, true
    for part in (head .. "."):gmatch("([^%.:]*)[%.:]") do
      if not part:match("^[%a_][%w_]*$") then return {} end
      if first then
        v = rawget(s.env, part)
        if v == nil then v = lookup(part) end
        first = false
      else
        v = field(v, part)
      end
      if v == nil then return {} end
    end
    add_keys(v, names)
  end
  local out = {}
  for k, v in pairs(names) do
    if k:sub(1, #partial) == partial and k:match("^[%a_][%w_]*$")
      and (sep ~= ":" or type(v) == "function") then
      out[#out + 1] = head .. sep .. k
      if #out >= MAX_CANDIDATES then break end
    end
  end
  table.sort(out)
  return out
end

return console
