-- wrk: one check-and-record per request, each with a new event id, spread over 1,000 accounts.
local thread_index = 0
local threads = {}
function setup(thread)
  thread_index = thread_index + 1
  thread:set("prefix", "t" .. thread_index .. "-" .. os.time())
  table.insert(threads, thread)
end
local counter = 0
-- The accounts used: load<FROM> ... load<FROM + COUNT - 1> (default all 1,000), so that a mixed run
-- can keep checks and reports on different accounts.
local accounts_from = tonumber(os.getenv("ACCOUNTS_FROM") or "0")
local accounts_count = tonumber(os.getenv("ACCOUNTS_COUNT") or "1000")
function request()
  counter = counter + 1
  local body = '{"account":"load' .. (accounts_from + counter % accounts_count) .. '","id":"' .. prefix .. '-' .. counter .. '","api":"image-tagging.general"}'
  return wrk.format("POST", "/v1/usage/check", {["Authorization"] = "Bearer " .. os.getenv("TALLY_KEY"), ["Content-Type"] = "application/json"}, body)
end
