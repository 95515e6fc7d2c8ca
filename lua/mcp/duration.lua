-- mcp.duration: durations as operators write them ("500ms", "1m30s", 2) and
-- uptimes as `mcp ps` shows them ("2d4h"). Seconds, as a Lua number (float),
-- are the one unit the rest of the agent computes with.
local duration = {}

-- Largest first: a string must name its units in this order, each at most
-- once, so that "1m30s" parses and "30s1m" (almost surely a typo) does not.
local UNITS = { d = 86400, h = 3600, m = 60, s = 1, ms = 0.001 }
local RANK = { d = 1, h = 2, m = 3, s = 4, ms = 5 }

local EXPECTED = 'expected a number of seconds or a string like "500ms", "2s", "1m30s", "1h"'

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    return string.format("\\x%02x", c:byte())
  end) .. '"'
end

local function describe(v)
  local t = type(v)
  if t == "string" then return "string " .. quote(v) end
  if t == "boolean" then return "boolean " .. tostring(v) end
  if t == "table" then return "a table" end
  return "a " .. t
end

-- Parses v into seconds. A number is seconds; so is a string of digits.
-- Returns seconds, or nil and a message that names the value.
function duration.parse(v)
  if type(v) == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      return nil, tostring(v) .. " is not a duration: " .. EXPECTED
    end
    if v < 0 then
      return nil, tostring(v) .. " is negative: expected a duration of 0 or more"
    end
    return v
  end
  if type(v) ~= "string" then
    return nil, EXPECTED .. ", got " .. describe(v)
  end
  local s = v:match("^%s*(.-)%s*$")
  local bare = tonumber(s)
  if bare and s:match("^[%d.]+$") then
    return bare
  end
  if s == "" or s:sub(1, 1) == "-" then
    return nil, quote(v) .. " is not a duration: " .. EXPECTED
  end
  local total, pos, last_rank = 0, 1, 0
  while pos <= #s do
    local num, unit, nxt = s:match("^([%d.]+)(%a+)()", pos)
    local n = num and tonumber(num)
    if not n or not UNITS[unit] then
      return nil, quote(v) .. " is not a duration: " .. EXPECTED
    end
    if RANK[unit] <= last_rank then
      return nil, quote(v) .. " is not a duration: units must go from largest to"
        .. " smallest, each once (d, h, m, s, ms)"
    end
    last_rank = RANK[unit]
    total = total + n * UNITS[unit]
    pos = nxt
  end
  return total
end

-- Formats seconds as an uptime: the two largest non-zero units, truncated
-- ("2d4h", "5h12m", "3m12s", "45s"); under a second, milliseconds ("250ms").
-- Negative or unknown values (a clock step, a missing start time) show "0s"
-- rather than a misleading number.
function duration.format(seconds)
  if type(seconds) ~= "number" or seconds ~= seconds or seconds <= 0 then
    return "0s"
  end
  if seconds == math.huge then return "forever" end
  if seconds < 1 then
    return string.format("%dms", math.floor(seconds * 1000))
  end
  local s = math.floor(seconds)
  local d, h = math.floor(s / 86400), math.floor(s % 86400 / 3600)
  local m, sec = math.floor(s % 3600 / 60), s % 60
  local function two(a, ua, b, ub)
    return string.format("%d%s", a, ua) .. (b > 0 and string.format("%d%s", b, ub) or "")
  end
  if d > 0 then return two(d, "d", h, "h") end
  if h > 0 then return two(h, "h", m, "m") end
  if m > 0 then return two(m, "m", sec, "s") end
  return string.format("%ds", sec)
end

return duration
