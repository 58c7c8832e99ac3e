-- wrk: one report of BATCH events per request (default 1,000), each event with a new id.
local thread_index = 0
function setup(thread)
  thread_index = thread_index + 1
  thread:set("prefix", "t" .. thread_index .. "-" .. os.time())
end
local counter = 0
-- The accounts used: load<FROM> ... load<FROM + COUNT - 1> (default all 1,000), so that a mixed run
-- can keep checks and reports on different accounts.
local accounts_from = tonumber(os.getenv("ACCOUNTS_FROM") or "0")
local accounts_count = tonumber(os.getenv("ACCOUNTS_COUNT") or "1000")
local batch = tonumber(os.getenv("BATCH") or "1000")
function request()
  local events = {}
  for i = 1, batch do
    counter = counter + 1
    events[i] = '{"account":"load' .. (accounts_from + counter % accounts_count) .. '","id":"' .. prefix .. '-' .. counter .. '","api":"image-tagging.general"}'
  end
  return wrk.format("POST", "/v1/usage/report", {["Authorization"] = "Bearer " .. os.getenv("TALLY_KEY"), ["Content-Type"] = "application/json"},
                    '{"events":[' .. table.concat(events, ",") .. ']}')
end
