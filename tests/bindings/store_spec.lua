-- mcp.store against a real SQLite file in a temporary directory.
local mcp = require("mcp.core")

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return (out:gsub("%s+$", ""))
end

local function mode_of(path)
  return sh("stat -c %a '" .. path .. "' 2>/dev/null")
end

describe("mcp.store", function()
  local dir, db

  before_each(function()
    dir = sh("mktemp -d /tmp/mcp-store.XXXXXX")
    db = assert(mcp.store.open(dir .. "/test.db"))
  end)

  after_each(function()
    db:close()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  describe("open", function()
    it("creates the file 0600 and its missing directories 0700", function()
      local path = dir .. "/a/b/reg.db"
      local d = assert(mcp.store.open(path))
      d:exec("CREATE TABLE t (x)")
      assert.equal("600", mode_of(path))
      assert.equal("600", mode_of(path .. "-wal"))
      assert.equal("700", mode_of(dir .. "/a/b"))
      assert.equal(path, d:path())
      d:close()
    end)

    it("makes an existing file that others can read 0600", function()
      local path = dir .. "/loose.db"
      os.execute("touch '" .. path .. "' && chmod 644 '" .. path .. "'")
      local d = assert(mcp.store.open(path))
      assert.equal("600", mode_of(path))
      d:close()
    end)

    it("runs in WAL mode with synchronous=NORMAL, foreign keys and a busy timeout", function()
      assert.equal("wal", db:row("PRAGMA journal_mode").journal_mode)
      assert.equal(1, db:row("PRAGMA synchronous").synchronous)      -- NORMAL
      assert.equal(1, db:row("PRAGMA foreign_keys").foreign_keys)
      assert.equal(5000, db:row("PRAGMA busy_timeout").timeout)
      local d = assert(mcp.store.open(dir .. "/t.db", { busy_timeout = "250ms" }))
      assert.equal(250, d:row("PRAGMA busy_timeout").timeout)
      d:close()
    end)

    it("answers nil and an error naming the path when it cannot open the file", function()
      local d, err = mcp.store.open("/dev/null/x.db")
      assert.is_nil(d)
      assert.matches("mcp.store.open: /dev/null/x.db", err, 1, true)
      local f = io.open(dir .. "/junk.db", "w")
      f:write(string.rep("this is not a database\n", 100))
      f:close()
      d, err = mcp.store.open(dir .. "/junk.db")
      assert.is_nil(d)
      assert.matches("not a database", err)
    end)

    it("rejects unknown options", function()
      assert.has_error(function() mcp.store.open(dir .. "/x.db", { busy = 1 }) end,
        'mcp.store.open: unknown option "busy" (expected one of: busy_timeout)')
    end)
  end)

  describe("values", function()
    before_each(function() db:exec("CREATE TABLE v (x)") end)

    local function round_trip(value)
      db:exec("DELETE FROM v")
      db:exec("INSERT INTO v VALUES (?)", value)
      local r = db:row("SELECT x, typeof(x) AS t FROM v")
      return r.x, r.t
    end

    it("stores integral numbers as INTEGER and others as REAL", function()
      assert.same({ 42, "integer" }, { round_trip(42) })
      assert.same({ -7, "integer" }, { round_trip(-7) })
      assert.same({ 2 ^ 53, "integer" }, { round_trip(2 ^ 53) })
      assert.same({ 1.5, "real" }, { round_trip(1.5) })
      assert.same({ 1e300, "real" }, { round_trip(1e300) })
    end)

    it("stores strings as they are, NUL bytes and all", function()
      assert.same({ "héllo", "text" }, { round_trip("héllo") })
      assert.same({ "a\0b\255", "text" }, { round_trip("a\0b\255") })
      assert.same({ "", "text" }, { round_trip("") })
    end)

    it("stores booleans as 1 and 0", function()
      assert.same({ 1, "integer" }, { round_trip(true) })
      assert.same({ 0, "integer" }, { round_trip(false) })
    end)

    it("stores nil and mcp.json.null as NULL, which reads back as an absent key", function()
      assert.same({ nil, "null" }, { round_trip(nil) })
      assert.same({ nil, "null" }, { round_trip(mcp.json.null) })
      assert.same({ t = "null" }, db:row("SELECT x, typeof(x) AS t FROM v"))
    end)

    it("reads blobs as strings", function()
      local r = db:row("SELECT x'00ff41' AS b")
      assert.equal("\0\255A", r.b)
    end)

    it("refuses values SQLite cannot hold, naming the parameter", function()
      assert.has_error(function() db:exec("INSERT INTO v VALUES (?)", {}) end,
        "db:exec: parameter 1: cannot store a table (expected nil, a boolean, a number or "
        .. "a string) in: INSERT INTO v VALUES (?)")
      assert.has_error(function() db:exec("INSERT INTO v VALUES (?)", 0 / 0) end,
        "db:exec: parameter 1 is NaN, which SQLite cannot hold")
    end)
  end)

  describe("exec, query and row", function()
    before_each(function()
      db:exec("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE, n INTEGER)")
    end)

    it("exec returns the number of changed rows and the last rowid", function()
      assert.same({ 1, 1 }, { db:exec("INSERT INTO t (name, n) VALUES (?, ?)", "a", 1) })
      assert.same({ 1, 2 }, { db:exec("INSERT INTO t (name, n) VALUES (?, ?)", "b", 2) })
      assert.same({ 2, 2 }, { db:exec("UPDATE t SET n = n + 1") })
    end)

    it("exec runs a script of several statements when given no parameters", function()
      db:exec([[INSERT INTO t (name) VALUES ('x'); -- one
                INSERT INTO t (name) VALUES ('y'); /* two */]])
      assert.equal(2, db:row("SELECT count(*) AS n FROM t").n)
    end)

    it("refuses several statements with parameters, or in a query", function()
      assert.has_error(function()
        db:exec("INSERT INTO t (name) VALUES (?); DELETE FROM t", "x")
      end, "db:exec: one statement at a time when parameters are given, got several in: "
        .. "INSERT INTO t (name) VALUES (?); DELETE FROM t")
      assert.has_error(function() db:query("SELECT 1; SELECT 2") end,
        "db:query: one statement at a time, got several in: SELECT 1; SELECT 2")
    end)

    it("query returns every row as a table keyed by column name", function()
      db:exec("INSERT INTO t (name, n) VALUES ('a', 1), ('b', NULL), ('c', 3)")
      assert.same({ { id = 1, name = "a", n = 1 }, { id = 2, name = "b" },
        { id = 3, name = "c", n = 3 } }, db:query("SELECT * FROM t ORDER BY id"))
      assert.same({}, db:query("SELECT * FROM t WHERE n > ?", 100))
    end)

    it("row returns the first row, or nil when there is none", function()
      db:exec("INSERT INTO t (name, n) VALUES ('a', 1), ('b', 2)")
      assert.same({ name = "b" }, db:row("SELECT name FROM t ORDER BY n DESC"))
      assert.is_nil(db:row("SELECT name FROM t WHERE n = ?", 9))
    end)

    it("raises SQL errors with SQLite's message and the SQL", function()
      assert.has_error(function() db:query("SELEC * FROM t") end,
        'db:query: near "SELEC": syntax error in: SELEC * FROM t')
      assert.has_error(function() db:row("SELECT nope FROM t") end,
        "db:row: no such column: nope in: SELECT nope FROM t")
      db:exec("INSERT INTO t (name) VALUES ('a')")
      assert.has_error(function() db:exec("INSERT INTO t (name)\n   VALUES (?)", "a") end,
        "db:exec: UNIQUE constraint failed: t.name in: INSERT INTO t (name) VALUES (?)")
    end)

    it("raises when the number of values does not match the placeholders", function()
      assert.has_error(function() db:query("SELECT * FROM t WHERE id = ?") end,
        "db:query: the SQL has 1 parameter, got 0 values in: SELECT * FROM t WHERE id = ?")
      assert.has_error(function() db:query("SELECT * FROM t WHERE id = ?", 1, 2) end,
        "db:query: the SQL has 1 parameter, got 2 values in: SELECT * FROM t WHERE id = ?")
    end)

    it("keeps prepared statements in a cache bounded in size", function()
      for _ = 1, 10 do db:row("SELECT count(*) AS n FROM t") end
      local s = db:stats()
      assert.is_true(s.hits >= 9)
      for i = 1, 300 do db:row("SELECT " .. i .. " AS n") end
      assert.is_true(db:stats().statements <= 128)
      assert.equal(300, db:row("SELECT 300 AS n").n)
    end)
  end)

  describe("tx", function()
    before_each(function() db:exec("CREATE TABLE t (x INTEGER)") end)

    local function count() return db:row("SELECT count(*) AS n FROM t").n end

    it("commits what fn did and returns what fn returns", function()
      local a, b = db:tx(function(x, y)
        db:exec("INSERT INTO t VALUES (?)", x)
        db:exec("INSERT INTO t VALUES (?)", y)
        return "done", x + y
      end, 1, 2)
      assert.same({ "done", 3 }, { a, b })
      assert.equal(2, count())
    end)

    it("returns true when fn returns nothing", function()
      assert.is_true(db:tx(function() end))
    end)

    it("takes the write lock at BEGIN (BEGIN IMMEDIATE)", function()
      local other = assert(mcp.store.open(dir .. "/test.db", { busy_timeout = 0 }))
      db:tx(function()
        local ok, err = other:exec("INSERT INTO t VALUES (1)")
        assert.is_nil(ok)
        assert.matches("database is locked", err)
      end)
      other:close()
    end)

    it("rolls back and raises fn's error again, as it was", function()
      local e = { reason = "boom" }
      local ok, err = pcall(db.tx, db, function()
        db:exec("INSERT INTO t VALUES (1)")
        error(e)
      end)
      assert.is_false(ok)
      assert.equal(e, err)
      assert.equal(0, count())
      assert.has_error(function()
        db:tx(function() db:exec("INSERT INTO t VALUES (1)"); error("plain", 0) end)
      end, "plain")
      assert.equal(0, count())
    end)

    it("nests as savepoints: an inner failure undoes only the inner work", function()
      db:tx(function()
        db:exec("INSERT INTO t VALUES (1)")
        local ok = pcall(db.tx, db, function()
          db:exec("INSERT INTO t VALUES (2)")
          error("inner")
        end)
        assert.is_false(ok)
        db:tx(function() db:exec("INSERT INTO t VALUES (3)") end)
      end)
      assert.same({ { x = 1 }, { x = 3 } }, db:query("SELECT x FROM t ORDER BY x"))
    end)

    it("nests as savepoints: an outer failure undoes the inner work too", function()
      pcall(db.tx, db, function()
        db:tx(function() db:exec("INSERT INTO t VALUES (1)") end)
        error("outer")
      end)
      assert.equal(0, count())
      db:tx(function() db:exec("INSERT INTO t VALUES (1)") end)
      assert.equal(1, count())
    end)

    it("refuses to let fn yield, with a clear error, and rolls back", function()
      assert.has_error(function()
        db:tx(function()
          db:exec("INSERT INTO t VALUES (1)")
          coroutine.yield()
        end)
      end)
      local ok, err = pcall(db.tx, db, function() coroutine.yield() end)
      assert.matches("db:tx: the transaction function waited or yielded, which it must not",
        err, 1, true)
      assert.matches("attempt to yield across C%-call boundary", err)
      assert.equal(0, count())
    end)

    it("refuses to let fn wait on a binding inside a task", function()
      local ok, err = mcp.run(function()
        return pcall(db.tx, db, function()
          db:exec("INSERT INTO t VALUES (1)")
          mcp.sleep(0.01)
        end)
      end)
      assert.is_false(ok)
      assert.matches("db:tx: the transaction function waited or yielded", err, 1, true)
      assert.matches("mcp.sleep: can only wait inside a task", err, 1, true)
      assert.equal(0, count())
      -- and the task itself may wait outside the transaction
      assert.is_true(mcp.run(function() mcp.sleep(0.001); return db:tx(function() end) end))
    end)

    it("rolls back when the task runs out of its budget inside it", function()
      local function runaway()
        db:tx(function()
          db:exec("INSERT INTO t VALUES (1)")
          pcall(function() while true do end end)   -- a budget cannot be caught
          while true do end
        end)
      end
      jit.off(runaway, true)    -- the count hook does not fire in compiled code
      local ok, err = pcall(mcp.run, { instructions = 1e5 }, runaway)
      assert.is_false(ok)
      assert.matches("instruction budget of 100000 exceeded", err, 1, true)
      assert.equal(0, count())
      assert.is_true(db:tx(function() end))
    end)

    it("answers nil, err when another process holds the write lock", function()
      local other = assert(mcp.store.open(dir .. "/test.db", { busy_timeout = 0.05 }))
      db:tx(function()
        local ok, err = other:tx(function() other:exec("INSERT INTO t VALUES (1)") end)
        assert.is_nil(ok)
        assert.matches("db:tx: database is locked", err, 1, true)
      end)
      assert.equal(0, count())
      assert.is_true(other:tx(function() other:exec("INSERT INTO t VALUES (1)") end))
      other:close()
    end)

    it("is doomed by an operational failure inside it, even one fn catches", function()
      db:exec("CREATE TABLE big (b)")
      db:exec("PRAGMA max_page_count = " .. db:row("PRAGMA page_count").page_count + 2)
      local caught
      local ok, err = db:tx(function()
        db:exec("INSERT INTO t VALUES (1)")
        local fine, e = pcall(db.exec, db, "INSERT INTO big VALUES (?)",
          string.rep("x", 100000))
        caught = not fine and e
        return "finished anyway"
      end)
      assert.is_nil(ok)
      assert.matches("database or disk is full", err, 1, true)
      assert.matches("database or disk is full", caught, 1, true)
      assert.equal(0, count())
      -- the connection is usable again afterwards
      db:exec("PRAGMA max_page_count = 1000000")
      assert.is_true(db:tx(function() db:exec("INSERT INTO t VALUES (2)") end))
      assert.equal(1, count())
    end)

    it("refuses statements after the failure in a doomed transaction", function()
      db:exec("CREATE TABLE big (b)")
      db:exec("PRAGMA max_page_count = " .. db:row("PRAGMA page_count").page_count + 2)
      local later
      local ok, err = db:tx(function()
        pcall(db.exec, db, "INSERT INTO big VALUES (?)", string.rep("x", 100000))
        later = select(2, pcall(db.exec, db, "INSERT INTO t VALUES (1)"))
      end)
      assert.is_nil(ok)
      assert.matches("database or disk is full", err, 1, true)
      assert.matches("the transaction was aborted by an earlier error", later, 1, true)
      db:exec("PRAGMA max_page_count = 1000000")
      assert.equal(0, count())
    end)
  end)

  describe("close", function()
    it("closes once; later calls raise; closing again is fine", function()
      local d = assert(mcp.store.open(dir .. "/c.db"))
      assert.matches("^mcp.store.db: .*/c.db$", tostring(d))
      d:close()
      d:close()
      assert.equal("mcp.store.db: closed", tostring(d))
      assert.has_error(function() d:query("SELECT 1") end, "db:query: the database is closed")
    end)

    it("refuses to close inside a transaction", function()
      assert.has_error(function() db:tx(function() db:close() end) end,
        "db:close: a transaction is open")
      assert.same({ one = 1 }, db:row("SELECT 1 AS one"))
    end)
  end)
end)

describe("mcp.crypto", function()
  it("sha256 gives the digest in lowercase hex", function()
    assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
      mcp.crypto.sha256(""))
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
      mcp.crypto.sha256("abc"))
    assert.equal(64, #mcp.crypto.sha256(string.rep("\0", 1000)))
  end)

  it("random_hex gives n random bytes as 2n hex digits, never twice the same", function()
    local a, b = mcp.crypto.random_hex(32), mcp.crypto.random_hex(32)
    assert.matches("^%x+$", a)
    assert.equal(64, #a)
    assert.not_equal(a, b)
    assert.equal(2, #mcp.crypto.random_hex(1))
    assert.has_error(function() mcp.crypto.random_hex(0) end)
    assert.has_error(function() mcp.crypto.random_hex(1.5) end)
    assert.has_error(function() mcp.crypto.random_hex(4096) end)
  end)

  it("equal compares strings", function()
    assert.is_true(mcp.crypto.equal("abc", "abc"))
    assert.is_true(mcp.crypto.equal("", ""))
    assert.is_false(mcp.crypto.equal("abc", "abd"))
    assert.is_false(mcp.crypto.equal("abc", "ab"))
    assert.is_false(mcp.crypto.equal("a\0b", "a\0c"))
    assert.has_error(function() mcp.crypto.equal("a", nil) end)
  end)
end)
