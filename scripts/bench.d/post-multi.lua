-- post-multi.lua: 100-byte text/plain POSTs spread over many streams.  Each wrk thread owns an
-- equal share of the streams BENCH_PREFIX0 .. BENCH_PREFIX<N-1> and sends its requests to them
-- in turn, so with one connection per stream every stream sees about one writer at a time.
-- Env: BENCH_PREFIX (URL path prefix, e.g. /v1/stream/bench-b-), BENCH_STREAMS (64),
-- BENCH_THREADS (wrk -t, 2), BENCH_BODY_BYTES (100).
dofile(os.getenv("BENCH_D") .. "/report.lua")
local prefix = os.getenv("BENCH_PREFIX")
local nstreams = tonumber(os.getenv("BENCH_STREAMS") or "64")
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "2")
local n = tonumber(os.getenv("BENCH_BODY_BYTES") or "100")
local body = string.rep("x", n - 1) .. "\n"
local headers = { ["Content-Type"] = "text/plain" }

local next_id = 0
function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
end

local first, count, i
function init(args)
   count = math.floor(nstreams / nthreads)
   first = id * count
   if id == nthreads - 1 then count = nstreams - first end
   i = 0
end

function request()
   i = (i + 1) % count
   return wrk.format("POST", prefix .. (first + i), headers, body)
end
