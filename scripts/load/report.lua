-- wrk: one report of BATCH events per request (default 1,000), each event with a new id.
local thread_index = 0
function setup(thread)
  thread_index = thread_index + 1
  thread:set("prefix", "t" .. thread_index .. "-" .. os.time())
end
local counter = 0
local batch = tonumber(os.getenv("BATCH") or "1000")
function request()
  local events = {}
  for i = 1, batch do
    counter = counter + 1
    events[i] = '{"account":"load' .. (counter % 1000) .. '","id":"' .. prefix .. '-' .. counter .. '","api":"image-tagging.general"}'
  end
  return wrk.format("POST", "/v1/usage/report", {["Authorization"] = "Bearer " .. os.getenv("TALLY_KEY"), ["Content-Type"] = "application/json"},
                    '{"events":[' .. table.concat(events, ",") .. ']}')
end
