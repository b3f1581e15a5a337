-- get.lua: catch-up reads (GET) of the URL on wrk's command line (offset in the URL).
dofile(os.getenv("BENCH_D") .. "/report.lua")
wrk.method = "GET"
