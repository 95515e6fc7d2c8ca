-- Specs for mcp.duration: the durations operators write, the uptimes they read.
local duration = require("mcp.duration")

describe("duration.parse", function()
  local good = {
    { "500ms", 0.5 }, { "2s", 2 }, { "1m30s", 90 }, { "1h", 3600 }, { "1d", 86400 },
    { "1h30m", 5400 }, { "1.5s", 1.5 }, { "2m0s", 120 }, { "0s", 0 }, { " 10s ", 10 },
    { "1d2h3m4s5ms", 93784.005 }, { "5", 5 }, { "0.25", 0.25 },
    { 3, 3 }, { 0.1, 0.1 }, { 0, 0 },
  }
  for _, case in ipairs(good) do
    it("reads " .. string.format("%q", tostring(case[1])) .. " as " .. case[2] .. " seconds",
      function()
        assert.are.equal(case[2], duration.parse(case[1]))
      end)
  end

  local EXPECTED = 'expected a number of seconds or a string like "500ms", "2s", "1m30s", "1h"'
  local ORDER = "units must go from largest to smallest, each once (d, h, m, s, ms)"
  local bad = {
    { "abc", '"abc" is not a duration: ' .. EXPECTED },
    { "", '"" is not a duration: ' .. EXPECTED },
    { "10x", '"10x" is not a duration: ' .. EXPECTED },
    { "1.2.3s", '"1.2.3s" is not a duration: ' .. EXPECTED },
    { "-5s", '"-5s" is not a duration: ' .. EXPECTED },
    { "s", '"s" is not a duration: ' .. EXPECTED },
    { "30s1m", '"30s1m" is not a duration: ' .. ORDER },
    { "1s1s", '"1s1s" is not a duration: ' .. ORDER },
    { -1, "-1 is negative: expected a duration of 0 or more" },
    { 0 / 0, "nan is not a duration: " .. EXPECTED },
    { true, EXPECTED .. ", got boolean true" },
    { {}, EXPECTED .. ", got a table" },
  }
  for _, case in ipairs(bad) do
    it("refuses " .. tostring(case[1]) .. " with a message naming the value", function()
      local s, err = duration.parse(case[1])
      assert.is_nil(s)
      -- nan prints differently across platforms: compare the rest.
      if case[1] ~= case[1] then
        assert.matches("is not a duration", err)
      else
        assert.are.equal(case[2], err)
      end
    end)
  end
end)

describe("duration.format", function()
  local cases = {
    { 45, "45s" }, { 192, "3m12s" }, { 180, "3m" }, { 3600, "1h" }, { 18720, "5h12m" },
    { 187200, "2d4h" }, { 172800, "2d" }, { 0, "0s" }, { 0.25, "250ms" }, { 59.9, "59s" },
    { 86399, "23h59m" }, { -5, "0s" },
  }
  for _, case in ipairs(cases) do
    it("shows " .. case[1] .. " seconds as " .. case[2], function()
      assert.are.equal(case[2], duration.format(case[1]))
    end)
  end

  it("shows a missing value as 0s rather than failing", function()
    assert.are.equal("0s", duration.format(nil))
    assert.are.equal("0s", duration.format(0 / 0))
  end)

  it("writes what parse reads back, to the shown precision", function()
    for _, s in ipairs({ 45, 192, 3600, 18720, 187200 }) do
      assert.are.equal(s, duration.parse(duration.format(s)))
    end
  end)
end)
