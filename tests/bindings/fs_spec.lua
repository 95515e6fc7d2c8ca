-- mcp.fs: confined paths against a real directory tree full of traps, under
-- both resolvers (openat2 where the kernel has it, and the openat walk).
local mcp = require("mcp.core")
local sys = require("tests.bindings.ffi_sys")

local function write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local data = f:read("*a")
  f:close()
  return data
end

local function exists(path)
  return os.execute("test -e '" .. path .. "' -o -L '" .. path .. "'") == 0
end

local function plain(s)
  return (s:gsub("%p", "%%%0"))
end

local resolvers = { "openat" }
if mcp.fs.resolver() == "openat2" then
  table.insert(resolvers, 1, "openat2")
end

describe("mcp.fs", function()
  local tmp, root, outside

  before_each(function()
    tmp = sys.sh("mktemp -d /tmp/mcp-fs.XXXXXX")
    root = tmp .. "/root"
    outside = tmp .. "/secret"
    write(outside, "the secret")
    os.execute(table.concat({
      "mkdir -p " .. root .. "/sub/deeper",
      "echo nested > " .. root .. "/sub/deeper/file",
      "echo top > " .. root .. "/top",
      "ln -s /etc " .. root .. "/etc",                    -- absolute, out of the root
      "ln -s ../secret " .. root .. "/out",               -- relative, out of the root
      "ln -s l2 " .. root .. "/l1",                       -- a chain that ends outside
      "ln -s l3 " .. root .. "/l2",
      "ln -s /etc/passwd " .. root .. "/l3",
      "ln -s sub " .. root .. "/inside",                  -- stays inside
      "ln -s /proc/self/root " .. root .. "/magic",
      "mkfifo " .. root .. "/fifo",
    }, " && "))
  end)

  after_each(function()
    mcp.fs.resolver(resolvers[1])
    os.execute("rm -rf '" .. tmp .. "'")
  end)

  for _, resolver in ipairs(resolvers) do
    describe("confined under a root, resolved with " .. resolver, function()
      before_each(function()
        assert.equal(resolver, mcp.fs.resolver(resolver))
      end)

      -- Each path must be refused by read, and its message must match.
      local escapes = {
        { "../x", "escapes ROOT$" },
        { "..", "escapes ROOT$" },
        { "./../secret", "escapes ROOT$" },
        { "a/../../x", "escapes ROOT$" },
        { "sub/deeper/../../../secret", "escapes ROOT$" },
        { "sub/../top", '"%.%." is not allowed in a path under ROOT' },
        { "/etc/passwd", "escapes ROOT %(an absolute path%)" },
        { "/", "escapes ROOT %(an absolute path%)" },
        { "etc/passwd", "symlink" },
        { "out", "symlink" },
        { "l1", "symlink" },
        { "magic/etc/passwd", "symlink" },
        { "a\0b", "contains a NUL byte" },
        { "top\0/../../etc/passwd", "contains a NUL byte" },
        { "..%2fsecret", "percent%-encoded" },
        { "%2e%2e/secret", "percent%-encoded" },
        { "..%2F..%2Fetc%2Fpasswd", "percent%-encoded" },
        { "%252e%252e/x", "no such file" },           -- decoded once it is "%2e": literal
        { "sub%00", "percent%-encoded" },
        { "..\\secret", "contains a backslash" },
        { "a\nb", "contains a control character" },
        { string.rep("a/", 2100), "is 4200 bytes long %(the limit is 4095%)" },
        { string.rep("a", 256), "has a component of 256 bytes %(the limit is 255%)" },
      }

      it("refuses every way out of the root, naming the path and the reason", function()
        assert.is_true(#escapes >= 15)
        for _, case in ipairs(escapes) do
          local path = case[1]
          local want = case[2]:gsub("ROOT", (plain(root):gsub("%%", "%%%%")))
          local data, err = mcp.fs.read(root, path)
          assert.is_nil(data, path)
          assert.is_string(err)
          assert.matches("^fs%.read: \".*\": ", err)
          assert.matches(want, err)
          assert.is_nil(err:find("the secret", 1, true))
        end
      end)

      it("shows an escaping path in the message as it was given", function()
        local _, err = mcp.fs.read(root, "../../etc/passwd")
        assert.equal('fs.read: "../../etc/passwd": escapes ' .. root, err)
        _, err = mcp.fs.read(root, "a\0b")
        assert.equal('fs.read: "a\\0b": contains a NUL byte', err)
        _, err = mcp.fs.read(root, string.rep("x", 5000))
        assert.is_true(#err < 400)
      end)

      it("refuses the same paths for write, stat, list and remove", function()
        for _, path in ipairs({ "../x", "/etc/x", "etc/x", "out/x", "l1/x", "..%2fx", "a\0b",
                                "magic/x" }) do
          assert.is_nil((mcp.fs.write(root, path, "pwned")), path)
          assert.is_nil((mcp.fs.write(root, path, "pwned", { mkdir = true })), path)
          assert.is_nil((mcp.fs.stat(root, path .. "/y")), path)
          assert.is_nil((mcp.fs.list(root, path)), path)
          assert.is_nil((mcp.fs.remove(root, path)), path)
        end
        assert.equal("the secret", read(outside))
        assert.is_false(exists(tmp .. "/x"))
        assert.is_false(exists("/etc/x"))
      end)

      it("writes nothing through a symlinked directory, even with mkdir", function()
        local ok, err = mcp.fs.write(root, "etc/mcp-evil/conf", "x", { mkdir = true })
        assert.is_nil(ok)
        assert.matches("symlink", err)
        assert.is_false(exists("/etc/mcp-evil"))
        ok = mcp.fs.write(root, "out", "overwritten?")
        -- replacing the symlink itself is a write inside the root; its target is untouched
        if ok then
          assert.equal("overwritten?", read(root .. "/out"))
        end
        assert.equal("the secret", read(outside))
      end)

      it("refuses a FIFO at once instead of waiting for a writer", function()
        local data, err = mcp.fs.read(root, "fifo")
        assert.is_nil(data)
        assert.matches('"fifo": is not a regular file', err)
      end)

      it("reads and writes nested paths", function()
        assert.equal("nested\n", mcp.fs.read(root, "sub/deeper/file"))
        assert.equal("nested\n", mcp.fs.read(root, "./sub//deeper/file"))
        assert.is_true(mcp.fs.write(root, "sub/deeper/new", "fresh"))
        assert.equal("fresh", read(root .. "/sub/deeper/new"))
        assert.is_true(mcp.fs.write(root, "a/b/c/d.txt", "made", { mkdir = true }))
        assert.equal("made", mcp.fs.read(root, "a/b/c/d.txt"))
        local ok, err = mcp.fs.write(root, "missing/x", "data")
        assert.is_nil(ok)
        assert.equal('fs.write: "missing/x": no such file or directory', err)
      end)

      it("writes atomically and leaves no temporary file", function()
        assert.is_true(mcp.fs.write(root, "sub/conf", "one"))
        assert.is_true(mcp.fs.write(root, "sub/conf", string.rep("two", 10000)))
        assert.equal(string.rep("two", 10000), read(root .. "/sub/conf"))
        local names = {}
        for _, e in ipairs(mcp.fs.list(root, "sub")) do
          names[#names + 1] = e.name
        end
        assert.same({ "conf", "deeper" }, names)
        -- a failed write (the name is a directory) leaves nothing behind either
        local ok, err = mcp.fs.write(root, "sub/deeper", "x")
        assert.is_nil(ok)
        assert.matches('"sub/deeper": is a directory', err)
        assert.equal("", sys.sh("ls -A " .. root .. "/sub | grep -v '^conf$' | grep -v '^deeper$'"))
      end)

      it("sets the mode asked for, whatever the umask", function()
        assert.is_true(mcp.fs.write(root, "private", "k", { mode = "0600" }))
        assert.equal(tonumber("600", 8), mcp.fs.stat(root, "private").mode)
        assert.is_true(mcp.fs.write(root, "shared", "k", { mode = tonumber("664", 8) }))
        assert.equal("664", sys.sh("stat -c %a " .. root .. "/shared"))
        assert.equal(tonumber("644", 8), (mcp.fs.write(root, "dflt", "k") and
                                          mcp.fs.stat(root, "dflt").mode))
      end)

      it("caps what it reads", function()
        write(root .. "/big", string.rep("x", 5000))
        local data, err = mcp.fs.read(root, "big", { max = 4096 })
        assert.is_nil(data)
        assert.equal('fs.read: "big": is 5000 bytes, over the limit of 4096', err)
        assert.equal(5000, #mcp.fs.read(root, "big", { max = "5000B" }))
      end)

      it("stats an entry without following a symlink", function()
        local st = assert(mcp.fs.stat(root, "sub/deeper/file"))
        assert.equal("file", st.type)
        assert.equal(7, st.size)
        assert.is_number(st.mtime)
        assert.equal("dir", mcp.fs.stat(root, "sub").type)
        assert.equal("dir", mcp.fs.stat(root, "").type)
        assert.equal("link", mcp.fs.stat(root, "etc").type)
        local none, err = mcp.fs.stat(root, "nope")
        assert.is_nil(none)
        assert.equal('fs.stat: "nope": no such file or directory', err)
      end)

      it("lists a directory sorted, with types, symlinks not followed", function()
        local list = assert(mcp.fs.list(root, ""))
        local seen = {}
        for i, e in ipairs(list) do
          seen[i] = e.name .. ":" .. e.type
        end
        assert.same({ "etc:link", "fifo:other", "inside:link", "l1:link", "l2:link", "l3:link",
                      "magic:link", "out:link", "sub:dir", "top:file" }, seen)
        local _, err = mcp.fs.list(root, "top")
        assert.matches('"top": not a directory', err)
      end)

      it("removes files, symlinks (not their targets) and empty directories", function()
        assert.is_true(mcp.fs.remove(root, "top"))
        assert.is_false(exists(root .. "/top"))
        assert.is_true(mcp.fs.remove(root, "l3"))
        assert.is_true(exists("/etc/passwd"))
        local ok, err = mcp.fs.remove(root, "sub")
        assert.is_nil(ok)
        assert.matches('"sub": directory not empty', err)
        assert.is_true(mcp.fs.remove(root, "sub/deeper/file"))
        assert.is_true(mcp.fs.remove(root, "sub/deeper"))
        ok, err = mcp.fs.remove(root, "gone")
        assert.is_nil(ok)
        assert.matches("no such file", err)
        assert.is_true(mcp.fs.remove(root, "gone", { missing_ok = true }))
        assert.is_true(mcp.fs.remove(root, "no/such/dir/x", { missing_ok = true }))
        assert.is_nil((mcp.fs.remove(root, "")))
      end)

      it("holds no descriptor after a call, refused or not", function()
        local function fds()
          return #mcp.fs.listdir("/proc/self/fd")
        end
        local before = fds()
        for _ = 1, 300 do
          mcp.fs.read(root, "etc/passwd")
          mcp.fs.read(root, "nope")
          mcp.fs.write(root, "out/x", "x")
          mcp.fs.list(root, "top")
          mcp.fs.stat(root, "l1/x")
          mcp.fs.remove(root, "sub")
          mcp.fs.read(root, "top")
        end
        assert.equal(before, fds())
      end)

      it("answers an error naming the root when the root is missing", function()
        local data, err = mcp.fs.read(tmp .. "/nothere", "x")
        assert.is_nil(data)
        assert.equal('fs.read: root "' .. tmp .. '/nothere": no such file or directory', err)
      end)
    end)
  end

  if resolvers[1] == "openat2" then
    it("follows a symlink that stays inside the root (openat2)", function()
      mcp.fs.resolver("openat2")
      assert.equal("nested\n", mcp.fs.read(root, "inside/deeper/file"))
    end)
  end

  it("refuses every symlink under the root without openat2", function()
    mcp.fs.resolver("openat")
    local data, err = mcp.fs.read(root, "inside/deeper/file")
    assert.is_nil(data)
    assert.equal('fs.read: "inside/deeper/file": "inside" is a symlink, refused under ' .. root
                 .. " (this kernel has no openat2, so symlinks under a root are not followed)",
                 err)
  end)

  it("refuses unknown options and bad modes as programming errors", function()
    assert.has_error(function() mcp.fs.read(root, "top", { maxx = 1 }) end,
                     'mcp.fs.read: unknown option "maxx" (expected one of: max)')
    assert.has_error(function() mcp.fs.write(root, "x", "d", { mode = "rw" }) end)
    assert.has_error(function() mcp.fs.read(root) end)
    assert.has_error(function() mcp.fs.resolver("chroot") end)
  end)

  describe("the agent's own files", function()
    it("reads and writes a file by its path, atomically", function()
      local path = tmp .. "/conf/nginx/site.conf"
      local ok, err = mcp.fs.write_file(path, "server {}")
      assert.is_nil(ok)
      assert.matches("no such file", err)
      assert.is_true(mcp.fs.write_file(path, "server {}", { mkdir = true, mode = "0640" }))
      assert.equal("server {}", mcp.fs.read_file(path))
      assert.equal("640", sys.sh("stat -c %a " .. path))
      assert.is_true(mcp.fs.write_file(path, "server { listen 80; }"))
      assert.equal("server { listen 80; }", read(path))
      assert.same({ "site.conf" }, mcp.fs.listdir(tmp .. "/conf/nginx"))
    end)

    it("answers nil and an error naming the path", function()
      local data, err = mcp.fs.read_file(tmp .. "/none")
      assert.is_nil(data)
      assert.equal('fs.read_file: "' .. tmp .. '/none": no such file or directory', err)
      data, err = mcp.fs.read_file(root .. "/sub")
      assert.matches("is a directory", err)
      data, err = mcp.fs.read_file(outside, { max = 3 })
      assert.matches("over the limit of 3", err)
      assert.is_nil((mcp.fs.listdir(tmp .. "/none")))
      assert.is_nil((mcp.fs.mtime(tmp .. "/none")))
    end)

    it("lists a directory's names sorted", function()
      assert.same({ "etc", "fifo", "inside", "l1", "l2", "l3", "magic", "out", "sub", "top" },
                  mcp.fs.listdir(root))
    end)

    it("tells a file's modification time", function()
      os.execute("touch -d '2024-01-02 03:04:05.5 UTC' " .. root .. "/top")
      assert.equal(1704164645.5, mcp.fs.mtime(root .. "/top"))
    end)

    it("makes directories with their parents, and accepts one that exists", function()
      assert.is_true(mcp.fs.mkdir(tmp .. "/m/n/o", "0700"))
      assert.equal("700", sys.sh("stat -c %a " .. tmp .. "/m/n/o"))
      assert.is_true(mcp.fs.mkdir(tmp .. "/m/n/o"))
      local ok, err = mcp.fs.mkdir(root .. "/top/x")
      assert.is_nil(ok)
      assert.matches("not a directory", err)
    end)
  end)
end)
