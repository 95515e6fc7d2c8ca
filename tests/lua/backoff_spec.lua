-- Specs for mcp.backoff: restart delays and flap detection as state machines
-- over explicit timestamps, with the randomness passed in.
local backoff = require("mcp.backoff")
local flap = backoff.flap

describe("backoff", function()
  local function delays(b, n, rand)
    local out = {}
    for i = 1, n do out[i] = b:next_delay(i, rand) end
    return out
  end

  it("waits 1s, then doubles up to 5 minutes by default", function()
    local b = backoff.new()
    assert.are.same({ 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300 }, delays(b, 11, 0))
  end)

  it("documents its defaults", function()
    assert.are.same({ first = 1, factor = 2, cap = 300, jitter = 0.1, reset_after = 600 },
      backoff.DEFAULTS)
  end)

  it("shortens each delay by up to the jitter fraction, never lengthening it", function()
    local b = backoff.new{ first = 10, jitter = 0.1 }
    assert.are.equal(10, b:next_delay(0, 0))
    assert.are.equal(20 * 0.95, b:next_delay(0, 0.5))
    assert.is_true(b:next_delay(0, 0.999999) > 40 * 0.9)
  end)

  it("never waits longer than cap, jitter or not", function()
    local b = backoff.new{ first = 1, factor = 10, cap = 30 }
    for i = 1, 20 do assert.is_true(b:next_delay(i, (i % 10) / 10) <= 30) end
  end)

  it("takes its randomness as a number or a function", function()
    local b = backoff.new{ first = 100, jitter = 0.5 }
    assert.are.equal(75, b:next_delay(0, function() return 0.5 end))
  end)

  it("reads first, cap and reset_after as durations", function()
    local b = backoff.new{ first = "500ms", cap = "2s", reset_after = "1m", jitter = 0 }
    assert.are.same({ 0.5, 1, 2, 2 }, delays(b, 4))
    assert.are.equal(60, b.reset_after)
  end)

  it("forgets the failures after reset_after seconds of health", function()
    local b = backoff.new{ reset_after = 600 }
    assert.are.same({ 1, 2, 4 }, delays(b, 3, 0))
    assert.is_false(b:healthy_since(1000))
    assert.is_false(b:healthy_since(1300))
    assert.is_true(b:healthy_since(1600))
    assert.are.equal(1, b:next_delay(1601, 0))
  end)

  it("counts the healthy streak from its first healthy report", function()
    local b = backoff.new{ reset_after = 600 }
    delays(b, 3, 0)
    b:healthy_since(1000)
    b:healthy_since(1500)      -- later reports do not move the start
    assert.are.equal(1, b:next_delay(1600, 0))
  end)

  it("keeps backing off when health did not last reset_after", function()
    local b = backoff.new{ reset_after = 600 }
    delays(b, 3, 0)
    b:healthy_since(1000)
    assert.are.equal(8, b:next_delay(1599, 0))
  end)

  it("starts the streak over after a failing check", function()
    local b = backoff.new{ reset_after = 600 }
    delays(b, 2, 0)
    b:healthy_since(1000)
    b:unhealthy()
    b:healthy_since(1500)
    assert.is_false(b:healthy_since(2000))
    assert.are.equal(4, b:next_delay(2001, 0))
  end)

  it("starts over on reset()", function()
    local b = backoff.new()
    delays(b, 5, 0)
    b:reset()
    assert.are.equal(1, b:next_delay(10, 0))
  end)

  it("refuses options it does not know and values that make no sense", function()
    assert.has_error(function() backoff.new{ frist = 1 } end,
      "backoff.new: unknown option frist (expected cap, factor, first, jitter, reset_after)")
    assert.has_error(function() backoff.new{ first = 0 } end,
      "backoff.new: first must be more than 0")
    assert.has_error(function() backoff.new{ factor = 0.5 } end,
      "backoff.new: factor must be 1 or more")
    assert.has_error(function() backoff.new{ first = 10, cap = 5 } end,
      "backoff.new: cap must be at least first")
    assert.has_error(function() backoff.new{ jitter = 1 } end,
      "backoff.new: jitter must be in [0, 1)")
    assert.has_error(function() backoff.new{ cap = "soon" } end,
      'backoff.new: cap: "soon" is not a duration: expected a number of seconds or a string'
      .. ' like "500ms", "2s", "1m30s", "1h"')
  end)
end)

describe("flap", function()
  it("flags more than 5 restarts within 5 minutes by default", function()
    local f = flap.new()
    assert.are.same({ max = 5, window = 300 }, flap.DEFAULTS)
    for t = 0, 40, 10 do assert.is_false(f:record(t)) end
    assert.is_true(f:record(50))
    assert.is_true(f:is_flapping())
  end)

  it("does not count restarts that fell out of the window", function()
    local f = flap.new{ max = 3, window = 60 }
    assert.is_false(f:record(0))
    assert.is_false(f:record(30))
    assert.is_false(f:record(59))
    assert.is_false(f:record(60))    -- the restart at 0 is 60s old: outside
    assert.are.equal(3, f:count(60))
    assert.is_true(f:record(61))
  end)

  it("stays flapping until cleared, even once the window has slid past", function()
    local f = flap.new{ max = 1, window = 10 }
    f:record(0)
    assert.is_true(f:record(1))
    assert.is_true(f:record(1000))
    assert.is_true(f:is_flapping())
    f:clear()
    assert.is_false(f:is_flapping())
    assert.are.equal(0, f:count(1000))
    assert.is_false(f:record(1001))
  end)

  it("reads the window as a duration", function()
    assert.are.equal(120, flap.new{ window = "2m" }.window)
  end)

  it("refuses options it does not know", function()
    assert.has_error(function() flap.new{ maximum = 3 } end,
      "flap.new: unknown option maximum (expected max, window)")
    assert.has_error(function() flap.new{ max = 1.5 } end,
      "flap.new: max must be an integer of 0 or more")
  end)
end)
