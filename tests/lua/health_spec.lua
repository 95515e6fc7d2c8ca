-- Specs for the health state machine of mcp.health: health.new_state and
-- health.step are pure functions of the probe results and the times passed
-- in, so every transition is exact here, without a container.
local health = require("mcp.health")

-- Feeds a list of results (true, false, or "?" for an inconclusive nil)
-- one second apart, after t0; returns the state after each one, and the
-- list of transitions.
local function feed(st, hc, results, t0, dt)
  local t = t0 or 0
  local states, changes = {}, {}
  for i, r in ipairs(results) do
    local ok = r
    if r == "?" then ok = nil end
    t = t + (dt or 1)
    local s, changed = health.step(st, hc, ok, t)
    states[i] = s
    if changed then changes[#changes + 1] = s end
  end
  return states, changes
end

describe("health state machine", function()
  local DEFAULTS = { failures = 3, successes = 1, start_period = 0 }

  it("starts in starting, with no passes or misses", function()
    local st = health.new_state(100)
    assert.are.equal("starting", st.state)
    assert.are.equal(100, st.started)
    assert.are.equal(100, st.since)
    assert.are.equal(0, st.passes)
    assert.are.equal(0, st.misses)
  end)

  it("turns healthy on the first pass by default", function()
    local st = health.new_state(0)
    local s, changed = health.step(st, DEFAULTS, true, 1)
    assert.are.equal("healthy", s)
    assert.is_true(changed)
    assert.are.equal(1, st.since)
  end)

  it("needs `successes` passes in a row to turn healthy", function()
    local st = health.new_state(0)
    local states = feed(st, { successes = 3, failures = 3 }, { true, true, false, true, true,
      true })
    assert.are.same({ "starting", "starting", "starting", "starting", "starting", "healthy" },
      states)
  end)

  it("turns unhealthy from starting after `failures` misses in a row", function()
    local st = health.new_state(0)
    local states, changes = feed(st, DEFAULTS, { false, false, false })
    assert.are.same({ "starting", "starting", "unhealthy" }, states)
    assert.are.same({ "unhealthy" }, changes)
  end)

  it("turns unhealthy from healthy after `failures` misses in a row", function()
    local st = health.new_state(0)
    local states, changes = feed(st, { failures = 2, successes = 1 },
      { true, false, true, false, false })
    assert.are.same({ "healthy", "healthy", "healthy", "healthy", "unhealthy" }, states)
    assert.are.same({ "healthy", "unhealthy" }, changes)
  end)

  it("comes back from unhealthy after `successes` passes in a row", function()
    local st = health.new_state(0)
    local hc = { failures = 1, successes = 2 }
    local states, changes = feed(st, hc, { false, true, false, true, true })
    assert.are.same({ "unhealthy", "unhealthy", "unhealthy", "unhealthy", "healthy" }, states)
    assert.are.same({ "unhealthy", "healthy" }, changes)
  end)

  it("reports a change only when the state changes", function()
    local st = health.new_state(0)
    local _, changes = feed(st, DEFAULTS, { true, true, true, false, false, false, false,
      false, true, true })
    assert.are.same({ "healthy", "unhealthy", "healthy" }, changes)
  end)

  it("sets since to the time of the last transition", function()
    local st = health.new_state(0)
    feed(st, { failures = 2, successes = 1 }, { true, true, false, false, false })
    assert.are.equal("unhealthy", st.state)
    assert.are.equal(4, st.since)
  end)

  describe("start_period", function()
    local hc = { failures = 2, successes = 1, start_period = 10 }

    it("does not count misses within start_period of the start", function()
      local st = health.new_state(0)
      local states = feed(st, hc, { false, false, false, false, false, false, false, false })
      -- t = 1..8: all inside the 10 s start period.
      for _, s in ipairs(states) do assert.are.equal("starting", s) end
      assert.are.equal(0, st.misses)
    end)

    it("counts misses once start_period is over", function()
      local st = health.new_state(0)
      local states = feed(st, hc, { false, false, false }, 8)   -- t = 9, 10, 11
      assert.are.same({ "starting", "starting", "unhealthy" }, states)
    end)

    it("lets a pass within start_period make the container healthy at once", function()
      local st = health.new_state(0)
      local states = feed(st, hc, { false, false, true })
      assert.are.same({ "starting", "starting", "healthy" }, states)
    end)

    it("counts misses of a container that has been healthy, start_period or not", function()
      local st = health.new_state(0)
      local states = feed(st, hc, { true, false, false })       -- t = 1, 2, 3
      assert.are.same({ "healthy", "healthy", "unhealthy" }, states)
    end)

    it("measures the period from the start the state was made with", function()
      local st = health.new_state(100)
      local states = feed(st, hc, { false, false, false }, 100)   -- t = 101..103
      assert.are.same({ "starting", "starting", "starting" }, states)
      states = feed(st, hc, { false, false }, 110)                -- t = 111, 112
      assert.are.same({ "starting", "unhealthy" }, states)
    end)
  end)

  describe("inconclusive probes (nil: Podman did not answer)", function()
    it("count neither as a pass nor as a miss", function()
      local st = health.new_state(0)
      local states, changes = feed(st, { failures = 2, successes = 1 },
        { true, false, "?", "?", "?", true })
      assert.are.same({ "healthy", "healthy", "healthy", "healthy", "healthy", "healthy" },
        states)
      assert.are.same({ "healthy" }, changes)
    end)

    it("do not break a run of misses", function()
      local st = health.new_state(0)
      local states = feed(st, { failures = 2, successes = 1 }, { false, "?", false })
      assert.are.same({ "starting", "starting", "unhealthy" }, states)
    end)

    it("are not counted as checks", function()
      local st = health.new_state(0)
      feed(st, DEFAULTS, { "?", true, "?", false })
      assert.are.equal(2, st.checks)
    end)
  end)

  it("falls back to failures = 3 and successes = 1 when the check omits them", function()
    local st = health.new_state(0)
    local states = feed(st, {}, { false, false, false, true })
    assert.are.same({ "starting", "starting", "unhealthy", "healthy" }, states)
  end)

  it("treats a miss limit of 1 as unhealthy on the first miss", function()
    local st = health.new_state(0)
    local states = feed(st, { failures = 1 }, { true, false })
    assert.are.same({ "healthy", "unhealthy" }, states)
  end)
end)

describe("health.host_port", function()
  local comp = { routes = {
    { key = "web", name = "web", port = 3000 },
    { key = "ssh", name = "ssh", port = 22 },
  } }
  local ports = { web = 10001, ssh = 10002 }

  it("finds the host port of the route a check names", function()
    assert.are.equal(10002, health.host_port(comp, { port = "ssh" }, ports))
  end)

  it("finds the route by its container port", function()
    assert.are.equal(10001, health.host_port(comp, { port = 3000 }, ports))
  end)

  it("takes the first route when the check names none", function()
    assert.are.equal(10001, health.host_port(comp, {}, ports))
  end)

  it("takes a number that is no route's port as the host port itself", function()
    assert.are.equal(4444, health.host_port({ routes = {} }, { port = 4444 }, {}))
  end)

  it("has no port for a route that was never assigned one", function()
    assert.is_nil(health.host_port(comp, { port = "web" }, {}))
  end)
end)

describe("the health loop's schedule (monitor.next_check)", function()
  local monitor = require("mcp.monitor")

  it("checks each container again about one interval later", function()
    for _, name in ipairs({ "a-web", "b-web", "mcq-mcq" }) do
      local nxt = monitor.next_check(name, 100, 10)
      assert.is_true(nxt >= 105 and nxt <= 115, name .. ": " .. nxt)
    end
  end)

  it("keeps a container at its own phase, so its checks stay an interval apart", function()
    local t = monitor.next_check("mcq-mcq", 0, 10)
    for _ = 1, 20 do
      local nxt = monitor.next_check("mcq-mcq", t + 0.03, 10)   -- the check ran a bit late
      assert.is_true(math.abs((nxt - t) - 10) < 1e-9, tostring(nxt - t))
      t = nxt
    end
  end)

  it("spreads many containers with the same interval over it", function()
    local buckets = {}
    for i = 1, 1000 do
      local nxt = monitor.next_check("svc-" .. i .. "-web", 0, 1)
      local b = math.floor((nxt % 1) * 10)
      buckets[b] = (buckets[b] or 0) + 1
    end
    for b = 0, 9 do
      assert.is_true((buckets[b] or 0) > 50, "tenth " .. b .. ": " .. tostring(buckets[b]))
    end
  end)
end)
