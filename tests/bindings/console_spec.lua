-- mcp.console: what the console evaluates, tried against the real core:
-- each line runs as a task, as it does inside the agent.
local mcp = require("mcp.core")
local console = require("mcp.console")

local function eval(s, text, limits)
  if limits then
    return mcp.run(limits, console.eval, s, text)
  end
  return mcp.run(console.eval, s, text)
end

describe("mcp.console.eval", function()
  local s

  before_each(function()
    s = console.session({ id = 1, uid = 0 })
  end)

  it("prints the value of an expression", function()
    assert.same({ "result", "2" }, { eval(s, "1 + 1") })
  end)

  it("prints every value of a multiple return, nil included", function()
    assert.same({ "result", '1, "two", nil' }, { eval(s, '1, "two", nil') })
  end)

  it("runs a statement and prints nothing", function()
    assert.same({ "result", "" }, { eval(s, "local x = 1") })
  end)

  it("takes =expr as an expression", function()
    assert.same({ "result", "6" }, { eval(s, "= 2 * 3") })
  end)

  it("keeps globals set at the prompt in the session, not in the agent's globals", function()
    eval(s, "console_spec_x = 41")
    assert.same({ "result", "42" }, { eval(s, "console_spec_x + 1") })
    assert.is_nil(rawget(_G, "console_spec_x"))
    local other = console.session({ id = 2, uid = 0 })
    assert.same({ "result", "nil" }, { eval(other, "console_spec_x") })
  end)

  it("forgets locals between lines, as any Lua prompt does", function()
    eval(s, "local y = 5")
    assert.same({ "result", "nil" }, { eval(s, "y") })
  end)

  it("keeps the last value in _", function()
    eval(s, "{ 1, 2, 3 }")
    assert.same({ "result", "3" }, { eval(s, "#_") })
  end)

  it("asks for more while a statement is incomplete", function()
    assert.equal("continue", (eval(s, "function f(x)")))
    assert.equal("continue", (eval(s, "function f(x)\nreturn x * 2")))
    assert.equal("continue", (eval(s, "t = {")))
    assert.equal("continue", (eval(s, "{")))
    assert.equal("continue", (eval(s, "x = [[abc")))
    assert.same({ "result", "" }, { eval(s, "function f(x)\nreturn x * 2\nend") })
    assert.same({ "result", "42" }, { eval(s, "f(21)") })
  end)

  it("reports a syntax error that more input cannot fix", function()
    local kind, msg = eval(s, "x = = 1")
    assert.equal("error", kind)
    assert.matches("^console:1: ", msg)
  end)

  it("reports a runtime error with its position and keeps the traceback for :trace", function()
    local kind, msg = eval(s, 'error("boom")')
    assert.same({ "error", "console:1: boom" }, { kind, msg })
    local _, trace = eval(s, ":trace")
    assert.matches("stack traceback", trace)
  end)

  it("shows an error that is not a string", function()
    assert.same({ "error", "error: { code = 7 }" }, { eval(s, "error({ code = 7 })") })
  end)

  it("can wait, since a line runs as a task", function()
    local t0 = mcp.timer.monotime()
    assert.same({ "result", "42" }, { eval(s, "mcp.sleep(0.05); return 42") })
    assert.is_true(mcp.timer.monotime() - t0 >= 0.05)
  end)

  it("ends a runaway loop at the task's instruction budget, JIT or not", function()
    local ok, err = pcall(eval, s, "while true do end", { instructions = 1e6 })
    assert.is_false(ok)
    assert.matches("instruction budget of 1000000 exceeded", tostring(err))
    -- A function defined at the prompt keeps the JIT off too.
    eval(s, "function spin() local i = 0 while true do i = i + 1 end end")
    ok, err = pcall(eval, s, "spin()", { instructions = 1e6 })
    assert.is_false(ok)
    assert.matches("instruction budget", tostring(err))
  end)

  it("answers :help with the helpers, and an unknown command with a hint", function()
    local kind, text = eval(s, ":help")
    assert.equal("result", kind)
    for _, h in ipairs({ "ps()", "services()", "show(name)", "events(n)", "health.run(name)",
      "reload()", "last_error()", "tasks()", "podman", "config" }) do
      assert.truthy(text:find(h, 1, true), h .. " missing from :help")
    end
    assert.same({ "error", ":nope: unknown command (try :help)" }, { eval(s, ":nope") })
  end)

  it("forgets the session's globals on :reset", function()
    eval(s, "console_spec_z = 1")
    eval(s, ":reset")
    assert.same({ "result", "nil" }, { eval(s, "console_spec_z") })
  end)
end)

describe("mcp.console helpers", function()
  local s, saved

  before_each(function()
    s = console.session({ id = 1, uid = 0 })
    saved = package.loaded["mcp.agent"]
  end)

  after_each(function()
    package.loaded["mcp.agent"] = saved
  end)

  it("say so when the agent's function is missing from this build", function()
    package.loaded["mcp.agent"] = {}
    assert.same({ "error", "ps(): not available in this build (mcp.agent.ps is missing)" },
      { eval(s, "ps()") })
  end)

  it("show ps() as columns", function()
    package.loaded["mcp.agent"] = { ps = function()
      return { { service = "mcq", component = "mcq", state = "running", version = "v0.3.2",
        uptime = "2d4h", health = "healthy", ports = { "*:10000->8443" }, image = "x" } }
    end }
    local _, text = eval(s, "ps()")
    assert.equal(
      "SERVICE  COMPONENT  STATE    VERSION  UPTIME  HEALTH   PORTS\n" ..
      "mcq      mcq        running  v0.3.2   2d4h    healthy  *:10000->8443", text)
  end)

  it("turn the agent's nil, err into an error", function()
    package.loaded["mcp.agent"] = { show = function() return nil, "no service \"x\"" end }
    assert.same({ "error", 'show(): no service "x"' }, { eval(s, 'show("x")') })
  end)

  it("summarise a reload as the generations it went between", function()
    package.loaded["mcp.agent"] = { reload = function(why)
      assert.equal("console", why)
      return { generation = 8, previous = 7, files = 12, took_ms = 9.2 }
    end }
    assert.same({ "result", "generation 7 \226\134\146 8: 12 files, 9 ms" },
      { eval(s, "reload()") })
  end)

  it("list the live tasks, this evaluation among them", function()
    local _, text = eval(s, "tasks()")
    assert.matches("^ID%s+NAME%s+WAITING\n", text)
  end)

  it("give podman and config as the mcp tables", function()
    assert.same({ "result", "true" }, { eval(s, "config == mcp.config") })
  end)

  it("can be extended by the agent's own Lua", function()
    console.helper("console_spec_hello", function() return "hi" end, "console_spec_hello()",
      "says hi")
    assert.same({ "result", '"hi"' }, { eval(s, "console_spec_hello()") })
    assert.truthy(select(2, eval(s, ":help")):find("console_spec_hello()", 1, true))
    console.helpers.console_spec_hello, console.docs.console_spec_hello = nil, nil
  end)
end)

describe("mcp.console.pretty", function()
  local pretty = console.pretty

  it("puts the list part first, then the keys sorted (numbers, then strings)", function()
    assert.equal('{ "x", "y", [10] = 0, a = 1, b = "two\\n", ["not id"] = true }',
      pretty({ "x", "y", b = "two\n", a = 1, ["not id"] = true, [10] = 0 }))
  end)

  it("marks cycles", function()
    local t = { name = "t" }
    t.self = t
    assert.equal('{ name = "t", self = <cycle> }', pretty(t))
  end)

  it("splits a table that does not fit on one line, indenting what it nests", function()
    local text = pretty({ alpha = string.rep("a", 40), beta = { gamma = string.rep("g", 40) } })
    assert.equal('{\n  alpha = "' .. string.rep("a", 40) .. '",\n  beta = { gamma = "' ..
      string.rep("g", 40) .. '" },\n}', text)
  end)

  it("cuts a long table and counts the rest", function()
    local t = {}
    for i = 1, 250 do t[i] = i end
    local text = pretty(t)
    assert.truthy(text:find("... (150 more)", 1, true))
    assert.falsy(text:find("101", 1, true))
  end)

  it("names where a function was defined", function()
    local f = load("return function() end", "=console")()
    assert.equal("<function console:1>", pretty(f))
  end)
end)

describe("mcp.console.complete", function()
  local s = console.session({ id = 1, uid = 0 })

  it("completes fields of the mcp namespace", function()
    assert.same({ "mcp.timer" }, console.complete(s, "mcp.ti"))
    assert.same({ "mcp.timer.sleep" }, console.complete(s, "mcp.timer.sl"))
  end)

  it("completes globals, helpers, the session's globals and keywords", function()
    s.env.console_spec_var = 1
    assert.same({ "console_spec_var" }, console.complete(s, "console_spec_v"))
    assert.truthy(#console.complete(s, "pri") >= 1)
    assert.same({ "tasks" }, console.complete(s, "task"))
    assert.same({ "function" }, console.complete(s, "functio"))
  end)

  it("offers only functions after a colon, string methods on a string", function()
    s.env.console_spec_str = "abc"
    assert.same({ "console_spec_str:upper" }, console.complete(s, "console_spec_str:up"))
  end)

  it("finds nothing under a value that is not a table", function()
    assert.same({}, console.complete(s, "mcp.version.x"))
    assert.same({}, console.complete(s, "nosuchthing.a"))
  end)
end)
