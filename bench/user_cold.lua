-- user_cold.lua - GET /user presenting every token of BENCH_TOKENS exactly once, so that
-- every request misses the server's token cache (the server is started fresh for it).
-- Threads take disjoint slices; when a thread has its last response it writes
-- BENCH_DONE_DIR/done.<id> and stops; run.sh then interrupts wrk (whose own clock runs
-- to -d). wrk's Requests/sec is therefore meaningless here: done() prints the real rate,
-- timed from each thread's first request to its last response.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk, bench_timespec *tp);
]]
local tsbuf = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, tsbuf) -- CLOCK_MONOTONIC
  return tonumber(tsbuf.tv_sec) + tonumber(tsbuf.tv_nsec) * 1e-9
end

local counter = 0
local threads = {}
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  threads[#threads + 1] = thread
end

function init(args)
  local nth = tonumber(os.getenv("BENCH_THREADS")) or 1
  reqs = {}
  local k = 0
  for line in io.lines(os.getenv("BENCH_TOKENS")) do
    if #line > 0 then
      if k % nth == id then
        reqs[#reqs + 1] = wrk.format("GET", "/user", { ["Authorization"] = "Bearer " .. line })
      end
      k = k + 1
    end
  end
  total = #reqs
  sent, got, bad, t0, t1 = 0, 0, 0, 0, 0
  -- wrk calls request() once on thread 0 before the run to check the request; that call
  -- is never sent, so it must not use up a token.
  verify_call = (id == 0)
  donefile = os.getenv("BENCH_DONE_DIR") .. "/done." .. id
  if total == 0 then
    local f = io.open(donefile, "w"); f:write("done\n"); f:close()
  end
end

function request()
  if verify_call then
    verify_call = false
    return reqs[1] or wrk.format("GET", "/health")
  end
  if sent >= total then
    return "" -- nothing left: this connection stays idle
  end
  sent = sent + 1
  if sent == 1 then t0 = now() end
  return reqs[sent]
end

function response(status, headers, body)
  got = got + 1
  if status ~= 200 then bad = bad + 1 end
  if got == total then
    t1 = now()
    local f = io.open(donefile, "w"); f:write("done\n"); f:close()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local n, b, tmin, tmax = 0, 0, nil, nil
  for _, t in ipairs(threads) do
    n = n + t:get("got")
    b = b + t:get("bad")
    local a, z = t:get("t0"), t:get("t1")
    if a > 0 and (not tmin or a < tmin) then tmin = a end
    if z > 0 and (not tmax or z > tmax) then tmax = z end
  end
  local secs = (tmin and tmax and tmax > tmin) and (tmax - tmin) or 0
  io.write(string.format("BENCH cold_requests=%d cold_non200=%d cold_seconds=%.4f cold_rps=%.1f\n",
    n, b, secs, secs > 0 and n / secs or 0))
end
