-- post.lua: 100-byte text/plain POSTs to the one stream named on wrk's command line.
-- Env: BENCH_BODY_BYTES (default 100).
dofile(os.getenv("BENCH_D") .. "/report.lua")
local n = tonumber(os.getenv("BENCH_BODY_BYTES") or "100")
wrk.method = "POST"
wrk.headers["Content-Type"] = "text/plain"
wrk.body = string.rep("x", n - 1) .. "\n"
