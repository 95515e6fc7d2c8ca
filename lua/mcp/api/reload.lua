-- mcp.api.reload: the families of /metrics about hot reload that say what
-- failed: one sample per file and line of the last failed reload's errors.
-- What they read lives in mcp.state (mcp.reload keeps it), so it outlives
-- the reload of this very module.
local mcp = require("mcp.core")
local api = require("mcp.api")

local reload_api = {}

-- "file:line: message" -> file, line; a definition's field error
-- ("file: components[1].image: ...") has no line: "". Not a file: "", "".
function reload_api.error_position(msg)
  local first = tostring(msg):match("^[^\n]*")
  local file, line = first:match("^([^:]+%.%a+):(%d+):")
  if file then return file, line end
  file = first:match("^([^:]+%.%a+):") or first:match("^(/[^:]+):")
  return file or "", ""
end

function reload_api.families()
  local gen = mcp.state.gen
  local failed = mcp.state.reload_error
  -- mcp_reloads_total, mcp_reload_generation, mcp_reload_failed and
  -- mcp_reload_duration_seconds come from mcp.api.agent_metrics (out of
  -- mcp.state.metrics, which mcp.reload keeps); these complete them.
  local fams = {
    { name = "mcp_reload_files", type = "gauge",
      help = "Files of the running generation: library modules, policies, definitions.",
      samples = { { value = gen and gen.files or 0 } } },
    { name = "mcp_reload_last_success_timestamp_seconds", type = "gauge",
      help = "When the running generation was built (Unix time).",
      samples = { { value = gen and gen.at or 0 } } },
  }
  -- One sample per error of the last failed reload (at most 20), so that an
  -- alert can say which file and line.
  local errs = { name = "mcp_reload_error", type = "gauge",
    help = "The errors of the last failed reload: 1 per file and line; none when the last "
      .. "reload succeeded.", samples = {} }
  if failed then
    local seen = {}
    for _, e in ipairs(failed.errors or { failed.message }) do
      if #errs.samples >= 20 then break end
      local file, line = reload_api.error_position(e)
      local message = tostring(e):match("^[^\n]*"):sub(1, 200)
      local key = file .. "\0" .. line .. "\0" .. message
      if not seen[key] then
        seen[key] = true
        errs.samples[#errs.samples + 1] = { labels = { file = file, line = line,
          message = message }, value = 1 }
      end
    end
  end
  fams[#fams + 1] = errs
  return fams
end

api.metrics_provider("reload", reload_api.families)

return reload_api
