-- mix.lua - the soak's mixed load for wrk: per thread, out of every 100 requests,
-- SOAK_LOGIN_PCT are POST /token?grant_type=password (users of SOAK_USERS), SOAK_REFRESH_PCT
-- POST /token?grant_type=refresh_token (each with a refresh token never used before: the
-- thread keeps the tokens of SOAK_REFRESH, puts back the one each answer carries) and the
-- rest GET /user with an access token of SOAK_ACCESS.
--
-- SOAK_RATE (requests per second, all threads together) paces the load: each thread sends
-- its next request at its next slot of an even schedule, never catching up on slots missed.
-- Without it wrk sends as fast as the server answers (the capacity run).
--
-- done() prints one line "SOAK key=value ..." with the answers by kind and status class and
-- wrk's socket errors, which soak.sh checks.
local ffi = require("ffi")
ffi.cdef [[
  struct soak_timespec { long tv_sec; long tv_nsec; };
  int clock_gettime(int clk_id, struct soak_timespec *tp);
]]
local ts = ffi.new("struct soak_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local counter = 0
local threads = {}
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  threads[#threads + 1] = thread
end

local function json_str(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end

local function lines(path)
  local t = {}
  for line in io.lines(path) do
    if #line > 0 then t[#t + 1] = line end
  end
  return t
end

function init(args)
  local nth = tonumber(os.getenv("SOAK_THREADS")) or 1
  login_pct = tonumber(os.getenv("SOAK_LOGIN_PCT")) or 2
  refresh_pct = tonumber(os.getenv("SOAK_REFRESH_PCT")) or 8
  users = {}
  for _, l in ipairs(lines(os.getenv("SOAK_USERS"))) do
    local email, password = l:match("^([^\t]+)\t(.+)$")
    users[#users + 1] = wrk.format("POST", "/token?grant_type=password",
      { ["Content-Type"] = "application/json" },
      '{"email":' .. json_str(email) .. ',"password":' .. json_str(password) .. '}')
  end
  gets = {}
  for _, t in ipairs(lines(os.getenv("SOAK_ACCESS"))) do
    gets[#gets + 1] = wrk.format("GET", "/user", { ["Authorization"] = "Bearer " .. t })
  end
  free = {}
  for k, t in ipairs(lines(os.getenv("SOAK_REFRESH"))) do
    if (k - 1) % nth == id then free[#free + 1] = t end
  end
  pool_size = #free
  seq = id * 37
  ui, gi = id, id
  n_get, n_refresh, n_login = 0, 0, 0
  ok, s4xx, s5xx, other = 0, 0, 0, 0
  starved = 0
  verify_call = (id == 0) -- wrk's check of the first request, never sent
  -- SOAK_COUNT_AFTER seconds: answers before it are left out of "steady" (the capacity run's
  -- first seconds are faster than its steady state: every connection serves token checks
  -- until it first waits behind a queued login).
  count_from = now_ms() + (tonumber(os.getenv("SOAK_COUNT_AFTER")) or 0) * 1000
  steady = 0
  local rate = tonumber(os.getenv("SOAK_RATE"))
  if rate and rate > 0 then
    interval = nth * 1000 / rate
    next_slot = now_ms()
  else
    delay = nil -- no pacing: wrk does not call delay() at all
  end
end

function delay()
  local t = now_ms()
  if next_slot < t then next_slot = t end
  next_slot = next_slot + interval
  return math.floor(next_slot - t)
end

local function refresh_request()
  local token = table.remove(free)
  if not token then
    starved = starved + 1
    return nil
  end
  return wrk.format("POST", "/token?grant_type=refresh_token",
    { ["Content-Type"] = "application/json" }, '{"refresh_token":"' .. token .. '"}')
end

function request()
  if verify_call then
    verify_call = false
    return gets[1]
  end
  seq = seq + 1
  local slot = seq % 100
  if slot < login_pct then
    n_login = n_login + 1
    ui = ui % #users + 1
    return users[ui]
  elseif slot < login_pct + refresh_pct then
    local r = refresh_request()
    if r then
      n_refresh = n_refresh + 1
      return r
    end
  end
  n_get = n_get + 1
  gi = gi % #gets + 1
  return gets[gi]
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
    if now_ms() >= count_from then steady = steady + 1 end
    -- A refresh's answer carries the next refresh token of its session; a login's carries the
    -- first of a new session, kept only while the thread has fewer than it started with.
    local token = body:match('"refresh_token":"([^"]+)"')
    if token and #free < pool_size then free[#free + 1] = token end
  elseif status >= 500 then
    s5xx = s5xx + 1
  elseif status >= 400 then
    s4xx = s4xx + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local t = { ok = 0, s4xx = 0, s5xx = 0, other = 0, n_get = 0, n_refresh = 0, n_login = 0,
              starved = 0, steady = 0 }
  for _, th in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + th:get(k) end
  end
  local e = summary.errors
  io.write(string.format(
    "SOAK requests=%d seconds=%.1f steady_ok=%d ok=%d status_4xx=%d status_5xx=%d status_other=%d " ..
    "get_user=%d refresh=%d login=%d refresh_starved=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_timeout=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
    summary.requests, summary.duration / 1e6, t.steady, t.ok, t.s4xx, t.s5xx, t.other,
    t.n_get, t.n_refresh, t.n_login, t.starved,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
