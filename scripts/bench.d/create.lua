-- create.lua: PUTs that each create a new text/plain stream, BENCH_PREFIX<thread>-<n>.
-- Env: BENCH_PREFIX (URL path prefix, e.g. /v1/stream/bench-e-1234-).
dofile(os.getenv("BENCH_D") .. "/report.lua")
local prefix = os.getenv("BENCH_PREFIX")
local headers = { ["Content-Type"] = "text/plain" }

local next_id = 0
function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
end

local n = 0
function request()
   n = n + 1
   return wrk.format("PUT", prefix .. id .. "-" .. n, headers)
end
