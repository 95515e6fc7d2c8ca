-- bench/memory/memory.lua: resident memory of the agent and of Podman's
-- API service, sampled from /proc in the same moment. Used by
-- bench/deploy/bench.lua at the points where the node is idle (0 services,
-- 100 services, after the API load).
local memory = {}

-- VmRSS of pid in KiB, or nil when the process is gone.
function memory.rss_kib(pid)
  local f = io.open("/proc/" .. tostring(pid) .. "/status")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return tonumber(text:match("VmRSS:%s*(%d+)"))
end

-- The command name of pid (/proc/PID/comm), to check what is measured.
function memory.comm(pid)
  local f = io.open("/proc/" .. tostring(pid) .. "/comm")
  if not f then return nil end
  local s = f:read("*l")
  f:close()
  return s
end

-- samples times, interval seconds apart: { name = { KiB, ... } } for every
-- name = pid of pids. sleep(seconds) is the caller's.
function memory.sample(pids, samples, interval, sleep)
  local out = {}
  for name in pairs(pids) do out[name] = {} end
  for i = 1, samples do
    for name, pid in pairs(pids) do
      out[name][i] = assert(memory.rss_kib(pid), name .. " (pid " .. pid .. ") is gone")
    end
    if i < samples then sleep(interval) end
  end
  return out
end

return memory
