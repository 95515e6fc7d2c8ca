-- mcp.backoff: when to restart an unhealthy component again, and when to
-- stop trying because it flaps. Both are state machines over timestamps
-- the caller passes in (seconds, any monotonic clock), and backoff takes
-- its randomness as an argument, so both are exact under test.
--
-- The state is ephemeral on purpose: after an agent restart a component
-- starts from the first delay again, which errs towards trying.
local duration = require("mcp.duration")

local backoff = {}

-- Defaults: first restart after 1s, doubling to at most 5 minutes, up to
-- 10% shorter at random so that components that failed together do not
-- restart together; 10 minutes of health forget the failures.
backoff.DEFAULTS = { first = 1, factor = 2, cap = 300, jitter = 0.1, reset_after = 600 }

local function check_opts(name, opts, defaults, durations)
  local o = {}
  for k, v in pairs(opts or {}) do
    if defaults[k] == nil then
      local known = {}
      for d in pairs(defaults) do known[#known + 1] = d end
      table.sort(known)
      error(name .. ": unknown option " .. tostring(k) .. " (expected "
        .. table.concat(known, ", ") .. ")", 3)
    end
    o[k] = v
  end
  for k, d in pairs(defaults) do
    local v = o[k]
    if v == nil then
      v = d
    elseif durations[k] then
      local s, err = duration.parse(v)
      if not s then error(name .. ": " .. k .. ": " .. err, 3) end
      v = s
    elseif type(v) ~= "number" then
      error(name .. ": " .. k .. ": expected a number, got " .. type(v), 3)
    end
    o[k] = v
  end
  return o
end

local Backoff = {}
Backoff.__index = Backoff

-- backoff.new{first, factor, cap, jitter, reset_after}; first, cap and
-- reset_after take durations ("1s", "5m") or seconds.
function backoff.new(opts)
  local o = check_opts("backoff.new", opts, backoff.DEFAULTS,
    { first = true, cap = true, reset_after = true })
  if o.first <= 0 then error("backoff.new: first must be more than 0", 2) end
  if o.factor < 1 then error("backoff.new: factor must be 1 or more", 2) end
  if o.cap < o.first then error("backoff.new: cap must be at least first", 2) end
  if o.jitter < 0 or o.jitter >= 1 then error("backoff.new: jitter must be in [0, 1)", 2) end
  local b = setmetatable(o, Backoff)
  b.attempts = 0          -- restarts since the last reset
  b.healthy_from = nil    -- start of the current healthy streak
  b.last_delay = nil
  return b
end

-- Forgets the failures when the component has been healthy for reset_after
-- seconds by now. Returns true when it did.
function Backoff:settle(now)
  if self.healthy_from and now - self.healthy_from >= self.reset_after then
    self.attempts = 0
    self.healthy_from = nil
    return true
  end
  return false
end

-- Call on every passing health check. The streak starts at the first call
-- and grows until next_delay() or unhealthy() breaks it. Returns true when
-- this call reset the backoff.
function Backoff:healthy_since(now)
  if not self.healthy_from then self.healthy_from = now end
  return self:settle(now)
end

-- A failing check breaks the healthy streak without counting a restart.
function Backoff:unhealthy()
  self.healthy_from = nil
end

-- The delay before the next restart, in seconds, counting that restart.
-- rand: a number in [0, 1) or a function returning one; math.random when
-- omitted. Jitter only shortens the delay, so cap is a true upper bound.
function Backoff:next_delay(now, rand)
  if now then self:settle(now) end
  self.healthy_from = nil
  local r = rand
  if type(r) == "function" then r = r() end
  if r == nil then r = math.random() end
  local base = math.min(self.cap, self.first * self.factor ^ self.attempts)
  self.attempts = self.attempts + 1
  self.last_delay = base * (1 - self.jitter * r)
  return self.last_delay
end

function Backoff:reset()
  self.attempts = 0
  self.healthy_from = nil
  self.last_delay = nil
end

----------------------------------------------------------------------------
-- Flap detection

local flap = {}
backoff.flap = flap

-- Defaults: more than 5 restarts within 5 minutes is flapping.
flap.DEFAULTS = { max = 5, window = 300 }

local Flap = {}
Flap.__index = Flap

-- flap.new{max, window}; window takes a duration or seconds.
function flap.new(opts)
  local o = check_opts("flap.new", opts, flap.DEFAULTS, { window = true })
  if o.max < 0 or o.max % 1 ~= 0 then error("flap.new: max must be an integer of 0 or more", 2) end
  if o.window <= 0 then error("flap.new: window must be more than 0", 2) end
  local f = setmetatable(o, Flap)
  f.times = {}
  f.flapping = false
  return f
end

local function prune(f, now)
  local keep = {}
  for _, t in ipairs(f.times) do
    if now - t < f.window then keep[#keep + 1] = t end
  end
  f.times = keep
end

-- Records a restart at now. Returns true when the component is flapping:
-- more than max restarts within the last window seconds. Flapping latches
-- until clear(), so a component that flapped is not restarted again just
-- because the window slid past; an operator (or a deploy) clears it.
function Flap:record(now)
  prune(self, now)
  self.times[#self.times + 1] = now
  if #self.times > self.max then self.flapping = true end
  return self.flapping
end

-- Restarts counted within the window ending at now.
function Flap:count(now)
  prune(self, now)
  return #self.times
end

function Flap:is_flapping()
  return self.flapping
end

function Flap:clear()
  self.times = {}
  self.flapping = false
end

return backoff
