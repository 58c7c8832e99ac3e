-- wrk: one check-and-record per request, each with a new event id, spread over 1,000 accounts.
local thread_index = 0
local threads = {}
function setup(thread)
  thread_index = thread_index + 1
  thread:set("prefix", "t" .. thread_index .. "-" .. os.time())
  table.insert(threads, thread)
end
local counter = 0
function request()
  counter = counter + 1
  local body = '{"account":"load' .. (counter % 1000) .. '","id":"' .. prefix .. '-' .. counter .. '","api":"image-tagging.general"}'
  return wrk.format("POST", "/v1/usage/check", {["Authorization"] = "Bearer " .. os.getenv("TALLY_KEY"), ["Content-Type"] = "application/json"}, body)
end
